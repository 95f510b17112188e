"""Where the train state and batches live: the `Partitioner` hook and placing trees on a mesh.

`train/sharding.MeshPartitioner` implements `Partitioner`; the trainer runs on the default device
without one. `on_mesh` turns host arrays (a freshly built model) into global arrays on the mesh,
each cut by its partition rule, so the jitted state init also works across processes.
"""

from __future__ import annotations

from typing import Any, Protocol

import jax
import numpy as np

__all__ = ["Partitioner", "on_mesh"]


class Partitioner(Protocol):
  """Hook for `train/sharding.py`: where the state and batches live. None = one device."""

  def state_sharding(self, abstract_state: Any) -> Any: ...
  def batch_sharding(self) -> Any: ...
  def put_batch(self, batch: Any, shared: Any = ()) -> Any: ...  # shared: keys not split by row


def on_mesh(tree: Any, partitioner: Any) -> Any:
  """`tree`'s arrays as global arrays on the partitioner's mesh, each placed by its rule.

  Arrays already on the mesh (the previous phase's state) stay as they are; others (the
  freshly built model on the default device of this process) are cut into the shards each
  device of this process holds, so the jitted init also works across processes.
  """
  mesh_devices = set(partitioner.mesh.devices.flat)
  shardings = partitioner.state_sharding(jax.eval_shape(lambda t: t, tree))

  def place(x: Any, s: Any) -> Any:
    if not hasattr(x, "shape"):
      return x  # Python scalars: traced as such
    if isinstance(x, jax.Array) and set(x.sharding.device_set) == mesh_devices:
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

  return jax.tree.map(place, tree, shardings)
