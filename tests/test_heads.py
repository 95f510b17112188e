"""Tests for crossrec_jax.models.heads (RatingHead, DomainDiscriminator, MLP)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax.models.heads import MLP, DomainDiscriminator, RatingHead
from crossrec_jax.train.optim import param_path_name

H = jnp.asarray(np.random.default_rng(0).normal(size=(7, 16)) * 3.0, jnp.float32)


def test_regression_is_sigmoid_of_logit_head_with_same_params():
  reg = RatingHead(16, [32, 8], output="regression", rngs=nnx.Rngs(0))
  logit = RatingHead(16, [32, 8], output="logit", rngs=nnx.Rngs(0))
  r, z = reg(H), logit(H)
  assert r.shape == (7,) and z.shape == (7,)
  assert r.dtype == jnp.float32
  assert np.all((np.asarray(r) >= 0) & (np.asarray(r) <= 1))
  np.testing.assert_allclose(r, jax.nn.sigmoid(z), rtol=1e-6)
  assert np.any(np.asarray(z) < 0) or np.any(np.asarray(z) > 1)  # logits are not squashed


def test_mlp_matches_manual_forward():
  mlp = MLP(16, [8], 1, rngs=nnx.Rngs(1))
  manual = (jax.nn.relu(H @ mlp.hidden[0].kernel[...] + mlp.hidden[0].bias[...])
            @ mlp.out.kernel[...] + mlp.out.bias[...])
  np.testing.assert_allclose(mlp(H), manual, rtol=1e-5, atol=1e-6)


def test_dropout_only_when_not_deterministic():
  head = RatingHead(16, [32], output="logit", dropout=0.5, rngs=nnx.Rngs(2))
  np.testing.assert_array_equal(head(H), head(H, deterministic=True))
  a, b = head(H, deterministic=False), head(H, deterministic=False)
  assert not np.allclose(a, head(H))
  assert not np.allclose(a, b)  # the dropout rng stream advances


def test_bfloat16_compute_keeps_float32_params_and_output():
  f32 = RatingHead(16, [32], output="logit", rngs=nnx.Rngs(3))
  bf16 = RatingHead(16, [32], output="logit", dtype=jnp.bfloat16, rngs=nnx.Rngs(3))
  params = nnx.state(bf16, nnx.Param)
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
  out = bf16(H)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, f32(H), rtol=0.05, atol=0.05)


def test_param_paths_are_documented_ones():
  disc = DomainDiscriminator(16, [8, 4], rngs=nnx.Rngs(4))
  names = sorted(param_path_name(p) for p, _ in
                 jax.tree_util.tree_leaves_with_path(nnx.state(disc, nnx.Param)))
  assert names == ["mlp/hidden/0/bias", "mlp/hidden/0/kernel", "mlp/hidden/1/bias",
                   "mlp/hidden/1/kernel", "mlp/out/bias", "mlp/out/kernel"]


def test_discriminator_forward_does_not_depend_on_lam_or_reverse():
  rev = DomainDiscriminator(16, [8], reverse=True, rngs=nnx.Rngs(5))
  plain = DomainDiscriminator(16, [8], reverse=False, rngs=nnx.Rngs(5))
  out = rev(H, 0.0)
  assert out.shape == (7,) and out.dtype == jnp.float32
  np.testing.assert_array_equal(out, rev(H, 1.0))
  np.testing.assert_array_equal(out, plain(H, 0.3))


def test_bad_arguments_raise():
  with pytest.raises(ValueError, match="output"):
    RatingHead(16, [8], output="softmax", rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="dropout"):
    DomainDiscriminator(16, [8], dropout=1.0, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match="widths"):
    RatingHead(16, [0], output="logit", rngs=nnx.Rngs(0))
