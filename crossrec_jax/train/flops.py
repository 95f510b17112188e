"""FLOPs of a training step (analytic, cross-checked against XLA), peak FLOP/s, and MFU.

Analytic count for one training step of the BERT cross-encoder on a [B, s] batch (padded: the
hardware computes every padded position), d = hidden size, i = intermediate size, L = layers:

    N_dense = L * (4 d^2 + 2 d i)          the matmul weights a token passes through
    per token:    6 * N_dense              forward 2 FLOPs per weight (multiply + add), backward 4
                                           (gradient w.r.t. the input and w.r.t. the weight)
                + 12 * L * s * d           attention: Q K^T and P V are 2 s d each per token per
                                           layer forward (4 s d), x3 for training
    per example:  6 * N_heads              rating head + discriminator MLPs on the pooled vector
                                           (and the BERT pooler d^2 when pooling='pooler')

    step FLOPs = B * s * (6 N_dense + 12 L s d) + B * 6 N_heads

Not counted (as in the PaLM/MaxText MFU convention): embedding lookups, LayerNorm, softmax,
GELU, dropout, the optimiser update -- elementwise work that is small next to the matmuls for
d >= 256, and rematerialisation's recomputed forward (MFU counts model FLOPs, not hardware
FLOPs). XLA's `cost_analysis()['flops']` counts everything it compiles, so it is a little
higher; `tests/test_flops.py` checks the two agree within 15% on a small BERT.

MFU = achieved model FLOP/s / peak FLOP/s of the chips used. Peaks are dense bfloat16 numbers
from the vendors' data sheets (`PEAK_TFLOPS`); a float32 run is still divided by the bf16 peak
(the convention: MFU says how much of the chip's matmul capability you used). CPUs have no entry:
report TFLOP/s only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax

from crossrec_jax.models.bert import BertConfig

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


def dense_params(config: BertConfig) -> int:
  """Weights of the encoder's per-token matmuls: L * (4 d^2 + 2 d i) (biases excluded)."""
  d, i = config.hidden_size, config.intermediate_size
  return config.num_hidden_layers * (4 * d * d + 2 * d * i)


def token_flops(config: BertConfig, seq_len: int) -> float:
  """Training FLOPs per (padded) token: 6 N_dense + 12 L s d."""
  return 6.0 * dense_params(config) + 12.0 * config.num_hidden_layers * seq_len * config.hidden_size


def _mlp_weights(d_in: int, widths: Sequence[int]) -> int:
  dims = [d_in, *widths, 1]
  return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def step_flops(config: BertConfig, batch: int, seq_len: int, *,
               head_widths: Sequence[Sequence[int]] = ((256,), (256,)),
               pooler: bool = False) -> float:
  """Model FLOPs of one training step on `batch` sequences of (padded) length `seq_len`.

  Args:
    config: the encoder's BertConfig.
    batch: rows encoded in the step (source + target rows of a joint step).
    seq_len: padded sequence length of the batch.
    head_widths: hidden widths of each MLP head on the pooled vector (rating head,
      discriminator); () for none.
    pooler: whether the BERT pooler (d x d) is in the loss (pooling='pooler').
  """
  per_example = sum(_mlp_weights(config.hidden_size, w) for w in head_widths)
  if pooler:
    per_example += config.hidden_size ** 2
  return batch * seq_len * token_flops(config, seq_len) + batch * 6.0 * per_example


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
