"""Phases as data: validation of `config.phases`, and what each phase uses and optimises.

    phases = validate_phases(config)          # errors name `phases[i].key`
    use_source, use_target = phase_uses(phase)
    opt = phase_optimizer(config, phase, labels, where)

Each phase (`config_base.phase`) names its steps, loss weights (optax-style schedules), per-group
learning rates, frozen groups and alignment; `selection_metric` reads `train.select`.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

from crossrec_jax import config_base
from crossrec_jax.objectives import losses
from crossrec_jax.train import optim
from crossrec_jax.train import schedules

__all__ = ["optimizer_groups", "selection_metric", "validate_phases", "phase_alignment",
           "phase_uses", "phase_optimizer", "is_zero"]


def optimizer_groups(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The run's optimiser groups: `config_base.GROUPS` plus every other section of
  `config.optimizer` (an architecture's own groups, e.g. two towers' item_tower, user_tower).

  A group is the model's top-level attribute of the same name (`optim.label_params`).
  """
  extra = sorted(k for k, v in config.optimizer.items()
                 if isinstance(v, ml_collections.ConfigDict) and k not in config_base.GROUPS)
  return tuple(config_base.GROUPS) + tuple(extra)


def selection_metric(config: ml_collections.ConfigDict) -> str | None:
  """The target-valid metric of `train.select` ('NDCG@10' or 'target_valid/NDCG@10'); None = ''."""
  select = str(config.train.get("select", "") or "")
  if not select:
    return None
  split, _, metric = select.rpartition("/")
  if split not in ("", "target_valid") or not metric:
    raise ValueError(f"train.select={select!r}: give a target-valid metric, 'METRIC' or "
                     "'target_valid/METRIC' (e.g. 'NDCG@10'), or '' for the last parameters")
  return metric


def validate_phases(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The phases, checked: unknown keys, groups and alignments are errors naming `phases[i].key`."""
  groups = optimizer_groups(config)
  phases = list(config.phases)
  if not phases:
    raise ValueError("config.phases is empty: an experiment must define at least one phase")
  names = set()
  for i, p in enumerate(phases):
    where = f"phases[{i}]"
    if not isinstance(p, ml_collections.ConfigDict):
      raise ValueError(f"{where} must be a ConfigDict (use config_base.phase(...)), got {type(p)}")
    unknown = sorted(set(p.keys()) - set(config_base.PHASE_KEYS))
    if unknown:
      raise ValueError(f"{where}: unknown key(s) {[f'{where}.{k}' for k in unknown]}; "
                       f"allowed: {list(config_base.PHASE_KEYS)}")
    missing = sorted(set(config_base.PHASE_KEYS) - set(p.keys()))
    if missing:
      raise ValueError(f"{where}: missing key(s) {missing} (build phases with config_base.phase)")
    if p.name in names:
      raise ValueError(f"{where}.name: duplicate phase name {p.name!r}")
    names.add(p.name)
    if not isinstance(p.steps, int) or p.steps < 1:
      raise ValueError(f"{where}.steps must be a positive int, got {p.steps!r}")
    for key, allowed in (("weights", ("source", "target", "domain")), ("lr", groups)):
      extra = sorted(set(p[key].keys()) - set(allowed))
      if extra:
        raise ValueError(f"{where}.{key}: unknown key(s) {extra}; allowed: {list(allowed)}")
    bad = sorted(set(p.frozen) - set(groups))
    if bad:
      raise ValueError(f"{where}.frozen: unknown group(s) {bad}; groups: {list(groups)}")
    try:
      losses.make_alignment(p.alignment, **p.alignment_options.to_dict())
    except ValueError as e:
      raise ValueError(f"{where}.alignment: {e}") from None
    for k in ("source", "target", "domain"):
      schedules.loss_weight_schedule(p.weights[k], name=f"{where}.weights.{k}")
    if not any(not is_zero(p.weights[k]) for k in ("source", "target", "domain")):
      raise ValueError(f"{where}.weights: every loss weight is 0, the phase would train nothing")
  return phases


is_zero = config_base.is_constant_zero  # the one definition lives with the phase spec


def phase_alignment(phase: ml_collections.ConfigDict) -> losses.Alignment:
  """The phase's alignment; 'none' when its domain weight is a constant 0 (nothing to compute)."""
  if is_zero(phase.weights.domain):
    return losses.make_alignment("none")
  return losses.make_alignment(phase.alignment, **phase.alignment_options.to_dict())


def phase_uses(phase: ml_collections.ConfigDict) -> tuple[bool, bool]:
  """(use_source, use_target): a side is skipped when its weight is a constant 0 and the
  phase aligns nothing."""
  align = phase_alignment(phase).kind != "none"
  return (align or not is_zero(phase.weights.source),
          align or not is_zero(phase.weights.target))


def phase_optimizer(config: ml_collections.ConfigDict, phase: ml_collections.ConfigDict,
                    labels: Any, where: str) -> optim.Optimizer:
  """The phase's per-group AdamW: `config.optimizer` with the phase's lrs and frozen groups.

  A group no parameter is labelled with (`labels`) is frozen too: it has nothing to update
  (e.g. an encoder left out of the model because its outputs are cached),
  so it keeps no Adam state and logs lr 0.
  """
  present = set(jax.tree.leaves(labels))
  groups = {}
  for g in optimizer_groups(config):
    d = config.optimizer[g].to_dict()
    if phase.lr.get(g, 0.0) > 0:
      d["lr"] = float(phase.lr[g])
    if d["decay"] == "constant":
      d["decay_steps"] = None
    elif not d["decay_steps"]:
      d["decay_steps"] = int(phase.steps)
    d["frozen"] = g in phase.frozen or g not in present
    groups[g] = optim.GroupConfig.from_dict(d, where=f"optimizer.{g} (in {where})")
  return optim.make_optimizer(labels, groups, max_grad_norm=config.optimizer.max_grad_norm or None)

