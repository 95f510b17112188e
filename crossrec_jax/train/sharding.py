"""Device mesh, parameter partition rules, and activation sharding constraints.

One config runs on one CPU, a GPU node or a TPU slice by changing only `config.mesh`:

    mesh = make_mesh({'data': -1, 'fsdp': 1, 'tensor': 1})   # -1 = all remaining devices
    abstract = jax.eval_shape(init_fn)                        # TrainState of ShapeDtypeStructs
    shardings = state_shardings(abstract, mesh)               # DEFAULT_RULES
    state = jax.jit(init_fn, out_shardings=shardings)()       # created already sharded
    step = step_lib.make_train_step(..., state_sharding=shardings,
                                    batch_sharding=batch_sharding(mesh))

Mesh axes (always all three, size 1 when unused, so rules and specs never name a missing axis):
  * `data`   -- pure data parallelism: parameters replicated, batch split.
  * `fsdp`   -- data parallelism that also splits parameters and optimiser state (ZeRO-3 style):
                the batch is split over ('data', 'fsdp'), the large parameter dimensions over
                'fsdp'; XLA all-gathers weights for the matmuls and reduce-scatters gradients.
  * `tensor` -- Megatron tensor parallelism inside a layer: attention heads (query/key/value
                kernels split on the output dim, the attention output dense on its input dim)
                and the MLP (intermediate on the output dim, output dense on the input dim), so
                each layer needs one all-reduce after attention and one after the MLP.

Partition rules are ordered (regex, PartitionSpec) pairs matched with `re.search` against a
leaf's path ('params/encoder/encoder/layer/3/attention/query/kernel'); the first match wins. The
optimiser's moments live at paths that end with the parameter's path
('opt_state/1/inner_states/encoder/inner_state/0/mu/encoder/encoder/layer/3/attention/query/kernel'),
so the same rules shard them like their parameter. Rules end with a catch-all that replicates.
A dimension whose size does not divide the mesh axes named for it is replicated instead, and
the decision is logged (e.g. the 30522-token vocabulary over tensor=8).

Activations: `constrain(x, *logical_axes)` pins an activation to the mesh of the enclosing
`jax.set_mesh(mesh)` context (a no-op without one), mapping logical names to mesh axes with
`ACTIVATION_AXES`. Both live in `models/partitioning.py` (the encoder calls `constrain`, and
models do not import train/) and are re-exported here.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec as P

from crossrec_jax.models.partitioning import ACTIVATION_AXES, BATCH_AXES, constrain
from crossrec_jax.train.optim import param_path_name

__all__ = [
    "MESH_AXES", "BATCH_AXES", "DEFAULT_RULES", "ACTIVATION_AXES", "mesh_shape", "make_mesh",
    "path_name", "spec_for", "state_shardings", "create_sharded_state", "batch_sharding",
    "replicated", "constrain", "describe", "MeshPartitioner",
]

MESH_AXES = ("data", "fsdp", "tensor")
Rules = Sequence[tuple[str, P]]

# Kernels are stored (in, out) (flax `nnx.Linear`); embeddings (rows, features).
DEFAULT_RULES: tuple[tuple[str, P], ...] = (
    # Attention: q/k/v split by heads (output dim) over 'tensor'; the output projection takes
    # its input dim from 'tensor' and reduces -> one all-reduce per attention block.
    (r"attention/(query|key|value)/kernel$", P("fsdp", "tensor")),
    (r"attention/(query|key|value)/bias$", P("tensor")),
    (r"attention/output/kernel$", P("tensor", "fsdp")),
    # MLP: intermediate on its output dim, output dense on its input dim.
    (r"layer/\d+/intermediate/kernel$", P("fsdp", "tensor")),
    (r"layer/\d+/intermediate/bias$", P("tensor")),
    (r"layer/\d+/output/kernel$", P("tensor", "fsdp")),
    # Embedding tables: the vocabulary over 'tensor', the features NOT over 'fsdp'. A lookup
    # of a table whose features are split over fsdp comes out feature-sharded over fsdp, while
    # activations split the batch over (data, fsdp); one axis cannot shard both, and XLA
    # replicated the embeddings to reshard them ("Involuntary full rematerialization", forward
    # and backward). The cost: the table (and its Adam moments) is not split by fsdp.
    (r"word_embeddings/embedding$", P("tensor", None)),
    (r"position_embeddings/embedding$", P(None, "fsdp")),
    # ModernBERT (models/modernbert.py: 'layers/N/attn/Wqkv', 'layers/N/mlp/Wi', ...), the same
    # Megatron split: the fused projections on their output dim, the Wo's on their input dim.
    # Wqkv's columns are (q | k | v) and Wi's (input | gate), so a 'tensor' shard is a column
    # block, not whole heads of each of q, k, v: XLA reshards that before the head-split
    # attention (without a full rematerialization: tests/test_modernbert_sharding.py).
    (r"layers/\d+/attn/Wqkv/kernel$", P("fsdp", "tensor")),
    (r"layers/\d+/attn/Wqkv/bias$", P("tensor")),
    (r"layers/\d+/attn/Wo/kernel$", P("tensor", "fsdp")),
    (r"layers/\d+/mlp/Wi/kernel$", P("fsdp", "tensor")),
    (r"layers/\d+/mlp/Wi/bias$", P("tensor")),
    (r"layers/\d+/mlp/Wo/kernel$", P("tensor", "fsdp")),
    (r"embeddings/tok_embeddings/embedding$", P("tensor", None)),
    # Pooler and head kernels: FSDP over the input dim (small; replicated when it does not divide).
    (r"pooler/kernel$", P("fsdp", None)),
    (r"(rating_head|discriminator)/.*kernel$", P("fsdp", None)),
    # Two-tower models (item and user towers). Their transformer blocks (flax MultiHeadAttention:
    # q/k/v kernels (in, heads, head_dim) take the rules above; its output (heads, head_dim, out)
    # and the feed-forward pair are split like BERT's).
    (r"attention/out/kernel$", P("tensor", None, "fsdp")),
    (r"layers/\d+/ff_in/kernel$", P("fsdp", "tensor")),
    (r"layers/\d+/ff_in/bias$", P("tensor")),
    (r"layers/\d+/ff_out/kernel$", P("tensor", "fsdp")),
    # Per-item tables (id and history embeddings, the cached item text vectors in the state's
    # `rest`): catalogue rows over 'fsdp', so a large catalogue is split, not replicated.
    (r"(item_tower|user_tower)/(id|history)_embedding/embedding$", P("fsdp", None)),
    (r"(^|/)item_text$", P("fsdp", None)),
    # The towers' other kernels (MLPs, rating and position inputs): FSDP over the input dim.
    (r"(item_tower|user_tower)/.*(kernel|embedding)$", P("fsdp", None)),
    # Everything else (LayerNorms, biases, scalars, counters, rng): replicated.
    (r".*", P()),
)


# ---------------------------------------------------------------------------- mesh

def mesh_shape(sizes: Mapping[str, int] | Sequence[int], num_devices: int) -> tuple[int, int, int]:
  """Resolves (data, fsdp, tensor) sizes; one -1 takes the remaining devices.

  Args:
    sizes: a mapping with keys among MESH_AXES (missing ones are 1), e.g. a ConfigDict
      `config.mesh`, or a sequence of three ints in MESH_AXES order.
    num_devices: devices to fill (all of them: every device must be in the mesh).

  Raises:
    ValueError naming `mesh.<axis>` for an unknown axis, a size < 1 other than -1, more than one
    -1, or a product that does not equal `num_devices`.
  """
  if isinstance(sizes, Mapping) or hasattr(sizes, "items"):
    sizes = dict(sizes.items())
    unknown = sorted(set(sizes) - set(MESH_AXES))
    if unknown:
      raise ValueError(f"unknown mesh axes {[f'mesh.{a}' for a in unknown]}; axes are {MESH_AXES}")
    values = [int(sizes.get(a, 1)) for a in MESH_AXES]
  else:
    values = [int(v) for v in sizes]
    if len(values) != len(MESH_AXES):
      raise ValueError(f"mesh needs {len(MESH_AXES)} sizes {MESH_AXES}, got {values}")
  for axis, v in zip(MESH_AXES, values):
    if v < 1 and v != -1:
      raise ValueError(f"mesh.{axis}={v}: sizes must be >= 1, or -1 for the remaining devices")
  if values.count(-1) > 1:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, values))}: at most one axis may be -1")
  known = math.prod(v for v in values if v != -1)
  if -1 in values:
    if num_devices % known:
      raise ValueError(f"mesh {dict(zip(MESH_AXES, values))}: {num_devices} devices do not "
                       f"divide by the fixed axes' product {known}")
    values[values.index(-1)] = num_devices // known
  if math.prod(values) != num_devices:
    raise ValueError(f"mesh {dict(zip(MESH_AXES, values))} has {math.prod(values)} devices but "
                     f"{num_devices} are available; set one axis to -1 to use the rest")
  return tuple(values)  # type: ignore[return-value]


def make_mesh(sizes: Mapping[str, int] | Sequence[int] = (-1, 1, 1),
              devices: Sequence[Any] | None = None) -> Mesh:
  """A (data, fsdp, tensor) mesh over `devices` (default: all, across processes), Auto axes.

  `jax.make_mesh` orders devices so that the last ('tensor') axis gets the fastest links
  (NVLink / ICI neighbours), which is where the per-layer all-reduces of tensor parallelism go.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(sizes, len(devices))
  return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES),
                       devices=devices)


