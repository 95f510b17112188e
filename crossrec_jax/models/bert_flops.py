"""Analytic model FLOPs of a BERT or ModernBERT training step (checked against XLA in tests/test_flops.py).

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

ModernBERT (`models/modernbert.py`) differs only in N_dense: its MLP is GeGLU (`Wi` maps d to
2i: the input and its gate; `Wo` maps i back), so N_dense = L * (4 d^2 + 3 d i). Its sliding-window
layers are counted as global ones because they are computed so: the full s x s scores, masked
outside the window (`ModernBertAttention`); a banded kernel would count 12 L w d there instead.

Not counted (as in the PaLM/MaxText MFU convention): embedding lookups, LayerNorm, softmax,
GELU, dropout, the optimiser update -- elementwise work that is small next to the matmuls for
d >= 256, and rematerialisation's recomputed forward (MFU counts model FLOPs, not hardware
FLOPs). XLA's `cost_analysis()['flops']` counts everything it compiles, so it is a little
higher; `tests/test_flops.py` checks the two agree within 15% on a small BERT.
"""

from __future__ import annotations

from collections.abc import Sequence

from crossrec_jax.models.bert import BertConfig
from crossrec_jax.models.modernbert import ModernBertConfig

EncoderConfig = BertConfig | ModernBertConfig

__all__ = ["dense_params", "token_flops", "step_flops"]


def dense_params(config: EncoderConfig) -> int:
  """Weights of the encoder's per-token matmuls (biases excluded): L * (4 d^2 + 2 d i) for BERT,
  L * (4 d^2 + 3 d i) for ModernBERT (GeGLU's gate doubles the input projection)."""
  d, i = config.hidden_size, config.intermediate_size
  mlp = 3 * d * i if isinstance(config, ModernBertConfig) else 2 * d * i
  return config.num_hidden_layers * (4 * d * d + mlp)


def token_flops(config: EncoderConfig, seq_len: int) -> float:
  """Training FLOPs per (padded) token: 6 N_dense + 12 L s d."""
  return 6.0 * dense_params(config) + 12.0 * config.num_hidden_layers * seq_len * config.hidden_size


def _mlp_weights(d_in: int, widths: Sequence[int]) -> int:
  dims = [d_in, *widths, 1]
  return sum(a * b for a, b in zip(dims[:-1], dims[1:]))


def step_flops(config: EncoderConfig, batch: int, seq_len: int, *,
               head_widths: Sequence[Sequence[int]] = ((256,), (256,)),
               pooler: bool = False) -> float:
  """Model FLOPs of one training step on `batch` sequences of (padded) length `seq_len`.

  Args:
    config: the encoder's BertConfig or ModernBertConfig.
    batch: rows encoded in the step (source + target rows of a joint step).
    seq_len: padded sequence length of the batch.
    head_widths: hidden widths of each MLP head on the pooled vector (rating head,
      discriminator); () for none.
    pooler: whether the BERT pooler (d x d) is in the loss (pooling='pooler'; ModernBERT has none).
  """
  per_example = sum(_mlp_weights(config.hidden_size, w) for w in head_widths)
  if pooler:
    per_example += config.hidden_size ** 2
  return batch * seq_len * token_flops(config, seq_len) + batch * 6.0 * per_example
