"""Logical activation axes and `constrain`: sharding hints the models place on activations.

Lives under models/ (not train/sharding.py, which re-exports it) so that the encoder can pin
its activations without importing the training package: data flows one way (README, "How
data flows").

    x = constrain(x, 'batch', 'length', 'embed')   # no-op unless under `jax.set_mesh(mesh)`

Logical names map onto the (data, fsdp, tensor) mesh axes of `train/sharding.py` through
`ACTIVATION_AXES`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import jax
from jax.sharding import PartitionSpec as P

__all__ = ["BATCH_AXES", "ACTIVATION_AXES", "constrain"]

# Mesh axes the batch (leading) dimension is split over: pure and fully-sharded data parallel.
BATCH_AXES = ("data", "fsdp")

# Logical activation axis -> mesh axes (None: replicated).
ACTIVATION_AXES: Mapping[str, tuple[str, ...] | None] = {
    "batch": BATCH_AXES,
    "length": None,
    "embed": None,
    "heads": ("tensor",),
    "head_dim": None,
    "mlp": ("tensor",),
}


def constrain(x: jax.Array, *logical_axes: str | None) -> jax.Array:
  """Pins activation `x` to the mesh of the enclosing `jax.set_mesh(mesh)`; no-op without one.

  `logical_axes` names x's dimensions (keys of ACTIVATION_AXES, or None = replicated). A
  dimension that does not divide its mesh axes stays unconstrained, so the call is safe for
  any batch size or head count. Where the encoder calls it (GSPMD otherwise may keep the
  FSDP-gathered layout and replicate activations over 'fsdp', or undo the head split):

    BertEncoder: after each layer        x = constrain(x, 'batch', 'length', 'embed')
    BertAttention: q, k, v after heads() q = constrain(q, 'batch', 'length', 'heads', 'head_dim')
    BertLayer: after the intermediate    h = constrain(h, 'batch', 'length', 'mlp')
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  if len(logical_axes) != x.ndim:
    raise ValueError(f"constrain: {len(logical_axes)} logical axes {logical_axes} for an array "
                     f"of shape {x.shape}")
  entries = []
  for size, name in zip(x.shape, logical_axes):
    if name is not None and name not in ACTIVATION_AXES:
      raise ValueError(f"constrain: unknown logical axis {name!r}; known: {sorted(ACTIVATION_AXES)}")
    axes = tuple(a for a in (ACTIVATION_AXES[name] or ()) if a in mesh.axis_names) if name else ()
    ways = math.prod(mesh.shape[a] for a in axes)
    entries.append(axes if axes and ways > 1 and size % ways == 0 else None)
  return jax.lax.with_sharding_constraint(x, P(*entries))