# ---------------------------------------------------------------------------- parameter rules

# One key-path naming for optimiser groups and sharding rules alike ('params/encoder/layer/0/kernel').
path_name = param_path_name


def _axes(entry: Any) -> tuple[str, ...]:
  if entry is None:
    return ()
  return tuple(entry) if isinstance(entry, (tuple, list)) else (entry,)


def spec_for(name: str, shape: Sequence[int], mesh: Mesh, rules: Rules = DEFAULT_RULES,
             log: logging.Logger | None = None) -> P:
  """The PartitionSpec of the leaf at path `name` with `shape`: the first matching rule's spec,
  with every dimension that does not divide its mesh axes replicated (and logged).

  Raises:
    ValueError: no rule matches, a rule names an axis the mesh lacks, or its spec has more
      entries than the leaf has dimensions.
  """
  for pattern, spec in rules:
    if re.search(pattern, name):
      break
  else:
    raise ValueError(f"no partition rule matches {name!r}; end the rules with ('.*', P())")
  if len(spec) > len(shape):
    raise ValueError(f"partition rule {pattern!r} -> {spec} has {len(spec)} entries but "
                     f"{name!r} has shape {tuple(shape)}")
  entries = []
  for dim, entry in enumerate(spec):
    axes = _axes(entry)
    for a in axes:
      if a not in mesh.shape:
        raise ValueError(f"partition rule {pattern!r} names mesh axis {a!r}; the mesh has "
                         f"{tuple(mesh.shape)}")
    ways = math.prod(mesh.shape[a] for a in axes)
    if ways > 1 and shape[dim] % ways:
      (log or logging.getLogger(__name__)).info(
          "sharding: %s dim %d (size %d) does not divide over %s (%d ways): replicated",
          name, dim, shape[dim], axes, ways)
      entries.append(None)
    else:
      entries.append(entry)
  while entries and entries[-1] is None:
    entries.pop()
  return P(*entries)


