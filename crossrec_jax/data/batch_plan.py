"""Batch plans: which examples form each batch, padded to which length bucket (pure numpy).

`train_plan` (per epoch, deterministic from (seed, stream, epoch): shuffle, drop the remainder,
sort windows by length, shuffle the batches) and `eval_plan` (every example once, length-sorted,
the last batch padded with -1) feed `pipeline.py`'s grain datasets; `choose_buckets` picks the
few fixed lengths a step compiles for. The module docstring of `pipeline.py` has the why.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

__all__ = ["BatchPlan", "bucket_of", "choose_buckets", "train_plan", "eval_plan"]

@dataclasses.dataclass(frozen=True)
class BatchPlan:
  """indices [num_batches, B] into the source (-1 = padding row); seq_len [num_batches]."""

  indices: np.ndarray
  seq_len: np.ndarray


def bucket_of(lengths: np.ndarray, buckets: Sequence[int]) -> np.ndarray:
  """Smallest bucket >= each length; an example longer than every bucket is an error."""
  edges = np.asarray(sorted(buckets), np.int32)
  lengths = np.asarray(lengths)
  too_long = np.flatnonzero(lengths > edges[-1])
  if too_long.size:
    i = int(too_long[0])
    raise ValueError(f"{too_long.size} example(s) longer than the largest bucket {edges[-1]} "
                     f"(first: index {i}, {int(lengths[i])} tokens): raise the buckets or "
                     "tokenise with max_len <= the largest bucket")
  return edges[np.searchsorted(edges, lengths)]


def choose_buckets(lengths: np.ndarray, num_buckets: int, multiple: int = 8) -> tuple[int, ...]:
  """The `num_buckets` lengths (multiples of `multiple`) that minimise total padded tokens when
  each example is padded to its own bucket (the bound that length-sorted batches approach)."""
  lengths = np.asarray(lengths)
  cands = np.arange(multiple, -(-int(lengths.max()) // multiple) * multiple + 1, multiple)
  cum = np.concatenate([[0], np.cumsum(np.bincount(np.searchsorted(cands, lengths),
                                                   minlength=len(cands)))])
  c, k = len(cands), min(num_buckets, len(cands))
  # cost[b, j]: least padded tokens of the examples up to cands[j], b buckets, the top one cands[j].
  cost = np.full((k + 1, c), np.inf)
  prev = np.zeros((k + 1, c), np.int64)
  cost[1] = cum[1:] * cands
  for b in range(2, k + 1):
    for j in range(1, c):
      options = cost[b - 1, :j] + (cum[j + 1] - cum[1:j + 1]) * cands[j]
      prev[b, j] = int(np.argmin(options))
      cost[b, j] = options[prev[b, j]]
  b = int(np.argmin(cost[1:, c - 1])) + 1
  chosen = [c - 1]
  while b > 1:
    chosen.append(int(prev[b, chosen[-1]]))
    b -= 1
  return tuple(int(cands[j]) for j in reversed(chosen))


def train_plan(lengths: np.ndarray, batch_size: int, buckets: Sequence[int], *, seed: int,
               epoch: int, window: int = 16, stream: int = 0) -> BatchPlan:
  """One epoch's batches: shuffle, drop the remainder, sort windows by length, shuffle batches."""
  n = len(lengths)
  if n < batch_size:
    raise ValueError(f"{n} examples < batch_size {batch_size}: no full training batch")
  rng = np.random.default_rng([seed, stream, epoch])
  order = rng.permutation(n)[: (n // batch_size) * batch_size]
  span = max(1, window) * batch_size
  for start in range(0, len(order), span):
    chunk = order[start:start + span]
    order[start:start + span] = chunk[np.argsort(lengths[chunk], kind="stable")]
  indices = order.reshape(-1, batch_size)[rng.permutation(n // batch_size)]
  return BatchPlan(indices, bucket_of(lengths[indices].max(axis=1), buckets))


def eval_plan(lengths: np.ndarray, batch_size: int, buckets: Sequence[int]) -> BatchPlan:
  """Every example once, sorted by length; the last batch padded to B with -1."""
  n = len(lengths)
  order = np.argsort(lengths, kind="stable")
  num_batches = -(-n // batch_size)
  indices = np.full(num_batches * batch_size, -1, np.int64)
  indices[:n] = order
  indices = indices.reshape(num_batches, batch_size)
  longest = np.where(indices >= 0, lengths[np.maximum(indices, 0)], 0).max(axis=1)
  return BatchPlan(indices, bucket_of(longest, buckets))
