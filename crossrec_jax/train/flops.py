"""FLOPs of a training step, peak FLOP/s, and MFU.

The analytic count of a BERT step (`dense_params`, `token_flops`, `step_flops`) lives beside the
model it counts, `models/bert_flops.py` (re-exported here); a task reports its step's FLOPs
through `Task.step_flops` (tasks/base.py).

MFU = achieved model FLOP/s / peak FLOP/s of the chips used. Peaks are dense bfloat16 numbers
from the vendors' data sheets (`PEAK_TFLOPS`); a float32 run is still divided by the bf16 peak
(the convention: MFU says how much of the chip's matmul capability you used). CPUs have no entry:
report TFLOP/s only.
"""

from __future__ import annotations

import re
from typing import Any

import jax

from crossrec_jax.models.bert_flops import dense_params, step_flops, token_flops  # noqa: F401  (re-exported)

__all__ = [
    "PEAK_TFLOPS", "dense_params", "token_flops", "step_flops", "xla_flops", "peak_flops",
    "mfu",
]

# device_kind regex (first match wins) -> dense bf16 TFLOP/s per chip.
PEAK_TFLOPS: tuple[tuple[str, float, str], ...] = (
    (r"H100.*PCIe", 756.0, "NVIDIA H100 PCIe"),
    (r"H100|H200|GH200", 989.0, "NVIDIA H100/H200 SXM"),
    (r"A100", 312.0, "NVIDIA A100"),
    (r"TPU v4", 275.0, "TPU v4"),
    (r"TPU v5 ?lite|TPU v5e", 197.0, "TPU v5e"),
    (r"TPU v5p|TPU v5$", 459.0, "TPU v5p"),
    (r"TPU v6 ?lite|TPU v6e", 918.0, "TPU v6e"),
)


def xla_flops(compiled: Any) -> float | None:
  """`compiled.cost_analysis()['flops']` (per device for a sharded program); None if absent.

  `compiled` is `jitted.lower(*args).compile()`. Older jax returned a list of dicts.
  """
  costs = compiled.cost_analysis()
  if isinstance(costs, (list, tuple)):
    costs = costs[0] if costs else None
  if not costs or "flops" not in costs:
    return None
  return float(costs["flops"])


def peak_flops(device: Any | None = None) -> tuple[float | None, str]:
  """(dense bf16 peak FLOP/s of one chip, the table entry's name); (None, kind) when unknown."""
  device = jax.devices()[0] if device is None else device
  kind = getattr(device, "device_kind", str(device))
  for pattern, tflops, name in PEAK_TFLOPS:
    if re.search(pattern, kind):
      return tflops * 1e12, name
  return None, kind


def mfu(flops_per_step: float, step_seconds: float, num_chips: int,
        peak_per_chip: float | None) -> float | None:
  """Model FLOPs utilisation in [0, 1]; None without a peak (CPU)."""
  if peak_per_chip is None or step_seconds <= 0:
    return None
  return flops_per_step / step_seconds / (num_chips * peak_per_chip)
