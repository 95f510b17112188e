"""Tests for train/checkpoint.py: exact round trips with types, metadata, retention."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from crossrec_jax.models import heads
from crossrec_jax.train import checkpoint as checkpoint_lib
from crossrec_jax.train import optim
from crossrec_jax.train import state as state_lib


class Tiny(nnx.Module):
  def __init__(self, rngs):
    self.encoder = nnx.Linear(3, 4, rngs=rngs)
    self.rating_head = heads.RatingHead(4, (2,), output="regression", rngs=rngs)
    self.discriminator = heads.DomainDiscriminator(4, (2,), rngs=rngs)


def make_state(frozen=False, seed=0):
  parts = state_lib.split_model(Tiny(nnx.Rngs(seed)))
  opt = optim.make_optimizer(optim.label_params(parts.params), {
      "encoder": {"lr": 1e-3, "frozen": frozen}, "rating_head": {"lr": 1e-3},
      "discriminator": {"lr": 1e-3}})
  state = state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(seed), parts.rest)
  # One real update so the Adam moments are non-zero.
  grads = jax.tree.map(lambda p: p * 0.5 + 1.0, state.params)
  updates, opt_state = opt.tx.update(grads, state.opt_state, state.params)
  return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                       step=state.step + 1, opt_step=state.opt_step + 1)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_keeps_optax_types(tmp_path):
  state = make_state()
  meta = {"phase_index": 1, "step": 1, "data_state": {"step": 7, "seed": 0}, "config_hash": "x"}
  ckpt = checkpoint_lib.Checkpointer(tmp_path / "ck", keep=2)
  ckpt.save(5, state, meta)
  ckpt.wait()
  assert ckpt.latest_step() == 5
  assert ckpt.restore_meta() == meta
  target = checkpoint_lib.abstract_like(jax.eval_shape(lambda: make_state(seed=1)))
  restored = ckpt.restore_state(5, target)
  assert isinstance(restored, state_lib.TrainState)
  assert_trees_equal(restored, state)
  adam = [s for s in jax.tree.leaves(restored.opt_state,
                                     is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert adam, "optax states must come back as their NamedTuples, not dicts"
  ckpt.close()


def test_keeps_the_last_k_and_resumes_after_reopen(tmp_path):
  state = make_state()
  ckpt = checkpoint_lib.Checkpointer(tmp_path, keep=2)
  for step in (10, 20, 30):
    ckpt.save(step, state, {"step": step})
  ckpt.close()
  again = checkpoint_lib.Checkpointer(tmp_path, keep=2)
  assert again.all_steps() == [20, 30] and again.latest_step() == 30
  assert again.restore_meta(20) == {"step": 20}
  again.close()


def test_structure_mismatch_is_an_error(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(tmp_path)
  ckpt.save(1, make_state(frozen=False), {})
  ckpt.wait()
  frozen_target = checkpoint_lib.abstract_like(jax.eval_shape(lambda: make_state(frozen=True)))
  with pytest.raises(Exception):  # a frozen group has no Adam state: the trees differ
    ckpt.restore_state(1, frozen_target)
  ckpt.close()


def test_empty_directory_and_bad_keep(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(tmp_path)
  assert ckpt.latest_step() is None
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    ckpt.restore_meta()
  ckpt.close()
  with pytest.raises(ValueError, match="keep_checkpoints"):
    checkpoint_lib.Checkpointer(tmp_path, keep=0)


def test_abstract_like_attaches_shardings():
  tree = {"a": np.zeros((2, 3), np.float32), "b": np.zeros((), np.int32)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  out = checkpoint_lib.abstract_like(tree, sharding)
  assert out["a"].shape == (2, 3) and out["b"].dtype == np.int32
  assert out["a"].sharding == sharding and out["b"].sharding == sharding
