"""Checkpoints with orbax: the train state (params, optimiser state, step, RNG) plus JSON metadata.

One checkpoint per saved global step, `args.Composite(state=StandardSave, meta=JsonSave)`:

  state  the `TrainState` pytree (arrays; sharded arrays are written by every process's shards).
  meta   plain JSON: phase index and name, step within the phase, global step, the data
         iterator's state (plain ints), the config hash (and config) of the run that wrote it.

Restoring always goes through an *abstract target* (`abstract_like`: `jax.ShapeDtypeStruct`s
with shardings, from `jax.eval_shape` of the phase's initial state). Without one, orbax returns
optax states as plain dicts and puts arrays wherever it likes; with one, the state comes back
with its exact pytree types, on the given devices (restoring onto another mesh works the same).

The state's structure depends on the phase (a frozen group has no Adam state), so callers read
`restore_meta` first, build that phase's abstract state, then call `restore_state`.
Saving is asynchronous (the arrays are copied off the device before `save` returns, so the step
may donate them); orbax finalises a checkpoint directory atomically, so a process killed while
writing leaves the previous checkpoints intact.
"""

from __future__ import annotations

import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

__all__ = ["Checkpointer", "abstract_like"]


def abstract_like(tree: Any, sharding: Any = None) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) with shardings.

  `sharding`: a pytree of shardings matching `tree`, one sharding for every leaf, or None (each
  leaf's own sharding when it is an array, else the first local device).
  """
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if sharding is None or isinstance(sharding, jax.sharding.Sharding):
    def leaf(x):
      s = sharding or getattr(x, "sharding", None) or default
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    return jax.tree.map(leaf, tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, sharding)


class Checkpointer:
  """Saves and restores (TrainState, meta) pairs under `directory`, keeping the last `keep`."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}")
    self.directory = pathlib.Path(directory).absolute()
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                           enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's global step, or None."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes checkpoint `step` (asynchronously; `wait()` blocks until it is on disk)."""
    self._manager.save(int(step), args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self._resolve(step)
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out.meta)

  def restore_state(self, step: int | None, abstract_state: Any) -> Any:
    """The state of checkpoint `step` (None: latest), shaped and placed like `abstract_state`."""
    step = self._resolve(step)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return out.state

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def _resolve(self, step: int | None) -> int:
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return int(step)
