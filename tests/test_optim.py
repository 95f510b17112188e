"""Tests for crossrec_jax.train.optim on a tiny NNX model shaped like the recommender."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from crossrec_jax.models.heads import DomainDiscriminator, RatingHead
from crossrec_jax.train.optim import (GroupConfig, decay_mask, label_params, lr_schedule,
                                      make_optimizer, param_path_name)


class TinyEncoder(nnx.Module):

  def __init__(self, rngs):
    self.embed = nnx.Embed(11, 4, rngs=rngs)
    self.dense = nnx.Linear(4, 4, rngs=rngs)
    self.LayerNorm = nnx.LayerNorm(4, rngs=rngs)

  def __call__(self, ids):
    return self.LayerNorm(self.dense(self.embed(ids)).mean(1))


class TinyRecommender(nnx.Module):

  def __init__(self, rngs):
    self.encoder = TinyEncoder(rngs)
    self.rating_head = RatingHead(4, [3], output="regression", rngs=rngs)
    self.discriminator = DomainDiscriminator(4, [3], rngs=rngs)


def _params():
  _, params, _ = nnx.split(TinyRecommender(nnx.Rngs(0)), nnx.Param, ...)
  return params


def _by_name(tree):
  return {param_path_name(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _fill(params, value_by_group):
  labels = label_params(params)
  return jax.tree.map(lambda p, l: jnp.full_like(p, value_by_group[l]), params, labels)


def test_labels_from_nnx_model():
  names = _by_name(label_params(_params()))
  assert names["encoder/embed/embedding"] == "encoder"
  assert names["encoder/LayerNorm/scale"] == "encoder"
  assert names["rating_head/mlp/out/kernel"] == "rating_head"
  assert names["discriminator/mlp/hidden/0/bias"] == "discriminator"
  assert len(names) == 13


def test_labels_longest_prefix_and_unknown_path_error():
  params = _params()
  labels = _by_name(label_params(params, {"encoder": "encoder", "encoder/embed": "embeddings",
                                          "rating_head": "head", "discriminator": "disc"}))
  assert labels["encoder/embed/embedding"] == "embeddings"
  assert labels["encoder/dense/kernel"] == "encoder"
  with pytest.raises(ValueError, match="'discriminator/mlp/hidden/0/bias'.*add the missing prefix"):
    label_params(params, {"encoder": "encoder", "rating_head": "rating_head"})


def test_decay_mask_excludes_biases_and_layernorm():
  mask = _by_name(decay_mask(_params()))
  assert mask["encoder/dense/kernel"] and mask["encoder/embed/embedding"]
  assert mask["rating_head/mlp/hidden/0/kernel"]
  assert not mask["encoder/dense/bias"] and not mask["encoder/LayerNorm/scale"]
  assert not mask["encoder/LayerNorm/bias"] and not mask["discriminator/mlp/out/bias"]
  # A 2-D parameter under a LayerNorm-named module is excluded by the name pattern.
  assert not decay_mask({"enc": {"layer_norm": {"w": jnp.ones((2, 2))}}})["enc"]["layer_norm"]["w"]


def test_weight_decay_applied_only_where_masked():
  params = _params()
  opt = make_optimizer(label_params(params), {g: GroupConfig(lr=0.1, weight_decay=0.5)
                                              for g in ("encoder", "rating_head", "discriminator")})
  grads = jax.tree.map(jnp.zeros_like, params)  # Adam's step is then 0: only decay remains
  updates, _ = jax.jit(opt.tx.update)(grads, opt.tx.init(params), params)
  mask, p, u = _by_name(decay_mask(params)), _by_name(params), _by_name(updates)
  for name in p:
    want = -0.1 * 0.5 * p[name] if mask[name] else np.zeros_like(p[name])
    np.testing.assert_allclose(u[name], want, rtol=1e-6, atol=1e-9, err_msg=name)


@pytest.mark.parametrize("pure_dict", [False, True])
def test_first_step_is_lr_times_sign_and_frozen_group_is_zero(pure_dict):
  params = _params()
  if pure_dict:
    params = nnx.to_pure_dict(params)
  lrs = {"rating_head": 1e-2, "discriminator": 1e-3}
  opt = make_optimizer(label_params, {
      "encoder": GroupConfig(frozen=True),
      "rating_head": GroupConfig(lr=lrs["rating_head"], weight_decay=0.0),
      "discriminator": {"lr": lrs["discriminator"], "weight_decay": 0.0},
  }, max_grad_norm=None)
  rng = np.random.default_rng(0)
  grads = jax.tree.map(lambda p: jnp.asarray(rng.choice([-2.0, 3.0], p.shape), jnp.float32), params)
  state = opt.tx.init(params)
  update = jax.jit(opt.tx.update)
  new_params = params
  for _ in range(3):
    updates, state = update(grads, state, new_params)
    new_params = optax.apply_updates(new_params, updates)
    assert type(new_params) is type(params)
    u, g = _by_name(updates), _by_name(grads)
    for name in u:
      group = name.split("/")[0]
      if group == "encoder":
        assert np.all(u[name] == 0.0), name
      else:
        # rtol: optax's float32 bias correction 1 - 0.999 is off by 1.3e-5.
        np.testing.assert_allclose(u[name], -lrs[group] * np.sign(g[name]), rtol=1e-4, err_msg=name)
  old, new = _by_name(params), _by_name(new_params)
  assert all(np.array_equal(old[n], new[n]) for n in old if n.startswith("encoder/"))
  assert not np.array_equal(old["rating_head/mlp/out/kernel"], new["rating_head/mlp/out/kernel"])


def _adam_mu(state, group):
  adam = [s for s in jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  mus = [_by_name(a.mu) for a in adam]
  return next(m for m in mus if m and next(iter(m)).startswith(group))


def test_clipping_uses_trainable_gradients_only():
  params = _params()
  groups = {"encoder": GroupConfig(frozen=True), "rating_head": GroupConfig(lr=1e-3),
            "discriminator": GroupConfig(lr=1e-3)}
  opt = make_optimizer(label_params(params), groups, max_grad_norm=1.0)
  grads = _fill(params, {"encoder": 1e6, "rating_head": 10.0, "discriminator": 10.0})
  _, state = jax.jit(opt.tx.update)(grads, opt.tx.init(params), params)
  n_trainable = sum(p.size for n, p in _by_name(params).items() if not n.startswith("encoder/"))
  clipped = 10.0 / (10.0 * np.sqrt(n_trainable))  # every entry, after clipping to norm 1
  for group in ("rating_head", "discriminator"):
    for name, mu in _adam_mu(state, group).items():
      np.testing.assert_allclose(mu, (1 - 0.9) * clipped, rtol=1e-5, err_msg=name)
  # Without clipping the moments see the raw gradient.
  raw = make_optimizer(label_params(params), groups, max_grad_norm=None).tx
  _, raw_state = jax.jit(raw.update)(grads, raw.init(params), params)
  for mu in _adam_mu(raw_state, "rating_head").values():
    np.testing.assert_allclose(mu, 1.0, rtol=1e-6)


def test_schedules_drive_updates_and_are_exposed():
  params = {"rating_head": {"w": jnp.ones((2, 2))}}
  cfg = GroupConfig(lr=0.1, warmup_steps=2, decay="linear", decay_steps=6, end_lr_factor=0.5,
                    weight_decay=0.0)
  opt = make_optimizer(label_params(params), {"rating_head": cfg}, max_grad_norm=None)
  want = [0.0, 0.05, 0.1, 0.0875, 0.075, 0.0625, 0.05, 0.05]
  np.testing.assert_allclose([float(opt.learning_rates(t)["rating_head"]) for t in range(8)],
                             want, rtol=1e-6, atol=1e-9)
  state = opt.tx.init(params)
  grads = {"rating_head": {"w": jnp.ones((2, 2))}}  # constant: bias-corrected Adam step is 1
  update = jax.jit(opt.tx.update)
  for t in range(8):
    updates, state = update(grads, state, params)
    np.testing.assert_allclose(updates["rating_head"]["w"], -want[t], rtol=1e-4, atol=1e-9)
  cos = lr_schedule(GroupConfig(lr=1.0, decay="cosine", decay_steps=4))
  np.testing.assert_allclose([float(cos(t)) for t in (0, 2, 4, 9)], [1.0, 0.5, 0.0, 0.0], atol=1e-6)
  frozen = make_optimizer(label_params(params), {"rating_head": GroupConfig(frozen=True)})
  assert float(frozen.learning_rates(3)["rating_head"]) == 0.0


def test_optimizer_inside_jitted_step_with_nnx_model():
  model = TinyRecommender(nnx.Rngs(1))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  opt = make_optimizer(label_params(params), {"encoder": GroupConfig(lr=3e-2),
                                              "rating_head": GroupConfig(lr=3e-2),
                                              "discriminator": GroupConfig(frozen=True)})
  ids = jnp.array([[1, 2, 3], [4, 5, 6], [7, 8, 9], [1, 5, 9]])
  y = jnp.array([0.1, 0.9, 0.5, 0.3])

  def loss_fn(params):
    m = nnx.merge(graphdef, params, rest)
    return jnp.mean((m.rating_head(m.encoder(ids)) - y) ** 2)

  @jax.jit
  def step(params, opt_state):
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  opt_state = opt.tx.init(params)
  losses = []
  for _ in range(20):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0]
  nnx.update(model, params)
  np.testing.assert_allclose(float(loss_fn(nnx.state(model, nnx.Param))), loss_fn(params))


def test_config_errors_name_the_key():
  labels = label_params(_params())
  with pytest.raises(ValueError, match=r"labelled \['discriminator'\] have no optimiser group"):
    make_optimizer(labels, {"encoder": GroupConfig(), "rating_head": GroupConfig()})
  with pytest.raises(ValueError, match=r"groups\.encoder\.learning_rate"):
    make_optimizer(labels, {"encoder": {"learning_rate": 1e-3}})
  with pytest.raises(ValueError, match=r"groups\.rating_head\.decay_steps"):
    make_optimizer(labels, {"rating_head": {"decay": "cosine"}})
  with pytest.raises(ValueError, match=r"groups\.rating_head\.decay_steps=100 has no effect"):
    make_optimizer(labels, {"rating_head": {"decay_steps": 100}})
  cd = ml_collections.ConfigDict({"lr": 1e-3, "decay": "sine", "decay_steps": 3})
  with pytest.raises(ValueError, match=r"groups\.encoder\.decay must be one of"):
    make_optimizer(labels, {"encoder": cd})
  with pytest.raises(ValueError, match="max_grad_norm"):
    make_optimizer(labels, {g: GroupConfig() for g in ("encoder", "rating_head", "discriminator")},
                   max_grad_norm=0.0)
