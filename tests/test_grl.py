"""Tests for crossrec_jax.models.grl (gradient reversal) and the discriminator that uses it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax.models.grl import gradient_reversal
from crossrec_jax.models.heads import DomainDiscriminator


def _loss(x):
  return jnp.sum(jnp.sin(x) * jnp.arange(x.size, dtype=x.dtype).reshape(x.shape))


X = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4)), jnp.float32)


def test_forward_is_identity():
  np.testing.assert_array_equal(gradient_reversal(X, 0.7), X)


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0, 2.5])
def test_gradient_is_minus_lam_times_plain_gradient(lam):
  plain = jax.grad(_loss)(X)
  reversed_ = jax.grad(lambda x: _loss(gradient_reversal(x, lam)))(X)
  np.testing.assert_array_equal(reversed_, -jnp.float32(lam) * plain)
  if lam == 0.0:
    assert not np.any(np.asarray(reversed_))


def test_lam_receives_zero_gradient():
  g_lam = jax.grad(lambda lam: _loss(gradient_reversal(X, lam) * 2.0))(jnp.float32(0.5))
  assert g_lam.shape == () and float(g_lam) == 0.0


def test_bfloat16_cotangent_keeps_dtype():
  xb = X.astype(jnp.bfloat16)
  g = jax.grad(lambda x: jnp.sum(gradient_reversal(x, 0.5).astype(jnp.float32) ** 2))(xb)
  assert g.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(g, np.float32), -np.asarray(xb, np.float32), rtol=1e-2)


def test_pytree_input():
  tree = {"a": X, "b": (X[0], X[1:] * 2)}
  f = lambda t: sum(jnp.sum(v ** 2) for v in jax.tree.leaves(t))
  plain = jax.grad(f)(tree)
  rev = jax.grad(lambda t: f(gradient_reversal(t, 0.25)))(tree)
  for p, r in zip(jax.tree.leaves(plain), jax.tree.leaves(rev)):
    np.testing.assert_array_equal(r, -0.25 * p)


def test_rejects_integer_input_and_non_scalar_lam():
  with pytest.raises(TypeError, match="floating-point"):
    gradient_reversal(jnp.arange(3), 1.0)
  with pytest.raises(ValueError, match="scalar"):
    gradient_reversal(X, jnp.ones(2))


def test_traced_lam_changes_gradient_without_retrace():
  traces = []

  @jax.jit
  def grad_fn(x, lam):
    traces.append(1)
    return jax.grad(lambda x: _loss(gradient_reversal(x, lam)))(x)

  plain = jax.grad(_loss)(X)
  for lam in [0.1, 0.5, 0.9]:
    np.testing.assert_allclose(grad_fn(X, jnp.float32(lam)), -lam * plain, rtol=1e-6)
  assert len(traces) == 1


def _disc_grads(reverse, lam, h):
  disc = DomainDiscriminator(4, [6], dropout=0.0, reverse=reverse, rngs=nnx.Rngs(3))
  graphdef, params, rest = nnx.split(disc, nnx.Param, ...)
  labels = jnp.array([0.0, 1.0, 1.0, 0.0, 1.0])

  def loss(params, h):
    logits = nnx.merge(graphdef, params, rest)(h, lam)
    return jnp.mean(jax.nn.softplus(logits) - labels * logits)

  return jax.grad(loss, argnums=(0, 1))(params, h)


def test_discriminator_params_get_plain_gradient_features_get_reversed():
  h = jnp.asarray(np.random.default_rng(1).normal(size=(5, 4)), jnp.float32)
  lam = 0.6
  (p_rev, h_rev) = _disc_grads(True, lam, h)
  (p_plain, h_plain) = _disc_grads(False, lam, h)
  for a, b in zip(jax.tree.leaves(p_rev), jax.tree.leaves(p_plain)):
    np.testing.assert_array_equal(a, b)
  assert np.any(np.asarray(h_plain))
  np.testing.assert_array_equal(h_rev, -jnp.float32(lam) * h_plain)
