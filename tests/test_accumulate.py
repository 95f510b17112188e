"""Tests for train/accumulate.py: micro-batch gradient accumulation equals the full batch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossrec_jax.train import accumulate


def _problem():
  rng = np.random.default_rng(0)
  params = {"w": jnp.asarray(rng.normal(size=(5, 3)), jnp.float32),
            "b": jnp.asarray(rng.normal(size=3), jnp.float32)}
  batch = {"x": jnp.asarray(rng.normal(size=(12, 5)), jnp.float32),
           "y": jnp.asarray(rng.normal(size=(12, 3)), jnp.float32),
           "mask": jnp.asarray(rng.random(12) < 0.6, jnp.float32)}
  return params, batch


def _loss(params, batch):
  err = jnp.tanh(batch["x"] @ params["w"] + params["b"]) - batch["y"]
  per_row = jnp.sum(err ** 2, axis=-1)
  return jnp.mean(per_row), {"max_err": jnp.max(jnp.abs(err))}


def _masked_loss(params, batch):
  err = jnp.tanh(batch["x"] @ params["w"] + params["b"]) - batch["y"]
  per_row = jnp.sum(err ** 2, axis=-1)
  return jnp.sum(per_row * batch["mask"]) / jnp.maximum(jnp.sum(batch["mask"]), 1.0), {}


def test_split_is_strided():
  x = jnp.arange(12)
  micro = accumulate.split_micro_batches({"x": x}, 3)["x"]
  np.testing.assert_array_equal(micro, [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


@pytest.mark.parametrize("num_micro", [1, 2, 3, 4])
def test_mean_loss_accumulates_to_full_batch(num_micro):
  params, batch = _problem()
  fn = lambda b: jax.value_and_grad(_loss, has_aux=True)(params, b)
  (loss, _), grads = jax.jit(lambda b: accumulate.accumulate_gradients(fn, b, num_micro))(batch)
  (ref_loss, _), ref_grads = fn(batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)


def test_weighted_accumulation_matches_a_masked_mean():
  params, batch = _problem()
  fn = lambda b: jax.value_and_grad(_masked_loss, has_aux=True)(params, b)
  (loss, _), grads = accumulate.accumulate_gradients(fn, batch, 4,
                                                     weight_fn=lambda b: jnp.sum(b["mask"]))
  (ref_loss, _), ref_grads = fn(batch)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  for g, r in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6)
  # Unweighted averaging of masked means is *not* the full-batch value here (uneven masks).
  (unweighted, _), _ = accumulate.accumulate_gradients(fn, batch, 4)
  assert abs(float(unweighted) - float(ref_loss)) > 1e-4


def test_zero_total_weight_gives_zeros_not_nan():
  params, batch = _problem()
  fn = lambda b: jax.value_and_grad(_masked_loss, has_aux=True)(params, b)
  (loss, _), grads = accumulate.accumulate_gradients(fn, batch, 2, weight_fn=lambda b: 0.0)
  assert float(loss) == 0.0
  assert all(np.all(np.asarray(g) == 0) for g in jax.tree.leaves(grads))


def test_bfloat16_grads_keep_their_dtype_and_accumulate_in_float32():
  params, batch = _problem()
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  fn = lambda b: jax.value_and_grad(_loss, has_aux=True)(params16, b)
  (_, _), grads = accumulate.accumulate_gradients(fn, batch, 3)
  assert all(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))


def test_bad_num_micro_raises():
  params, batch = _problem()
  fn = lambda b: jax.value_and_grad(_loss, has_aux=True)(params, b)
  with pytest.raises(ValueError, match="num_micro=5"):
    accumulate.accumulate_gradients(fn, batch, 5)
  with pytest.raises(ValueError, match=">= 1"):
    accumulate.accumulate_gradients(fn, batch, 0)
