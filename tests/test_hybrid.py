"""Tests for the hybrid text + ID rating model (models/hybrid.py, tasks/hybrid.py) and its study."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax import configs
from crossrec_jax.models import hybrid


def _model(**kw):
  rng = np.random.default_rng(0)
  text = hybrid.standardise(rng.normal(size=(7, 6)))  # 3 source items + 4 target items
  args = dict(num_users=(2, 3), num_items=(3, 4), dim=4, hidden=8, dropout=0.0, id_dropout=0.5,
              rngs=nnx.Rngs(0))
  args.update(kw)
  return hybrid.HybridRatingModel(text, **args), text


def _batch():
  return {"domain": jnp.array([0, 1, 1]), "user": jnp.array([1, 0, 2]),
          "item": jnp.array([2, 0, 3]),
          "history_item": jnp.array([[-1, 0, 1], [-1, -1, -1], [1, 2, 3]]),
          "history_rating": jnp.array([[-1, 1.0, -1], [-1, -1, -1], [0.25, -1, 0.75]])}


def test_history_summary_matches_numpy():
  rng = np.random.default_rng(1)
  text = rng.normal(size=(5, 3)).astype(np.float32)
  items = np.array([[-1, 0, 4], [2, 2, 1]])
  ratings = np.array([[-1, 0.75, -1], [0.0, 1.0, -1]], np.float32)
  got = np.asarray(hybrid.history_summary(jnp.asarray(text), jnp.asarray(items),
                                          jnp.asarray(ratings)))
  for b in range(2):
    present = items[b] >= 0
    shown = present & (ratings[b] >= 0)
    dev = (ratings[b] - 0.5) * shown
    mean_all = text[items[b][present]].mean(0)
    mean_rated = (dev[:, None] * text[np.maximum(items[b], 0)]).sum(0) / max(shown.sum(), 1)
    want = np.concatenate([mean_all, mean_rated, [dev.sum() / (shown.sum() + hybrid.SHRINK)],
                           [np.log1p(shown.sum())], [np.log1p(present.sum())]])
    np.testing.assert_allclose(got[b], want, rtol=1e-5, atol=1e-6)


def test_ids_are_per_domain_and_dropped_only_in_training():
  model, _ = _model()
  ids = model.rating_head
  ids.user_bias[...] = jnp.arange(5, dtype=jnp.float32) * 0.1  # source users 0-1, target 2-4
  ids.item_bias[...] = jnp.zeros(7).at[3 + 3].set(0.3)  # target item 3
  batch = _batch()
  base = model(batch, deterministic=True)["rating"]
  again = model(batch, deterministic=True)["rating"]
  np.testing.assert_array_equal(base, again)  # evaluation never drops
  # Row 2 is target user 2 (global 4) and target item 3 (global 6): its biases are 0.4 + 0.3.
  ids.user_bias[...] = jnp.zeros(5)
  ids.item_bias[...] = jnp.zeros(7)
  no_ids = model(batch, deterministic=True)["rating"]
  assert float(base[2] - no_ids[2]) == pytest.approx(0.7, abs=1e-5) or float(base[2]) == 1.0
  assert float(base[0] - no_ids[0]) == pytest.approx(0.1, abs=1e-5)  # source user 1
  # Training drops IDs: some of many draws differ from the deterministic prediction.
  ids.user_bias[...] = jnp.full(5, 0.2)
  train = np.stack([np.asarray(model(batch, deterministic=False)["rating"]) for _ in range(20)])
  assert len(np.unique(np.round(train[:, 0], 5))) > 1


def test_id_only_ablation_ignores_text_and_features_are_text_only():
  model, _ = _model(text_features=False, id_embeddings=False, id_dropout=0.0)
  out = model(_batch(), deterministic=True)
  np.testing.assert_allclose(out["rating"], 0.5, atol=1e-6)  # mu only: no text, zero biases
  full, _ = _model(id_dropout=0.0)
  out = full(_batch(), deterministic=True)
  assert out["features"].shape == (3, 8)
  full.rating_head.user_embedding[...] = full.rating_head.user_embedding[...] + 5.0
  np.testing.assert_allclose(full(_batch(), deterministic=True)["features"], out["features"])


def test_text_vector_count_must_match_the_catalogues():
  with pytest.raises(ValueError, match="7 text vectors for 8 items"):
    _model(num_items=(4, 4))


def test_config_needs_the_id_history():
  from crossrec_jax import tasks
  config = configs.load("hybrid_target_only:tiny")
  assert config.model.kind == "hybrid" and config.data.id_history_len > 0
  config.data.id_history_len = 0
  with pytest.raises(ValueError, match="data.id_history_len > 0"):
    tasks.make_task(config)


def test_every_method_has_a_hybrid_config():
  from crossrec_jax.configs import methods
  for m in methods.METHODS:
    c = configs.load(f"hybrid_{m}:cpu")
    assert c.method == m and c.model.kind == "hybrid"
  assert set(config_base.HYBRID_STEPS) == set(config_base.PRESETS)


@pytest.mark.slow
def test_tiny_run_trains_and_resumes_through_the_trainer(tmp_path):
  from crossrec_jax.train import trainer
  config = configs.load("hybrid_joint_dann:tiny")
  config.train.tensorboard = False
  final = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(final["target_test"]["rmse"]) and final["target_test"]["n"] > 0
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert any("loss_domain" in l for l in lines)  # the DANN phase ran on the hybrid features
  again = trainer.train_and_evaluate(config, str(tmp_path))  # finished: resumes, same result
  assert again["target_test"]["rmse"] == pytest.approx(final["target_test"]["rmse"])


def test_text_neighbours_are_the_most_similar_source_items_never_the_item_itself():
  rng = np.random.default_rng(3)
  vecs = rng.normal(size=(9, 5)).astype(np.float32)
  vecs[7] = 2.0 * vecs[1]  # target item 7 (of 5 source items) has source item 1's direction
  index, sims = hybrid.text_neighbours(vecs, num_source=5, k=3, chunk=4)
  unit = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
  for i in range(9):
    cos = unit[i] @ unit[:5].T
    if i < 5:
      cos[i] = -np.inf
    want = np.argsort(-cos, kind="stable")[:3]
    np.testing.assert_array_equal(index[i], want)
    np.testing.assert_allclose(sims[i], cos[want], rtol=1e-5)
    assert i >= 5 or i not in index[i]
  assert index[7, 0] == 1 and sims[7, 0] == pytest.approx(1.0)


def test_user_offset_is_the_shrunk_mean_residual_of_shown_ratings():
  ratings = jnp.array([[0.75, -1.0, 1.0], [-1.0, -1.0, -1.0]])
  expected = jnp.full((2, 3), 0.5)
  got = np.asarray(hybrid.user_offset(ratings, expected))
  assert got[0] == pytest.approx((0.25 + 0.5) / (2 + hybrid.SHRINK))
  assert got[1] == 0.0


def test_neighbour_prior_lends_a_source_bias_to_a_target_item():
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(7, 6)).astype(np.float32)
  raw[3 + 0] = raw[2]  # target item 0 has the text of source item 2
  nb = hybrid.text_neighbours(raw, 3, 2)
  model = hybrid.HybridRatingModel(hybrid.standardise(raw), num_users=(2, 3), num_items=(3, 4),
                                   dim=4, hidden=8, dropout=0.0, id_dropout=0.0, neighbours=nb,
                                   neighbour_scale=200.0, rngs=nnx.Rngs(0))
  batch = {"domain": jnp.array([1]), "user": jnp.array([0]), "item": jnp.array([0]),
           "history_item": jnp.array([[-1, -1, -1]]), "history_rating": jnp.array([[-1.0] * 3])}
  before = float(model(batch, deterministic=True)["rating"][0])
  model.rating_head.item_bias[...] = model.rating_head.item_bias[...].at[2].set(0.2)
  after = float(model(batch, deterministic=True)["rating"][0])
  assert after - before == pytest.approx(0.2, abs=1e-3)  # the exact-text source item's bias


def test_source_item_prior_is_each_items_shrunk_mean_offset():
  item = np.array([0, 0, 1, 3])
  label = np.array([1.0, 0.5, 0.0, 0.5])  # mean 0.5
  got = hybrid.source_item_prior(item, label, num_items=5, shrink=2.0)
  np.testing.assert_allclose(got, [(0.5 + 0.0) / (2 + 2), -0.5 / (1 + 2), 0.0, 0.0, 0.0])
  with pytest.raises(ValueError, match="as many items as labels"):
    hybrid.source_item_prior(item, label[:3], num_items=5, shrink=2.0)


def test_with_a_source_prior_the_neighbours_lend_it_not_their_learnt_bias():
  rng = np.random.default_rng(0)
  raw = rng.normal(size=(7, 6)).astype(np.float32)
  raw[3 + 0] = raw[2]  # target item 0 has the text of source item 2
  nb = hybrid.text_neighbours(raw, 3, 2)
  lent = np.array([0.0, 0.0, 0.3], np.float32)
  model = hybrid.HybridRatingModel(hybrid.standardise(raw), num_users=(2, 3), num_items=(3, 4),
                                   dim=4, hidden=8, dropout=0.0, id_dropout=0.0, neighbours=nb,
                                   source_prior=lent, neighbour_scale=200.0, rngs=nnx.Rngs(0))
  batch = {"domain": jnp.array([1]), "user": jnp.array([0]), "item": jnp.array([0]),
           "history_item": jnp.array([[-1, -1, -1]]), "history_rating": jnp.array([[-1.0] * 3])}
  with_prior = float(model(batch, deterministic=True)["rating"][0])
  model.rating_head.item_bias[...] = model.rating_head.item_bias[...].at[2].set(0.2)
  assert float(model(batch, deterministic=True)["rating"][0]) == pytest.approx(with_prior)
  model.source_prior[...] = jnp.zeros(3)
  assert with_prior - float(model(batch, deterministic=True)["rating"][0]) == pytest.approx(
      0.3, abs=1e-3)
  with pytest.raises(ValueError, match="one value per source item"):
    hybrid.HybridRatingModel(hybrid.standardise(raw), num_users=(2, 3), num_items=(3, 4),
                             dim=4, hidden=8, neighbours=nb, source_prior=lent[:2],
                             rngs=nnx.Rngs(0))


@pytest.mark.slow
@pytest.mark.parametrize("method", ["joint", "target_only"])
def test_the_source_mean_prior_reads_the_source_ratings_only(method):
  from crossrec_jax import tasks
  config = configs.load(f"hybrid_{method}:tiny")
  config.model.hybrid.update(dict(init_biases=True, neighbour_prior="source_mean"))
  task = tasks.make_task(config)
  pair = task.data.pair
  got = task.source_prior()
  if method == "target_only":  # no phase reads source labels: nothing to lend
    np.testing.assert_array_equal(got, np.zeros(len(pair.source.items)))
  else:
    inter = pair.source.interactions
    want = hybrid.source_item_prior(inter.item, pair.source.scale.normalise(inter.rating),
                                    len(pair.source.items), config.model.hybrid.source_prior_shrink)
    np.testing.assert_allclose(got, want)
    assert np.abs(got).max() > 0
  model = task.build_model(nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(model.source_prior[...]), got)
  init = task.initial_biases(task.neighbours())
  if method == "joint":  # a target item without a label starts at its neighbours' prior
    n_src = len(pair.source.items)
    unlabelled = np.setdiff1d(np.arange(len(pair.target.items)), task._labelled("target_train")[1])  # pylint: disable=protected-access
    np.testing.assert_allclose(init["item_bias"][n_src + unlabelled], 0.0, atol=1e-12)
  config.model.hybrid.neighbour_prior = "learnt_bias"
  assert tasks.make_task(config).source_prior() is None


@pytest.mark.slow
def test_tiny_hybrid_study_end_to_end(tmp_path):
  """The study runs the hybrid task on the cross-encoder's cells and protocol, cold items too."""
  import csv
  from crossrec_jax.eval import study
  config = study.load_experiment("hybrid_study", "tiny")
  assert config.architecture == "hybrid"
  md = study.run_study(config, tmp_path, log=lambda _: None)
  with open(tmp_path / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  lm = [r for r in rows if r["kind"] == "lm"]
  assert {r["method"] for r in lm} == set(config.methods)
  assert all(float(r["test/rmse"]) > 0 for r in lm)
  assert any(r.get("test/cold_item/rmse") for r in rows)  # some test items have no label
  assert "hybrid model dim" in md and "| test/cold_item/rmse (lower is better)" in md


@pytest.mark.slow
@pytest.mark.parametrize("method", ["joint", "target_only"])
def test_initial_biases_are_the_bias_models_fit_on_the_labels_the_method_uses(method):
  from crossrec_jax import tasks
  from crossrec_jax.objectives import bias_ridge
  config = configs.load(f"hybrid_{method}:tiny")
  config.model.hybrid.init_biases = True
  task = tasks.make_task(config)
  init = task.initial_biases(task.neighbours())
  pair = task.data.pair
  n_src, n_tgt = len(pair.source.items), len(pair.target.items)
  tgt = task._labelled("target_train")  # pylint: disable=protected-access
  if method == "target_only":  # the source's labels are not this method's: no source bias
    mu, _, b_t = bias_ridge.fit_biases(*tgt, pair.target.interactions.num_users, n_tgt)
    assert init["mu"] == pytest.approx(mu) and not init["item_bias"][:n_src].any()
    np.testing.assert_allclose(init["item_bias"][n_src:], b_t, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(init["domain_offset"], [0.0, 0.0])
  else:
    src = task._labelled("source_train")  # pylint: disable=protected-access
    mu_s, _, b_s = bias_ridge.fit_biases(*src, pair.source.interactions.num_users, n_src)
    np.testing.assert_allclose(init["item_bias"][:n_src], b_s, rtol=1e-6, atol=1e-9)
    assert init["mu"] == pytest.approx(mu_s)
    assert init["domain_offset"][1] == pytest.approx(float(tgt[2].mean()) - mu_s)
    # A target item with no training label is left at its text-neighbour prior (residual 0).
    unlabelled = np.setdiff1d(np.arange(n_tgt), tgt[1])
    assert unlabelled.size
    np.testing.assert_allclose(init["item_bias"][n_src + unlabelled], 0.0, atol=1e-12)
  model = task.build_model(nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(model.rating_head.item_bias[...]), init["item_bias"],
                             rtol=1e-5, atol=1e-7)
  assert float(model.encoder.mu[...]) == pytest.approx(init["mu"], rel=1e-6)
  with pytest.raises(ValueError, match="item_bias of shape"):
    model.set_biases(item_bias=np.zeros(3))


@pytest.mark.slow
def test_the_study_scores_the_parameters_selected_on_valid(tmp_path):
  """With `train.select` the study's scoring restores the best target-valid evaluation
  (checkpoints_best/), not the last step; without it, the last step."""
  import jax
  from crossrec_jax.study import finished
  from crossrec_jax.train import trainer
  config = configs.load("hybrid_target_only:tiny")
  config.train.update(dict(tensorboard=False, eval_every=2, select="rmse", final_eval=()))
  trainer.train_and_evaluate(config, str(tmp_path))
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  _, selected = finished.restore_selected(config, tmp_path)
  _, last = finished.restore_final(config, tmp_path)
  leaves = lambda t: [np.asarray(x) for x in jax.tree.leaves(t)]
  same = all(np.array_equal(a, b) for a, b in zip(leaves(selected), leaves(last)))
  # The selection was not the last evaluation exactly when the parameters differ.
  at_end = final["selected_at"]["global_step"] == final["global_step"]
  assert same == at_end, final["selected_at"]
  config.train.select = ""
  _, unselected = finished.restore_selected(config, tmp_path)
  assert all(np.array_equal(a, b) for a, b in zip(leaves(unselected), leaves(last)))


@pytest.mark.slow
def test_with_eval_at_start_the_untrained_state_can_be_the_selection(tmp_path):
  """`train.eval_at_start`: a target-valid evaluation before the first step, which `train.select`
  keeps when every trained state is worse (here a learning rate that wrecks the model)."""
  from crossrec_jax.train import trainer
  config = configs.load("hybrid_target_only:tiny")
  config.model.hybrid.init_biases = True
  config.train.update(dict(tensorboard=False, eval_every=2, select="rmse", final_eval=(),
                           eval_at_start=True))
  for group in ("encoder", "rating_head"):
    config.optimizer[group].update(dict(lr=2.0, weight_decay=0.0))
  trainer.train_and_evaluate(config, str(tmp_path))
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  valid = [l for l in lines if l.get("split") == "target_valid"]
  assert valid[0]["global_step"] == 0 and len(valid) > 1, valid
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert final["selected_at"]["global_step"] == 0, final["selected_at"]
  assert all(l["rmse"] > valid[0]["rmse"] for l in valid[1:])
