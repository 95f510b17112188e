"""The transfer methods as phase lists: written once, used by both architectures' configs.

  target_only  target rating/ranking loss (the no-transfer reference).
  source_only  source loss only (zero-shot on the target).
  finetune     a source phase, then a target phase (fresh optimiser).
  dann         source loss + 0.1 x the domain loss behind gradient reversal (DANN ramp, gamma
               10); target rows feed only the domain loss (unsupervised adaptation).
  joint        source + target losses in every step.
  joint_dann   joint + the DANN domain loss.

The phase lengths are the architecture's and preset's: `source` (a source-only phase, and dann),
`target` (a target-only phase) and `joint` (a phase on both domains' labels).
"""

from __future__ import annotations

from collections.abc import Callable

import ml_collections

from crossrec_jax import config_base

METHODS = ("target_only", "source_only", "finetune", "dann", "joint", "joint_dann")
# Methods that read no target rating: a study runs them at 0% labels only.
LABEL_FREE = ("source_only", "dann")
DOMAIN_WEIGHT = 0.1


def phases(method: str, *, source: int = 0, target: int = 0,
           joint: int = 0) -> list[ml_collections.ConfigDict]:
  """The phases of `method`, with the given lengths (a length the method needs must be > 0)."""
  phase = config_base.phase

  def steps(kind: str, n: int) -> int:
    if n <= 0:
      raise ValueError(f"method {method!r} needs {kind} steps > 0")
    return n

  if method == "target_only":
    return [phase("target", steps("target", target), target=1.0)]
  if method == "source_only":
    return [phase("source", steps("source", source), source=1.0)]
  if method == "finetune":
    return [phase("source", steps("source", source), source=1.0),
            phase("target", steps("target", target), target=1.0)]
  if method == "dann":
    return [phase("dann", steps("source", source), source=1.0, domain=DOMAIN_WEIGHT,
                  alignment="dann")]
  if method == "joint":
    return [phase("joint", steps("joint", joint), source=1.0, target=1.0)]
  if method == "joint_dann":
    return [phase("joint_dann", steps("joint", joint), source=1.0, target=1.0,
                  domain=DOMAIN_WEIGHT, alignment="dann")]
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def apply(config: ml_collections.ConfigDict, method: str, **lengths: int
          ) -> ml_collections.ConfigDict:
  """Sets `config.method` and `config.phases` to `method`'s; returns `config`."""
  config.method = method
  config.phases = phases(method, **lengths)
  return config


def bi_encoder_config(method: str) -> Callable[..., ml_collections.ConfigDict]:
  """The `get_config(preset)` of the bi-encoder trained by `method` (the `bi_<method>` configs):
  `config_base.base_config(preset, kind="bi_encoder")` with the method's phases at the
  bi-encoder's lengths (`config_base.BI_STEPS`)."""
  def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = config_base.base_config(preset, kind="bi_encoder")
    return apply(config, method, **config_base.BI_STEPS[preset])

  return get_config


def hybrid_config(method: str) -> Callable[..., ml_collections.ConfigDict]:
  """The `get_config(preset)` of the hybrid text + ID model trained by `method` (the
  `hybrid_<method>` configs): `config_base.base_config(preset, kind="hybrid")` with the method's
  phases at `config_base.HYBRID_STEPS`, plus `config_base.HYBRID_TRANSFER` when a phase trains
  on source labels."""
  def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
    config = apply(config_base.base_config(preset, kind="hybrid"), method,
                   **config_base.HYBRID_STEPS[preset])
    if config_base.labels_used(config)[0]:  # a transfer method
      config.model.hybrid.update(config_base.HYBRID_TRANSFER)
    return config

  return get_config
