"""The train state pytree and the functional view of an NNX model.

The model is compiled functionally: `nnx.split` it once into a static `graphdef`, the
parameters, the RNG streams and any other mutable state; a jitted step merges them back inside.

  * `params`  -- `nnx.Param`s: trained, checkpointed, sharded.
  * `rng_state` -- the dropout streams' keys and counters. NOT carried in the train state: the step
    reseeds every stream from (`TrainState.rng`, step) each step, so dropout masks are a pure
    function of the seed and the step, and a resumed run draws exactly the masks of an
    uninterrupted one. Kept only because `nnx.merge` needs the variables to exist.
  * `rest`    -- any other variable (e.g. batch statistics of a future model; empty for BERT):
    carried and checkpointed in the state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

__all__ = ["ModelParts", "TrainState", "split_model", "init_train_state", "make_rng", "tree_size"]


class ModelParts(NamedTuple):
  graphdef: nnx.GraphDef
  params: nnx.State
  rng_state: nnx.State
  rest: nnx.State


def split_model(model: nnx.Module) -> ModelParts:
  """`nnx.split(model, nnx.Param, nnx.RngState, ...)` as named parts."""
  return ModelParts(*nnx.split(model, nnx.Param, nnx.RngState, ...))


class TrainState(struct.PyTreeNode):
  """Everything a step updates; a pytree, so it is jitted, donated, sharded and checkpointed whole.

  step: int32 scalar, updates done in the current phase (drives the loss-weight and lambda
    schedules). opt_step: int32, updates since the optimiser state was initialised (drives the
    learning-rate schedules; differs from `step` when a phase keeps the previous optimiser).
  rng: raw key data (uint32) of the phase's PRNG key, from `make_rng` (checkpointable; typed
    keys are not).
  """
  step: jax.Array
  opt_step: jax.Array
  params: nnx.State
  opt_state: optax.OptState
  rest: nnx.State
  rng: jax.Array


def init_train_state(params: nnx.State, tx: optax.GradientTransformation, rng: jax.Array,
                     rest: nnx.State | None = None, opt_state: optax.OptState | None = None,
                     opt_step: int | jax.Array = 0) -> TrainState:
  """A phase's initial state; a fresh optimiser state unless `opt_state` is carried over."""
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      opt_step=jnp.asarray(opt_step, jnp.int32),
      params=params,
      opt_state=tx.init(params) if opt_state is None else opt_state,
      rest=nnx.State({}) if rest is None else rest,
      rng=jnp.asarray(rng, jnp.uint32))


def make_rng(seed: int, *fold_in: int, impl: str = "rbg") -> jax.Array:
  """Raw key data of `key(seed)` folded with `fold_in` (e.g. the phase index), for `impl`."""
  key = jax.random.key(seed, impl=impl)
  for x in fold_in:
    key = jax.random.fold_in(key, x)
  return jax.random.key_data(key)


def tree_size(tree: Any) -> int:
  """Number of scalars in a pytree."""
  return sum(int(x.size) for x in jax.tree.leaves(tree))
