"""Per-group AdamW optimiser (optax) for the recommender: encoder, heads and discriminator each get
their own learning-rate schedule, weight decay and Adam settings, and any group can be frozen.

Usage, functionally, on the params of `nnx.split(model, nnx.Param, ...)` (an `nnx.State`, or its
`nnx.to_pure_dict(state)`; both work, and updates keep the structure of what was passed):

    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = make_optimizer(label_params(params), {
        'encoder': GroupConfig(lr=3e-5, warmup_steps=100, decay='linear', decay_steps=1000),
        'rating_head': GroupConfig(lr=1e-3, decay='cosine', decay_steps=1000),
        'discriminator': GroupConfig(lr=1e-3),        # constant
        # 'encoder': GroupConfig(frozen=True) freezes it
    }, max_grad_norm=1.0)
    opt_state = opt.tx.init(params)
    updates, opt_state = opt.tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    lrs = opt.learning_rates(step)   # {'encoder': lr, ...} for logging; 0 for frozen groups

The transformation is, in order:
  1. frozen groups' gradients set to zero (so they do not count in the clipping norm);
  2. `optax.clip_by_global_norm(max_grad_norm)` over all remaining gradients;
  3. `optax.multi_transform`: per group AdamW (`optax.adamw`) with linear warmup from 0 then
     cosine / linear decay / constant, or `optax.set_to_zero()` for a frozen group (no Adam state).
Schedules count the updates applied since `tx.init` (optax's own counters): `step` in
`learning_rates(step)` is that number, 0 for the first update.

LoRA adapters (`models/lora.py`) are labelled 'lora' wherever they sit (a 'lora' path segment,
`DEFAULT_SEGMENT_GROUPS`): freezing 'encoder' then trains only the adapters and the heads.

Weight decay (decoupled, AdamW) follows the BERT recipe: every parameter is decayed except biases
and LayerNorm parameters. The rule used (`decay_mask`) is "ndim >= 2 and the path matches none of
`DEFAULT_NO_DECAY_PATTERNS`": 1-D parameters (all biases, LayerNorm scales and biases) are never
decayed; the patterns also catch biases/LayerNorms by name. Embedding tables (2-D) are decayed, as
in BERT; pass `decay_mask_fn=functools.partial(decay_mask, exclude=(..., r'embed'))` to change it.

Frozen groups and phases: freezing removes that group's Adam state, so a phase that unfreezes a
group builds a new optimiser (and state) for the phase.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "DEFAULT_GROUP_PREFIXES", "DEFAULT_SEGMENT_GROUPS", "DEFAULT_NO_DECAY_PATTERNS", "DECAY_KINDS", "GroupConfig",
    "Optimizer", "param_path_name", "label_params", "decay_mask", "lr_schedule", "make_optimizer",
]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]

# Top-level attribute of the recommender -> optimiser group.
DEFAULT_GROUP_PREFIXES: Mapping[str, str] = {
    "encoder": "encoder",
    "rating_head": "rating_head",
    "discriminator": "discriminator",
}
# A path segment -> group, winning over the prefixes: LoRA adapters (models/lora.py) live under
# a 'lora' segment inside the encoder ('encoder/encoder/layer/0/attention/query/lora/a') but are
# their own group, so a phase can freeze the base encoder and train only them.
DEFAULT_SEGMENT_GROUPS: Mapping[str, str] = {"lora": "lora"}
DEFAULT_NO_DECAY_PATTERNS: tuple[str, ...] = (r"(^|/)bias$", r"(?i)layer_?norm")
DECAY_KINDS = ("cosine", "linear", "constant")


# ---------------------------------------------------------------------------- paths and labels

def param_path_name(path: Sequence[Any]) -> str:
  """'encoder/layers/0/kernel' for a jax key path (the `.value` of nnx Variables is dropped)."""
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      if k.name != "value":  # nnx.Variable's leaf
        parts.append(k.name)
    elif isinstance(k, jax.tree_util.FlattenedIndexKey):
      parts.append(str(k.key))
    else:
      parts.append(str(k))
  return "/".join(parts)


def label_params(params: Any, prefixes: Mapping[str, str] | None = None,
                 segment_groups: Mapping[str, str] | None = None) -> Any:
  """Optimiser-group label of every parameter, from its path.

  Args:
    params: an `nnx.State` (e.g. from `nnx.split(model, nnx.Param, ...)`), its pure dict, or any
      pytree of arrays.
    prefixes: path prefix -> group. A prefix is one or more whole path segments ('encoder',
      'encoder/embeddings'); the longest matching prefix wins. Default DEFAULT_GROUP_PREFIXES
      (top-level attributes encoder / rating_head / discriminator). A two-tower model adds e.g.
      {'user_tower': 'user_tower', 'item_projection': 'item_projection'}.
    segment_groups: path segment -> group, checked before the prefixes (default
      DEFAULT_SEGMENT_GROUPS: every LoRA parameter is in group 'lora').

  Returns:
    A pytree like `params` with a group name (str) at every leaf.

  Raises:
    ValueError: listing the parameter paths that match no prefix.
  """
  prefixes = dict(DEFAULT_GROUP_PREFIXES if prefixes is None else prefixes)
  segment_groups = dict(DEFAULT_SEGMENT_GROUPS if segment_groups is None else segment_groups)
  split = sorted(((tuple(p.strip("/").split("/")), g) for p, g in prefixes.items()),
                 key=lambda pg: -len(pg[0]))
  unmatched = []

  def label(path, _):
    segments = tuple(param_path_name(path).split("/"))
    for segment, group in segment_groups.items():
      if segment in segments:
        return group
    for prefix, group in split:
      if segments[:len(prefix)] == prefix:
        return group
    unmatched.append("/".join(segments))
    return None

  labels = jax.tree_util.tree_map_with_path(label, params)
  if unmatched:
    shown = ", ".join(repr(u) for u in unmatched[:10])
    more = f" (and {len(unmatched) - 10} more)" if len(unmatched) > 10 else ""
    raise ValueError(f"parameters with no optimiser group: {shown}{more}; group prefixes are "
                     f"{sorted(prefixes)} -- add the missing prefix to the mapping")
  return labels


def decay_mask(params: Any, *, exclude: Sequence[str] = DEFAULT_NO_DECAY_PATTERNS,
               min_ndim: int = 2) -> Any:
  """True where weight decay applies: ndim >= min_ndim and no `exclude` regex matches the path."""
  patterns = [re.compile(p) for p in exclude]

  def decays(path, leaf) -> bool:
    name = param_path_name(path)
    return leaf.ndim >= min_ndim and not any(p.search(name) for p in patterns)

  return jax.tree_util.tree_map_with_path(decays, params)


# ---------------------------------------------------------------------------- group config

@dataclasses.dataclass(frozen=True)
class GroupConfig:
  """Optimiser settings of one parameter group.

  lr: peak learning rate (reached after warmup).
  warmup_steps: linear warmup from 0 to lr (0 = start at lr).
  decay: 'constant' after warmup (default), or 'cosine' | 'linear' to end_lr_factor * lr at
    decay_steps.
  decay_steps: total schedule length *including* warmup; required for 'cosine' / 'linear', must
    be unset for 'constant'.
  end_lr_factor: final lr as a fraction of lr.
  weight_decay: decoupled (AdamW) weight decay, applied where `decay_mask` is True.
  b1, b2, eps: Adam.
  frozen: no update at all (`optax.set_to_zero()`); the other fields are then ignored.
  """
  lr: float = 1e-4
  warmup_steps: int = 0
  decay: str = "constant"
  decay_steps: int | None = None
  end_lr_factor: float = 0.0
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  frozen: bool = False

  def validate(self, where: str = "GroupConfig") -> None:
    """Raises ValueError naming `where.field` for an inconsistent setting."""
    if self.frozen:
      return
    if self.lr < 0:
      raise ValueError(f"{where}.lr must be >= 0, got {self.lr}")
    if self.warmup_steps < 0:
      raise ValueError(f"{where}.warmup_steps must be >= 0, got {self.warmup_steps}")
    if self.decay not in DECAY_KINDS:
      raise ValueError(f"{where}.decay must be one of {DECAY_KINDS}, got {self.decay!r}")
    if self.decay == "constant":
      if self.decay_steps is not None:
        raise ValueError(f"{where}.decay_steps={self.decay_steps} has no effect with "
                         f"decay='constant'; set {where}.decay to 'cosine' or 'linear'")
    elif self.decay_steps is None or self.decay_steps <= self.warmup_steps:
      raise ValueError(f"{where}.decay_steps must be > warmup_steps ({self.warmup_steps}) for "
                       f"decay={self.decay!r}, got {self.decay_steps}")
    if not 0.0 <= self.end_lr_factor <= 1.0:
      raise ValueError(f"{where}.end_lr_factor must be in [0, 1], got {self.end_lr_factor}")
    if self.weight_decay < 0:
      raise ValueError(f"{where}.weight_decay must be >= 0, got {self.weight_decay}")

  @classmethod
  def from_dict(cls, spec: Any, where: str = "group") -> GroupConfig:
    """From a GroupConfig, mapping or ConfigDict; bad or unknown keys raise ValueError naming them."""
    if isinstance(spec, cls):
      spec.validate(where)
      return spec
    if hasattr(spec, "to_dict"):
      spec = spec.to_dict()
    if not isinstance(spec, Mapping):
      raise ValueError(f"{where}: expected a mapping of optimiser settings, got {type(spec).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(spec) - known)
    if unknown:
      raise ValueError(f"{where}: unknown key(s) {[f'{where}.{k}' for k in unknown]}; "
                       f"allowed: {sorted(known)}")
    cfg = cls(**spec)
    cfg.validate(where)
    return cfg


def lr_schedule(cfg: GroupConfig) -> Schedule:
  """Learning rate of one group as a function of its update count (0 for a frozen group)."""
  cfg.validate()
  if cfg.frozen:
    return optax.constant_schedule(0.0)
  end = cfg.lr * cfg.end_lr_factor
  n = None if cfg.decay == "constant" else cfg.decay_steps - cfg.warmup_steps
  if cfg.decay == "cosine":
    after = optax.cosine_decay_schedule(cfg.lr, n, alpha=cfg.end_lr_factor)
  elif cfg.decay == "linear":
    after = optax.linear_schedule(cfg.lr, end, n)
  else:
    after = optax.constant_schedule(cfg.lr)
  if cfg.warmup_steps == 0:
    return after
  warmup = optax.linear_schedule(0.0, cfg.lr, cfg.warmup_steps)
  return optax.join_schedules([warmup, after], [cfg.warmup_steps])


# ---------------------------------------------------------------------------- the optimiser

class Optimizer(NamedTuple):
  """`tx`: the optax transformation. `lr_schedules`: group -> schedule (for logging).

  `trainable`: params -> a bool pytree like them, False for the parameters of frozen groups
  (None: all train). The train step differentiates only the True leaves (`train/trainable.py`):
  a frozen group's weight gradients are never computed, and `tx` gets zeros in their place.
  """
  tx: optax.GradientTransformation
  lr_schedules: dict[str, Schedule]
  trainable: Callable[[Any], Any] | None = None

  def learning_rates(self, step: jax.typing.ArrayLike) -> dict[str, jax.Array]:
    """Each group's learning rate at update `step` (jit-friendly)."""
    return {g: jnp.asarray(s(step), jnp.float32) for g, s in self.lr_schedules.items()}


