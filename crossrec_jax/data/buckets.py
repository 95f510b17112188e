"""Length buckets fitted to the data (`config.data.auto_buckets`), and the real-token share.

The fixed `config.data.buckets` pad every batch to one of a few lengths chosen by hand. With
`auto_buckets = k > 0` the k lengths are instead chosen from the prepared examples' token counts
(`pipeline.choose_buckets`: multiples of 4 that minimise the padded tokens when each example sits
in its own bucket), over every example set, so the largest bucket fits every example the run
batches (training and evaluation alike). Still k compiled step shapes, never one per batch.
Multiples of 4, not 8: the demo's examples are 20-40 tokens, where an 8-token grid leaves 5
candidate lengths and caps the real-token share at 0.885 (measured, bench_pipeline.py --demo cpu);
the matmuls' row count is batch x length, a multiple of 8 for any even batch.

`token_share` measures what a batch stream computes: real (non-padding) tokens over all tokens,
padding rows included; `experiments/bench_pipeline.py --demo` reports it for the demo's batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from crossrec_jax.data import pipeline

__all__ = ["fit_buckets", "token_share"]


def fit_buckets(sets: Mapping[str, Any], num_buckets: int, multiple: int = 4) -> tuple[int, ...]:
  """`num_buckets` bucket lengths fitted to the token counts of every set in `sets`."""
  if num_buckets < 1:
    raise ValueError(f"config.data.auto_buckets must be >= 1 to fit buckets, got {num_buckets}")
  lengths = [pipeline.source_lengths(pipeline.as_source(s)) for s in sets.values() if len(s)]
  if not lengths:
    raise ValueError("config.data.auto_buckets: no examples to fit bucket lengths to")
  return pipeline.choose_buckets(np.concatenate(lengths), num_buckets, multiple)


def token_share(batches: Iterable[Any]) -> dict[str, float]:
  """Real and padded token counts of a stream of batches (dicts, or tuples of dicts)."""
  real = padded = rows = 0
  shapes = set()
  for item in batches:
    for b in (item if isinstance(item, tuple) else (item,)):
      real += int(np.sum(b["attention_mask"]))
      padded += int(b["attention_mask"].size)
      rows += len(b["attention_mask"])
      shapes.add(int(b["attention_mask"].shape[1]))
  if not padded:
    raise ValueError("token_share: no batches")
  return {"real_tokens": real, "padded_tokens": padded, "rows": rows,
          "real_token_share": real / padded, "padded_tokens_per_row": padded / rows,
          "seq_lens": sorted(shapes)}
