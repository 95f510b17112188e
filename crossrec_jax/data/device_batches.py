"""Host batches onto the mesh: `shard_batch` (this process's rows -> global jax.Arrays) and
`DevicePrefetch` (a few batches already transferred while the step runs; resumable).

Multi-host: each process loads only its `process_index`-th slice of every global batch's rows
(`pipeline.py`); `make_array_from_process_local_data` assembles the global array. Keys a task
declares shared (`Task.shared_batch_keys`) are whole on every process and replicated.
"""

from __future__ import annotations

import collections
from typing import Any, Callable, Collection, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

__all__ = ["shard_batch", "DevicePrefetch"]

def shard_batch(batch: Any, mesh: Mesh, data_axes: Sequence[str] = ("data", "fsdp"),
                shared: Collection[str] = ()) -> Any:
  """This process's rows of a global batch (a dict, or a tuple of dicts) -> global jax.Arrays.

  The leading (batch) dimension is split over the mesh axes in `data_axes` that the mesh has; the
  other dimensions are replicated. Arrays under a key in `shared` are not per row (a bi-encoder
  batch's catalogue rows and drawn negatives, `bi_pipeline.SHARED_KEYS`): every process holds
  them whole, and they are replicated on every device.
  """
  axes = tuple(a for a in data_axes if a in mesh.axis_names)
  if not axes:
    raise ValueError(f"none of data_axes {tuple(data_axes)} is a mesh axis {mesh.axis_names}")
  ways = int(np.prod([mesh.shape[a] for a in axes]))
  sharding = NamedSharding(mesh, P(axes))

  def put(x):
    x = np.asarray(x)
    global_rows = x.shape[0] * jax.process_count()
    if global_rows % ways:
      raise ValueError(f"global batch of {global_rows} rows does not split over {ways} devices "
                       f"of mesh axes {axes}: make batch_size a multiple of {ways}")
    return jax.make_array_from_process_local_data(sharding, x)

  def put_whole(x):
    return jax.make_array_from_process_local_data(whole, np.asarray(x))

  whole = NamedSharding(mesh, P())
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (put_whole if _key_name(path) in shared else put)(x), batch)


def _key_name(path: tuple[Any, ...]) -> str | None:
  """The innermost dict key on a pytree path (None for none: a bare array)."""
  keys = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
  return keys[-1] if keys else None


class DevicePrefetch:
  """Keeps `size` batches already put on device (transfers overlap the running step).

  `get_state()` is the wrapped iterator's state after the last batch *returned* (not the ones
  prefetched), so a checkpoint taken between steps resumes exactly.
  """

  def __init__(self, iterator: Any, put: Callable[[Any], Any], size: int = 2):
    self._it, self._put, self._size = iterator, put, max(1, size)
    self._queue: collections.deque = collections.deque()
    self._state = iterator.get_state()

  def __iter__(self) -> "DevicePrefetch":
    return self

  def __next__(self) -> Any:
    while len(self._queue) < self._size:
      try:
        batch = next(self._it)
      except StopIteration:
        break
      self._queue.append((self._put(batch), self._it.get_state()))
    if not self._queue:
      raise StopIteration
    batch, self._state = self._queue.popleft()
    return batch

  def get_state(self) -> dict[str, int]:
    return dict(self._state)

  def set_state(self, state: Mapping[str, int]) -> None:
    self._queue.clear()
    self._it.set_state(state)
    self._state = self._it.get_state()
