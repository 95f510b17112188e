"""Tests for the cross-encoder's rating head with ID terms (models/id_rating_head.py) and its
wiring through the cross-encoder task, the trainer and the config checks."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax import config_checks
from crossrec_jax import configs
from crossrec_jax.models import id_rating_head


def _head(**kw):
  args = dict(output="regression", num_users=(2, 3), num_items=(3, 4), biases=True, dim=0,
              dropout=0.0, id_dropout=0.0, rngs=nnx.Rngs(0))
  args.update(kw)
  return id_rating_head.IdRatingHead(6, (8,), **args)


def _batch():
  return {"domain": jnp.array([0, 1, 1]), "user": jnp.array([1, 0, 2]),
          "item": jnp.array([2, 0, 3])}


def _h():
  return jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)), jnp.float32)


def test_untrained_head_is_the_bias_model_with_per_domain_ids():
  head = _head()
  head.set_biases(mu=0.6, domain_offset=np.array([0.0, -0.1]),
                  user_bias=np.arange(5) * 0.01, item_bias=np.arange(7) * 0.02)
  got = np.asarray(head(_h(), _batch(), deterministic=True))
  # Row 0: source user 1, source item 2. Row 2: target user 2 (global 4), target item 3 (6).
  want = [0.6 + 0.01 + 0.04, 0.6 - 0.1 + 0.02 + 0.06, 0.6 - 0.1 + 0.04 + 0.12]
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_evaluation_clips_to_the_scale_training_does_not():
  head = _head()
  head.set_biases(mu=0.9, user_bias=np.full(5, 0.3))
  assert float(head(_h(), _batch(), deterministic=True).max()) == 1.0
  assert float(head(_h(), _batch(), deterministic=False).min()) == pytest.approx(1.2)


def test_id_dropout_drops_bias_and_embedding_together_in_training_only():
  head = _head(dim=4, id_dropout=1.0 - 1e-6)  # training drops every ID
  head.set_biases(user_bias=np.full(5, 0.2), item_bias=np.full(7, 0.1))
  head.mlp.out.kernel[...] = jnp.ones_like(head.mlp.out.kernel[...])  # the text path counts
  h = _h()
  evaluated = np.asarray(head(h, _batch(), deterministic=True))
  trained = np.asarray(head(h, _batch(), deterministic=False))
  # Without IDs the prediction is mu + MLP([h, 0, 0]): recompute it from the MLP alone.
  x = jnp.concatenate([h, jnp.zeros((3, 8))], -1)
  text_only = 0.5 + np.asarray(head.mlp(x, deterministic=True)[..., 0])
  np.testing.assert_allclose(trained, text_only, rtol=1e-5)
  assert not np.allclose(evaluated, np.clip(text_only, 0, 1))


def test_missing_ids_in_the_batch_is_a_clear_error():
  with pytest.raises(KeyError, match="batch\\['user'\\]"):
    _head()(_h(), {"item": jnp.zeros(3, jnp.int32), "domain": jnp.zeros(3, jnp.int32)})


def test_config_checks_guard_the_id_keys():
  config = configs.load("target_only:tiny")
  config.model.rating_head.init_id_biases = True
  with pytest.raises(config_checks.ConfigError, match="needs model.rating_head.id_biases"):
    config_checks.check_config(config)
  config.model.rating_head.update(dict(id_biases=True, output="logit"))
  with pytest.raises(config_checks.ConfigError, match="output = 'regression'"):
    config_checks.check_config(config)
  hybrid = configs.load("hybrid_target_only:tiny")
  hybrid.model.rating_head.id_biases = True
  with pytest.raises(config_checks.ConfigError, match="does not read them.*model.hybrid"):
    config_checks.check_config(hybrid)
  config = configs.load("target_only:tiny")
  config.model.rating_head.id_dim = -1
  with pytest.raises(config_checks.ConfigError, match="id_dim"):
    config_checks.check_config(config)


def test_building_without_counts_names_the_task():
  from crossrec_jax.models import recommender
  config = configs.load("target_only:tiny")
  config.model.rating_head.id_biases = True
  with pytest.raises(ValueError, match="through its task"):
    recommender.build_recommender(config.model, rngs=nnx.Rngs(0))


def _id_config(method="target_only"):
  config = configs.load(f"{method}:tiny")
  config.model.rating_head.update(dict(id_biases=True, id_dim=4, id_dropout=0.1,
                                       init_id_biases=True))
  config.train.update(dict(tensorboard=False, progress_bar=False))
  return config


@pytest.mark.slow
def test_ridge_start_scores_what_the_bias_model_scores_on_valid(tmp_path):
  """The untrained model's target-valid RMSE (`train.eval_at_start`) is the bias model's: its
  ridge fit on the target's labelled training rows, scored on the same valid rows."""
  from crossrec_jax import tasks
  from crossrec_jax.objectives import bias_ridge
  from crossrec_jax.train import trainer
  config = _id_config()
  config.train.update(dict(eval_at_start=True, final_eval=()))
  task = tasks.make_task(config)
  trainer.train_and_evaluate(config, str(tmp_path), data=task.data)
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  start = [l for l in lines if l.get("split") == "target_valid" and l["global_step"] == 0]
  assert start, lines[:3]
  pair = task.data.pair
  mu, b_u, b_i = bias_ridge.fit_biases(*task._labelled("target_train"),  # pylint: disable=protected-access
                                       pair.target.interactions.num_users, len(pair.target.items))
  valid = task.data.sources["target_valid"]
  user, item = np.asarray(valid["user"]), np.asarray(valid["item"])
  pred = pair.target.scale.denormalise(np.clip(mu + b_u[user] + b_i[item], 0.0, 1.0))
  true = np.asarray(valid["rating"])  # the domain's own scale
  want = float(np.sqrt(np.mean((pred - true) ** 2)))
  assert start[0]["rmse"] == pytest.approx(want, rel=1e-4)


