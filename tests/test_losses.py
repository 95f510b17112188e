"""Tests for crossrec_jax.objectives.losses against numpy references written out by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossrec_jax.objectives import losses

RNG = np.random.default_rng(0)
PRED = RNG.uniform(size=6).astype(np.float32)
TARGET = RNG.uniform(size=6).astype(np.float32)
LOGITS = RNG.normal(size=6).astype(np.float32) * 3
LABELS = np.array([0, 1, 1, 0, 1, 0], np.float32)
MASK = np.array([1, 0, 1, 1, 0, 1], bool)


def _np_bce(z, y):
  p = 1 / (1 + np.exp(-z.astype(np.float64)))
  return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def test_masked_mse_matches_numpy():
  want = np.mean(((PRED - TARGET) ** 2)[MASK])
  np.testing.assert_allclose(losses.masked_mse(PRED, TARGET, MASK), want, rtol=1e-6)
  np.testing.assert_allclose(losses.masked_mse(PRED, TARGET), np.mean((PRED - TARGET) ** 2), rtol=1e-6)


def test_float_weights_are_a_weighted_mean():
  w = np.array([0.5, 0.0, 2.0, 1.0, 0.0, 0.25], np.float32)
  want = np.sum(w * (PRED - TARGET) ** 2) / np.sum(w)
  np.testing.assert_allclose(losses.masked_mse(PRED, TARGET, w), want, rtol=1e-6)


def test_masked_bce_matches_numpy():
  want = np.mean(_np_bce(LOGITS, LABELS)[MASK])
  np.testing.assert_allclose(losses.masked_bce_with_logits(LOGITS, LABELS, MASK), want, rtol=1e-5)
  np.testing.assert_allclose(losses.domain_bce(LOGITS, LABELS.astype(np.int32)),
                             np.mean(_np_bce(LOGITS, LABELS)), rtol=1e-5)


def test_all_masked_gives_zero_and_finite_gradients():
  empty = np.zeros(6, bool)
  for fn, a, b in [(losses.masked_mse, PRED, TARGET),
                   (losses.masked_bce_with_logits, LOGITS, LABELS),
                   (losses.domain_bce, LOGITS, LABELS),
                   (losses.binary_accuracy, LOGITS, LABELS)]:
    assert float(fn(a, b, empty)) == 0.0
  g = jax.grad(lambda p: losses.masked_mse(p, TARGET, empty))(jnp.asarray(PRED))
  assert np.all(np.asarray(g) == 0.0)


def test_binary_accuracy():
  logits = np.array([2.0, -1.0, 0.5, -3.0])
  labels = np.array([1, 1, 0, 0])
  assert float(losses.binary_accuracy(logits, labels)) == 0.5
  assert float(losses.binary_accuracy(logits, labels, np.array([1, 0, 0, 1]))) == 1.0


def test_mask_shape_mismatch_raises():
  with pytest.raises(ValueError, match="mask shape"):
    losses.masked_mse(PRED, TARGET, MASK[:3])


# ---------------------------------------------------------------------------- MMD

FX = RNG.normal(size=(16, 5)).astype(np.float32)
FY = RNG.normal(size=(12, 5)).astype(np.float32)


def _np_mmd(x, y, sigmas):
  def k(a, b):
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    return np.mean([np.exp(-d / (2 * s * s)) for s in sigmas], axis=0)
  return k(x, x).mean() + k(y, y).mean() - 2 * k(x, y).mean()


def test_mmd_is_zero_for_identical_samples():
  mmd = jax.jit(losses.mmd_rbf, static_argnames=("median_scale",))
  assert abs(float(mmd(FX, FX))) < 1e-6
  assert abs(float(mmd(FX, FX, median_scale=False))) < 1e-6


def test_mmd_grows_with_mean_shift():
  for kw in ({}, {"median_scale": False, "bandwidths": (1.0, 2.0, 4.0)}):
    mmd = jax.jit(lambda x, y: losses.mmd_rbf(x, y, **kw))
    values = [float(mmd(FX, FX + s)) for s in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert values[0] < 1e-6
    assert all(a < b for a, b in zip(values, values[1:])), (kw, values)


def test_mmd_matches_numpy_with_masks():
  sig = (0.5, 1.0, 3.0)
  mx = np.arange(16) < 11
  my = np.arange(12) % 3 != 0
  got = losses.mmd_rbf(FX, FY + 0.3, mx, my, bandwidths=sig, median_scale=False)
  np.testing.assert_allclose(got, _np_mmd(FX[mx], FY[my] + 0.3, sig), rtol=1e-5)


def test_mmd_median_scale_uses_median_pairwise_distance():
  x, y = FX * 7.0, FY * 7.0 + 1.0
  pooled = np.concatenate([x, y]).astype(np.float64)
  d = ((pooled[:, None] - pooled[None]) ** 2).sum(-1)
  med = np.median(d[~np.eye(len(pooled), dtype=bool)])
  want = _np_mmd(x, y, [m * np.sqrt(med) for m in (0.5, 1.0, 2.0)])
  np.testing.assert_allclose(losses.mmd_rbf(x, y, bandwidths=(0.5, 1.0, 2.0)), want, rtol=1e-4)
  # The median heuristic makes the loss invariant to the feature scale.
  np.testing.assert_allclose(losses.mmd_rbf(x, y), losses.mmd_rbf(x / 7, y / 7), rtol=1e-4)


def test_mmd_unbiased_drops_self_pairs():
  sig = (1.0,)
  got = float(losses.mmd_rbf(FX, FY, bandwidths=sig, median_scale=False, unbiased=True))
  k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / 2)
  off = lambda m: (m.sum() - np.trace(m)) / (m.shape[0] * (m.shape[0] - 1))
  want = off(k(FX, FX)) + off(k(FY, FY)) - 2 * k(FX, FY).mean()
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_mmd_gradients_finite_even_with_duplicates_and_empty_side():
  x = jnp.asarray(np.concatenate([FX[:4], FX[:4]]))  # duplicated rows: zero distances
  g = jax.jit(jax.grad(lambda x: losses.mmd_rbf(x, FY)))(x)
  assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g))
  empty = np.zeros(12, bool)
  assert float(losses.mmd_rbf(x, FY, None, empty)) == 0.0
  g0 = jax.jit(jax.grad(lambda x: losses.mmd_rbf(x, FY, None, empty)))(x)
  assert np.all(np.asarray(g0) == 0.0)


# ---------------------------------------------------------------------------- CORAL

def test_coral_matches_numpy_reference():
  y = FY * np.array([1, 2, 0.5, 1, 3], np.float32)
  d = FX.shape[1]
  want = np.sum((np.cov(FX, rowvar=False) - np.cov(y, rowvar=False)) ** 2) / (4 * d * d)
  np.testing.assert_allclose(losses.coral(FX, y), want, rtol=1e-5)
  mx = np.arange(16) % 2 == 0
  want_m = np.sum((np.cov(FX[mx], rowvar=False) - np.cov(y, rowvar=False)) ** 2) / (4 * d * d)
  np.testing.assert_allclose(losses.coral(FX, y, mx), want_m, rtol=1e-5)


def test_coral_zero_for_same_covariance():
  assert abs(float(losses.coral(FX, FX + 5.0))) < 1e-8  # a mean shift leaves covariance unchanged
  rot = np.linalg.qr(RNG.normal(size=(5, 5)))[0].astype(np.float32)
  assert float(losses.coral(FX, FX @ rot)) > 1e-4


def test_coral_gradients_finite_and_empty_mask_zero():
  g = jax.jit(jax.grad(lambda x: losses.coral(x, FY * 2)))(jnp.asarray(FX))
  assert np.all(np.isfinite(np.asarray(g))) and np.any(np.asarray(g))
  assert float(losses.coral(FX, FY, np.zeros(16, bool))) == 0.0
  with pytest.raises(ValueError, match=r"\[n, d\]"):
    losses.coral(FX, FY[:, :3])


# ---------------------------------------------------------------------------- registry

def test_make_alignment_dispatch_and_options():
  dann = losses.make_alignment("dann")
  assert dann.uses_discriminator and dann.penalty is None
  mmd = losses.make_alignment("mmd", bandwidths=(1.0,), median_scale=False)
  assert not mmd.uses_discriminator
  np.testing.assert_allclose(mmd.penalty(FX, FY, None, None),
                             losses.mmd_rbf(FX, FY, bandwidths=(1.0,), median_scale=False))
  np.testing.assert_allclose(losses.make_alignment("coral").penalty(FX, FY, None, None),
                             losses.coral(FX, FY))
  assert float(losses.make_alignment("none").penalty(FX, FY, None, None)) == 0.0


def test_make_alignment_errors_name_the_problem():
  with pytest.raises(ValueError, match="unknown alignment kind 'wasserstein'"):
    losses.make_alignment("wasserstein")
  with pytest.raises(ValueError, match="bandwith"):
    losses.make_alignment("mmd", bandwith=(1.0,))
  with pytest.raises(ValueError, match="no penalty options"):
    losses.make_alignment("dann", gamma=1.0)


def test_register_new_penalty_in_own_registry():
  registry = dict(losses.ALIGNMENT_LOSSES)

  def mean_gap(x, y, mask_x=None, mask_y=None, *, power=2.0):
    return jnp.sum(jnp.abs(losses.masked_mean(x[:, 0], mask_x) -
                           losses.masked_mean(y[:, 0], mask_y)) ** power)

  losses.register_alignment_loss("mean_gap", mean_gap, registry=registry)
  align = losses.make_alignment("mean_gap", registry=registry, power=1.0)
  np.testing.assert_allclose(align.penalty(FX, FY, None, None),
                             abs(FX[:, 0].mean() - FY[:, 0].mean()), rtol=1e-5)
  assert "mean_gap" not in losses.ALIGNMENT_LOSSES
  with pytest.raises(ValueError, match="already registered"):
    losses.register_alignment_loss("mean_gap", mean_gap, registry=registry)
  with pytest.raises(ValueError, match="reserved"):
    losses.register_alignment_loss("dann", mean_gap, registry=registry)


def test_penalties_jit():
  f = jax.jit(lambda x, y, mx, my: (losses.mmd_rbf(x, y, mx, my), losses.coral(x, y, mx, my)))
  mmd, cor = f(FX, FY, np.ones(16, bool), np.ones(12, bool))
  np.testing.assert_allclose(mmd, losses.mmd_rbf(FX, FY), rtol=1e-5)
  np.testing.assert_allclose(cor, losses.coral(FX, FY), rtol=1e-5)
