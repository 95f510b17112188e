"""The run record's config hash: what a resumed run must not change, and which keys differ.

A checkpoint's meta holds `config_hash(config)`; resuming with a config of another hash is an
error that names the differing keys (`config_diff`). Keys that do not change the trajectory
(logging, evaluation and checkpoint intervals, the mesh) are left out, so a resumed run may
change them.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import ml_collections

__all__ = ["RUNTIME_KEYS", "RUNTIME_SECTIONS", "config_hash", "config_diff"]

# train.* keys that do not change the trajectory: a resumed run may change them.
RUNTIME_KEYS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "check_finite_every_step", "final_eval", "progress_bar", "tensorboard",
                "compilation_cache_dir", "profile_steps")
# Top-level keys a resumed run may change: the mesh (a checkpoint restores onto any mesh; the
# trajectory then agrees to float rounding, tests/test_sharding_equivalence.py).
RUNTIME_SECTIONS = ("mesh",)


def config_hash(config: ml_collections.ConfigDict) -> str:
  """sha256 of the config minus `RUNTIME_KEYS` (what a resumed run must not change)."""
  d = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_SECTIONS}
  d["train"] = {k: v for k, v in d.get("train", {}).items() if k not in RUNTIME_KEYS}
  return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  if isinstance(d, (list, tuple)) and any(isinstance(v, dict) for v in d):
    out = {}
    for i, v in enumerate(d):
      out.update(_flat(v, f"{prefix[:-1]}[{i}]."))
    return out
  return {prefix[:-1]: d}


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  """The flattened keys (`a.b`, `phases[0].steps`) whose values differ, runtime keys excepted."""
  a, b = _flat(json.loads(json.dumps(old, default=str))), _flat(json.loads(json.dumps(new, default=str)))
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and not any(k == f"train.{r}" for r in RUNTIME_KEYS)
                and k.split(".")[0] not in RUNTIME_SECTIONS)