@pytest.mark.slow
def test_tiny_joint_run_trains_resumes_and_restores_through_the_task(tmp_path):
  from crossrec_jax.study import finished
  from crossrec_jax.train import trainer
  config = _id_config("joint_dann")
  final = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(final["target_test"]["rmse"]) and final["target_test"]["n"] > 0
  again = trainer.train_and_evaluate(config, str(tmp_path))  # finished: resumes, same result
  assert again["target_test"]["rmse"] == pytest.approx(final["target_test"]["rmse"])
  _, params = finished.restore_final(config, tmp_path)  # built through the task: ID tables
  import jax
  names = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  assert any("user_bias" in n for n in names) and any("user_embedding" in n for n in names)


def test_integrated_gradients_read_the_id_terms_and_stay_complete():
  """Explanations over a cross-encoder with ID terms: IG's f(x) is the model's own rating (the
  ID biases included) and the attributions still sum to f(x) - f(baseline)."""
  from crossrec_jax import explain
  from crossrec_jax.models import recommender
  config = configs.load("target_only:tiny")
  config.model.rating_head.update(dict(id_biases=True, id_dim=4))
  model = recommender.build_cross_encoder(config.model, rngs=nnx.Rngs(0), num_users=(2, 3),
                                          num_items=(3, 4))
  model.rating_head.set_biases(user_bias=np.linspace(-0.2, 0.2, 5),
                               item_bias=np.linspace(0.1, -0.1, 7))
  model.rating_head.mlp.out.kernel[...] = 0.3 * jnp.ones_like(model.rating_head.mlp.out.kernel[...])
  rng = np.random.default_rng(0)
  ids = rng.integers(1000, 2000, size=(3, 12)).astype(np.int32)
  ids[:, 0], ids[:, -1] = 101, 102
  batch = {"input_ids": ids, "attention_mask": np.ones_like(ids),
           "token_type_ids": np.zeros_like(ids), **{k: np.asarray(v) for k, v in _batch().items()}}
  got = explain.IntegratedGradients(model, steps=16, baseline_id=0, keep_ids=(101, 102))(batch)
  want = np.asarray(model({k: jnp.asarray(v) for k, v in batch.items()},
                          deterministic=True)["rating"])
  np.testing.assert_allclose(got["score"], want, atol=1e-6)
  assert got["complete"].all(), got["gap"]