def make_optimizer(labels: Any | Callable[[Any], Any],
                   groups: Mapping[str, GroupConfig | Mapping[str, Any]], *,
                   max_grad_norm: float | None = 1.0,
                   decay_mask_fn: Callable[[Any], Any] = decay_mask) -> Optimizer:
  """Builds the per-group AdamW optimiser described in the module docstring.

  Args:
    labels: a pytree of group names matching the params (from `label_params`), or a function
      params -> such a pytree (e.g. `label_params` itself).
    groups: group name -> GroupConfig (or a mapping/ConfigDict of its fields). Every label must
      have a group; groups without parameters are allowed (and cost nothing).
    max_grad_norm: global-norm clipping threshold over the trainable gradients; None disables.
    decay_mask_fn: params -> bool pytree, True where weight decay applies.

  Raises:
    ValueError: a label without a group config, or a bad group config (naming `groups.NAME.key`).
  """
  cfgs = {name: GroupConfig.from_dict(c, where=f"groups.{name}") for name, c in groups.items()}

  def check(lab: Any) -> Any:
    missing = sorted(set(jax.tree.leaves(lab)) - set(cfgs))
    if missing:
      raise ValueError(f"parameters labelled {missing} have no optimiser group config; "
                       f"configured groups: {sorted(cfgs)}")
    return lab

  labels_fn = (lambda p: check(labels(p))) if callable(labels) else (lambda p: labels)
  if not callable(labels):
    check(labels)

  def group_tx(cfg: GroupConfig) -> optax.GradientTransformation:
    if cfg.frozen:
      return optax.set_to_zero()
    return optax.adamw(lr_schedule(cfg), b1=cfg.b1, b2=cfg.b2, eps=cfg.eps,
                       weight_decay=cfg.weight_decay, mask=decay_mask_fn)

  stages = []
  frozen = {name for name, c in cfgs.items() if c.frozen}
  if frozen and max_grad_norm is not None:
    # Zero frozen gradients first so they do not inflate the global norm of the clip below.
    trainability = lambda p: jax.tree.map(lambda g: "frozen" if g in frozen else "trainable",
                                          labels_fn(p))
    stages.append(optax.multi_transform(
        {"trainable": optax.identity(), "frozen": optax.set_to_zero()}, trainability))
  if max_grad_norm is not None:
    if max_grad_norm <= 0:
      raise ValueError(f"max_grad_norm must be positive or None, got {max_grad_norm}")
    stages.append(optax.clip_by_global_norm(max_grad_norm))
  stages.append(optax.multi_transform({n: group_tx(c) for n, c in cfgs.items()}, labels_fn))
  trainable = lambda p: jax.tree.map(lambda g: g not in frozen, labels_fn(p))
  return Optimizer(optax.chain(*stages), {n: lr_schedule(c) for n, c in cfgs.items()},
                   trainable if frozen else None)
