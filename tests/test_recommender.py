"""Tests for models/recommender.py: pooling, outputs, optimiser groups, builders."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax import tasks
from crossrec_jax.models import bert
from crossrec_jax.models import hf_import
from crossrec_jax.models import recommender
from crossrec_jax.train import optim


def small_encoder(seed=0):
  cfg = bert.BertConfig(vocab_size=60, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
  return bert.BertModel(cfg, rngs=nnx.Rngs(seed))


def batch(b=3, length=6):
  rng = np.random.default_rng(0)
  mask = np.ones((b, length), np.int32)
  mask[1, 2:] = 0
  return {"input_ids": rng.integers(1, 60, (b, length)).astype(np.int32) * mask,
          "attention_mask": mask}


def test_pooling_kinds():
  enc = small_encoder()
  x = batch()
  out = enc(x["input_ids"], x["attention_mask"])
  np.testing.assert_array_equal(recommender.pool("cls", out, x["attention_mask"]),
                                out.last_hidden_state[:, 0])
  np.testing.assert_array_equal(recommender.pool("pooler", out, x["attention_mask"]),
                                out.pooler_output)
  mean = recommender.pool("mean", out, x["attention_mask"])
  np.testing.assert_allclose(mean[1], out.last_hidden_state[1, :2].mean(0), rtol=1e-5)
  np.testing.assert_allclose(mean[0], out.last_hidden_state[0].mean(0), rtol=1e-5)
  empty = recommender.pool("mean", out, jnp.zeros_like(x["attention_mask"]))
  assert np.isfinite(np.asarray(empty)).all() and float(jnp.abs(empty).max()) == 0.0
  with pytest.raises(ValueError, match="model.pooling"):
    recommender.pool("max", out, x["attention_mask"])


@pytest.mark.parametrize("output", ["regression", "logit"])
def test_outputs_and_interface(output):
  model = recommender.CrossEncoderRecommender(small_encoder(), pooling="mean", rating_hidden=(8,),
                                              rating_output=output, rngs=nnx.Rngs(1))
  out = model(batch(), 0.5)
  assert set(out) == {"features", "rating", "domain_logit"}
  assert out["features"].shape == (3, 16) and out["features"].dtype == jnp.float32
  assert out["rating"].shape == (3,) and out["domain_logit"].shape == (3,)
  if output == "regression":
    assert ((out["rating"] > 0) & (out["rating"] < 1)).all()
  pred = recommender.predict_rating(out, output)
  assert ((pred >= 0) & (pred <= 1)).all()
  np.testing.assert_array_equal(model.encode(batch()), out["features"])
  # The optimiser groups key on the three top-level attributes; every parameter has one.
  params = nnx.state(model, nnx.Param)
  groups = set(jax.tree.leaves(optim.label_params(params)))
  assert groups == {"encoder", "rating_head", "discriminator"}


def test_gradient_reversal_switch_reaches_the_encoder():
  """reverse_gradient=True flips the sign of the domain loss gradient w.r.t. the features."""
  grads = {}
  for reverse in (True, False):
    model = recommender.CrossEncoderRecommender(small_encoder(), rating_hidden=(8,),
                                                discriminator_hidden=(8,),
                                                reverse_gradient=reverse, rngs=nnx.Rngs(2))
    h = model.encode(batch())
    grads[reverse] = jax.grad(lambda f, m=model: m.discriminator(f, 0.7).sum())(h)
  np.testing.assert_allclose(grads[True], -0.7 * grads[False], rtol=1e-5, atol=1e-7)


def model_config(**encoder):
  cfg = config_base.base_config("tiny").model
  cfg.encoder.update(encoder)
  return cfg


def test_build_random_tiny_model_from_config():
  cfg = model_config()
  model = recommender.build_cross_encoder(cfg, rngs=nnx.Rngs(0))
  assert isinstance(model, recommender.CrossEncoderRecommender)
  assert model.encoder.config.vocab_size == 30522  # real token ids are valid
  assert model.encoder.config.num_hidden_layers == cfg.encoder.num_hidden_layers
  assert model.rating_output == "regression" and model.pooling == "cls"


def test_build_pretrained_truncated_matches_hf_import():
  cfg = model_config(init="pretrained", num_layers=1, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
  cfg.pooling = "mean"
  model = recommender.build_cross_encoder(cfg, rngs=nnx.Rngs(0))
  assert model.encoder.config.num_hidden_layers == 1 and model.encoder.config.hidden_size == 384
  rates = [n.rate for _, n in nnx.iter_graph(model.encoder) if isinstance(n, nnx.Dropout)]
  assert rates == [0.0] * 4 and model.encoder.config.hidden_dropout_prob == 0.0
  reference = hf_import.load_pretrained(num_layers=1)
  x = {"input_ids": np.array([[101, 2023, 3185, 102]], np.int32),
       "attention_mask": np.ones((1, 4), np.int32)}
  expected = reference(x["input_ids"], x["attention_mask"]).last_hidden_state.mean(1)
  np.testing.assert_allclose(model.encode(x), expected, rtol=1e-5, atol=1e-6)


def test_unknown_kinds_are_errors_naming_the_key():
  config = config_base.base_config("tiny")
  config.model.kind = "graph_encoder"
  with pytest.raises(ValueError, match="model.kind='graph_encoder' is not a registered task.*cross_encoder"):
    tasks.make_task(config)
  cfg = model_config(init="scratch")
  with pytest.raises(ValueError, match="model.encoder.init"):
    recommender.build_cross_encoder(cfg, rngs=nnx.Rngs(0))


def test_a_new_architecture_registers_under_its_kind():
  config = ml_collections.ConfigDict({"model": {"kind": "toy_test_kind"}})
  built = []
  tasks.register_task("toy_test_kind", lambda c, data=None: built.append((c, data)) or "ok")
  try:
    assert tasks.make_task(config, data="prepared") == "ok" and built == [(config, "prepared")]
    with pytest.raises(ValueError, match="already registered"):
      tasks.register_task("toy_test_kind", lambda c, data=None: None)
  finally:
    del tasks.TASKS["toy_test_kind"]