def state_shardings(abstract_state: Any, mesh: Mesh, rules: Rules = DEFAULT_RULES) -> Any:
  """A pytree of NamedSharding matching `abstract_state` (arrays or ShapeDtypeStructs).

  Works on any pytree: a `TrainState`, an `nnx.State` of params, a plain dict. Leaves without a
  shape (Python scalars) are replicated.
  """
  log = logging.getLogger(__name__)

  def one(path, leaf):
    shape = tuple(getattr(leaf, "shape", ()))
    return NamedSharding(mesh, spec_for(path_name(path), shape, mesh, rules, log))

  return jax.tree_util.tree_map_with_path(one, abstract_state)


def create_sharded_state(init_fn: Callable[..., Any], mesh: Mesh, rules: Rules = DEFAULT_RULES,
                         *args: Any) -> tuple[Any, Any]:
  """(state, shardings): `init_fn(*args)` compiled with `out_shardings`, so every device
  materialises only its own shards (a model too big for one device never exists whole).

  Random initialisers give the same values on any mesh (jax_threefry_partitionable, the
  default). `args` (e.g. host-loaded pretrained params) are transferred as needed.
  """
  abstract = jax.eval_shape(init_fn, *args)
  shardings = state_shardings(abstract, mesh, rules)
  return jax.jit(init_fn, out_shardings=shardings)(*args), shardings


def batch_sharding(mesh: Mesh, data_axes: Sequence[str] = BATCH_AXES) -> NamedSharding:
  """Leading (batch) dim over ('data', 'fsdp'), the rest replicated; as `pipeline.shard_batch`."""
  return NamedSharding(mesh, P(tuple(a for a in data_axes if a in mesh.shape)))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


class MeshPartitioner:
  """The trainer's `Partitioner` hook (train/trainer.py) for a mesh and partition rules.

      partitioner = MeshPartitioner.from_config(config.mesh)
      trainer.train_and_evaluate(config, workdir, partitioner=partitioner)
  """

  def __init__(self, mesh: Mesh, rules: Rules = DEFAULT_RULES,
               data_axes: Sequence[str] = BATCH_AXES):
    self.mesh, self.rules, self.data_axes = mesh, tuple(rules), tuple(data_axes)

  @classmethod
  def from_config(cls, sizes: Mapping[str, int] | Sequence[int],
                  rules: Rules = DEFAULT_RULES) -> MeshPartitioner:
    return cls(make_mesh(sizes), rules)

  def state_sharding(self, abstract_state: Any) -> Any:
    return state_shardings(abstract_state, self.mesh, self.rules)

  def batch_sharding(self) -> NamedSharding:
    return batch_sharding(self.mesh, self.data_axes)

  def put_batch(self, batch: Any, shared: Collection[str] = ()) -> Any:
    """This process's rows of a global batch -> global arrays (`pipeline.shard_batch`); arrays
    under a key in `shared` are whole on every process and replicated."""
    from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    return pipeline.shard_batch(batch, self.mesh, self.data_axes, shared=shared)


# ---------------------------------------------------------------------------- logs

def describe(shardings: Any, state: Any | None = None) -> list[str]:
  """'path shape spec' lines for the sharded leaves of a shardings pytree (for logs)."""
  lines = []
  leaves = jax.tree_util.tree_leaves_with_path(shardings)
  shapes = [None] * len(leaves) if state is None else [np.shape(x) for x in jax.tree.leaves(state)]
  for (path, s), shape in zip(leaves, shapes):
    if s.spec != P():
      lines.append(f"{path_name(path)} {shape if shape is not None else ''} {s.spec}")
  return lines
