"""Token attributions summed into the units a person reads, and token rows batched.

Units (`segments.py`): each history entry (k = 0 the newest), the profile facts, the candidate,
and 'template' (special tokens and the template prefix). Summing keeps completeness: the units'
totals add up to the tokens' total.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from crossrec_jax.explain import segments as seg_lib

__all__ = ["unit_sums", "collate_tokens", "bucket_length"]


def unit_sums(attributions: np.ndarray, segments: np.ndarray,
              num_history: int | None = None) -> dict[str, np.ndarray]:
  """'history' [B, K] (NaN beyond a row's entries), 'profile', 'candidate', 'template' [B] from
  per-token attributions [B, L] and segments [B, L] (-1 padding counts nowhere)."""
  attributions = np.asarray(attributions, np.float64)
  segments = np.asarray(segments)
  counts = np.array([seg_lib.num_entries(s) for s in segments], np.int64)
  k = int(counts.max()) if num_history is None and len(counts) else int(num_history or 0)
  sums = lambda mask: np.where(mask, attributions, 0.0).sum(axis=1)
  history = np.stack([sums(segments == seg_lib.HISTORY + j) for j in range(k)], axis=1) \
      if k else np.zeros((len(segments), 0))
  history[np.arange(k)[None, :] >= counts[:, None]] = np.nan
  return {"history": history, "profile": sums(segments == seg_lib.PROFILE),
          "candidate": sums(segments == seg_lib.CANDIDATE),
          "template": sums(segments == seg_lib.SPECIAL)}


def bucket_length(longest: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= longest (a batch shape the jitted functions already know), else
  longest rounded up to a multiple of 8."""
  fits = [b for b in sorted(buckets) if b >= longest]
  return int(fits[0]) if fits else int(-(-longest // 8) * 8)


def collate_tokens(input_ids: Sequence[np.ndarray], segments: Sequence[np.ndarray], *,
                   domain: int = 1, buckets: Sequence[int] = ()) -> dict[str, Any]:
  """Token rows -> an editable batch: 'input_ids', 'attention_mask', 'token_type_ids',
  'segments' (-1 padding) [B, Lb] and 'domain' [B]; Lb from `buckets` (`bucket_length`). Token
  types come from the segments as the training batches' do (`data/pipeline.token_types`)."""
  from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  n = len(input_ids)
  length = bucket_length(max(len(x) for x in input_ids), buckets)
  batch = {"input_ids": np.zeros((n, length), np.int32),
           "attention_mask": np.zeros((n, length), np.int32),
           "token_type_ids": np.zeros((n, length), np.int32),
           "segments": np.full((n, length), -1, np.int32),
           "domain": np.full(n, domain, np.int32)}
  for i, ids in enumerate(input_ids):
    m = len(ids)
    if len(segments[i]) != m:
      raise ValueError(f"row {i}: {len(segments[i])} segments for {m} tokens")
    batch["input_ids"][i, :m] = ids
    batch["attention_mask"][i, :m] = 1
    batch["segments"][i, :m] = segments[i]
    batch["token_type_ids"][i, :m] = pipeline.token_types(segments[i])
  return batch
