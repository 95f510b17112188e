"""Ranking metrics: one positive among sampled candidates, and RecBole-style full ranking.

Candidate ranking (one positive per user, e.g. the leave-one-out test item among 99 negatives):
ranks are 0-based, and ties are counted *in expectation* under uniform random tie-breaking. With
g = #candidates scoring strictly higher than the positive and t = #other candidates tying with it,
the positive's rank is uniform on {g, ..., g + t}, so
  rank_of_positive = E[rank]            = g + t / 2
  HR@K             = P(rank < K)        = |{g..g+t} ∩ [0, K)| / (t + 1)
  NDCG@K           = E[1{rank<K} / log2(rank + 2)]   (exact average over the t + 1 positions)
  MRR              = E[1 / (rank + 1)]               (same)
Without ties these are the usual 1{rank<K}, 1/log2(rank+2), 1/(rank+1); a constant scorer gets
HR@K = K / C over C candidates, not 0 or 1. A user with one candidate has rank 0.

Full ranking (RecBole 1.x definitions, several positives per user): given each user's top-K list and
positive set, Hit@K = 1{any hit}, Precision@K = #hits / K, Recall@K = #hits / |pos|, MRR@K = 1 /
(first hit position + 1) or 0, NDCG@K = DCG / IDCG with DCG = sum over hits at 0-based position i of
1 / log2(i + 2) and IDCG the same for min(|pos|, K) hits at the top. Each is averaged over users.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def rank_counts(scores, positive_index=None, mask=None):
  """(greater, ties) per user: candidates scoring strictly above / equal to the positive.

  Args:
    scores: [U, C] candidate scores (numpy, or jax arrays: this function is jit-friendly).
    positive_index: None (the positive is column 0), an int, or a [U] integer array.
    mask: optional [U, C] bool, False for padding candidates that must not count.
  Returns:
    Two [U] integer arrays; `ties` excludes the positive itself.
  """
  # jax arrays and tracers (type module 'jaxlib...' / 'jax...') stay on device; the rest is numpy.
  xp = _jnp() if "jax" in type(scores).__module__ else np
  scores = xp.asarray(scores)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [users, candidates], got shape {scores.shape}")
  n_users, n_cand = scores.shape
  if positive_index is None:
    positive_index = 0
  pos = xp.broadcast_to(xp.asarray(positive_index), (n_users,))
  if xp is np:
    if np.isnan(scores).any():
      bad_row = int(np.flatnonzero(np.isnan(scores).any(axis=1))[0])
      raise ValueError(f"scores contain NaN (first in user row {bad_row})")
    if ((pos < 0) | (pos >= n_cand)).any():
      raise ValueError(f"positive_index out of range [0, {n_cand})")
  pos_score = xp.take_along_axis(scores, pos[:, None], axis=1)
  valid = xp.ones(scores.shape, bool) if mask is None else xp.asarray(mask, dtype=bool)
  if xp is np and mask is not None and not valid[np.arange(n_users), pos].all():
    raise ValueError("mask excludes the positive candidate of some user")
  is_pos = xp.arange(n_cand)[None, :] == pos[:, None]
  greater = ((scores > pos_score) & valid).sum(axis=1)
  ties = ((scores == pos_score) & valid & ~is_pos).sum(axis=1)
  return greater, ties


def _jnp():
  import jax.numpy as jnp  # Deferred: the numpy path must not pay for importing jax.
  return jnp


def rank_of_positive(scores, positive_index=None, mask=None) -> np.ndarray:
  """Expected 0-based rank of the positive, g + t/2 (float [U])."""
  greater, ties = rank_counts(scores, positive_index, mask)
  return np.asarray(greater, np.float64) + 0.5 * np.asarray(ties, np.float64)


def _gt(greater, ties) -> tuple[np.ndarray, np.ndarray]:
  g = np.asarray(greater, dtype=np.int64)
  t = np.zeros_like(g) if ties is None else np.broadcast_to(np.asarray(ties, dtype=np.int64), g.shape)
  if (g < 0).any() or (t < 0).any():
    raise ValueError("greater/ties counts must be non-negative integers")
  return g, t


def hit_at_k(greater, k: int, ties=None) -> np.ndarray:
  """Per-user P(rank < k). `greater` may be a plain integer rank when there are no ties."""
  g, t = _gt(greater, ties)
  return (np.minimum(g + t + 1, k) - np.minimum(g, k)) / (t + 1.0)


def ndcg_at_k(greater, k: int, ties=None) -> np.ndarray:
  """Per-user E[1{rank < k} / log2(rank + 2)] (one relevant item, so IDCG = 1)."""
  g, t = _gt(greater, ties)
  cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))])  # cum[n] = sum_{r<n}
  return (cum[np.minimum(g + t + 1, k)] - cum[np.minimum(g, k)]) / (t + 1.0)


def reciprocal_rank(greater, ties=None) -> np.ndarray:
  """Per-user E[1 / (rank + 1)]."""
  g, t = _gt(greater, ties)
  n = int((g + t).max(initial=0)) + 1
  harmonic = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, n + 1))])  # H[n] = sum_{r<n} 1/(r+1)
  return (harmonic[g + t + 1] - harmonic[g]) / (t + 1.0)


def ranking_metrics(scores, k: Sequence[int] = (5, 10, 20), positive_index=None,
                    mask=None) -> dict[str, float]:
  """Mean 'HR@k', 'NDCG@k' for each k and 'MRR' over users, ties in expectation."""
  greater, ties = (np.asarray(a) for a in rank_counts(scores, positive_index, mask))
  if greater.size == 0:
    raise ValueError("ranking_metrics: no users")
  out = {}
  for kk in k:
    if kk < 1:
      raise ValueError(f"k must be >= 1, got {kk}")
    out[f"HR@{kk}"] = float(hit_at_k(greater, kk, ties).mean())
    out[f"NDCG@{kk}"] = float(ndcg_at_k(greater, kk, ties).mean())
  out["MRR"] = float(reciprocal_rank(greater, ties).mean())
  return out


def hit_matrix(topk_items, positives: Sequence[np.ndarray]) -> np.ndarray:
  """[U, K] bool: whether topk_items[u, j] is among user u's positive items."""
  topk = np.asarray(topk_items)
  if topk.ndim != 2 or not np.issubdtype(topk.dtype, np.integer):
    raise ValueError(f"topk_items must be a 2-D integer array, got {topk.dtype} {topk.shape}")
  if len(positives) != topk.shape[0]:
    raise ValueError(f"{len(positives)} positive sets for {topk.shape[0]} users")
  srt = np.sort(topk, axis=1)
  dup = (srt[:, 1:] == srt[:, :-1]).any(axis=1)
  if dup.any():
    raise ValueError(f"topk_items repeats an item in user row {int(np.flatnonzero(dup)[0])}")
  pos = [np.asarray(p, dtype=np.int64).ravel() for p in positives]
  if topk.min(initial=0) < 0 or min((p.min(initial=0) for p in pos), default=0) < 0:
    raise ValueError("item indices must be non-negative")
  # Unique (user, item) keys let one vectorised isin test every row at once.
  width = int(max(topk.max(initial=0), max((p.max(initial=0) for p in pos), default=0))) + 1
  pos_keys = np.concatenate([u * width + p for u, p in enumerate(pos)] or [np.zeros(0, np.int64)])
  top_keys = np.arange(topk.shape[0], dtype=np.int64)[:, None] * width + topk
  return np.isin(top_keys, pos_keys)


def full_ranking_metrics(topk_items, positives, k: Sequence[int] = (10,)) -> dict[str, float]:
  """RecBole full-ranking 'Recall@k', 'MRR@k', 'NDCG@k', 'Hit@k', 'Precision@k' (user means).

  Args:
    topk_items: [U, K] item indices, best first, no repeats within a row; or a [U, K] bool hit
      matrix (then `positives` may be the [U] positive counts).
    positives: a list of U integer arrays (each user's positive items, e.g. the test items), or, with
      a hit matrix, a [U] array of positive counts.
    k: cut-offs, each <= K.
  Users without positives make Recall/NDCG undefined: RecBole leaves them out of evaluation, and
  so must the caller (this raises rather than dropping them silently).
  """
  topk = np.asarray(topk_items)
  if topk.dtype == bool:
    hits = topk
    if isinstance(positives, np.ndarray) and positives.ndim == 1 and positives.dtype != object:
      n_pos = positives.astype(np.int64)
    else:
      n_pos = np.array([np.unique(np.asarray(p)).size for p in positives], dtype=np.int64)
  else:
    hits = hit_matrix(topk, positives)
    n_pos = np.array([np.unique(np.asarray(p)).size for p in positives], dtype=np.int64)
  if hits.ndim != 2 or n_pos.shape != (hits.shape[0],) or hits.shape[0] == 0:
    raise ValueError(f"hits {hits.shape} and positives {n_pos.shape} must be [U, K] and [U], U > 0")
  if (n_pos < 1).any():
    raise ValueError(f"user row {int(np.flatnonzero(n_pos < 1)[0])} has no positives; filter such users out")
  if (hits.sum(1) > n_pos).any():
    raise ValueError("a user has more hits than positives")
  disc = 1.0 / np.log2(np.arange(hits.shape[1]) + 2.0)
  cum = np.concatenate([[0.0], np.cumsum(disc)])
  first = np.where(hits.any(1), hits.argmax(1), hits.shape[1])
  out = {}
  for kk in k:
    if not 1 <= kk <= hits.shape[1]:
      raise ValueError(f"k={kk} outside [1, {hits.shape[1]}] (the top-K list width)")
    h = hits[:, :kk]
    n_hit = h.sum(1)
    out[f"Recall@{kk}"] = float((n_hit / n_pos).mean())
    out[f"MRR@{kk}"] = float(np.where(first < kk, 1.0 / (first + 1.0), 0.0).mean())
    out[f"NDCG@{kk}"] = float(((h * disc[:kk]).sum(1) / cum[np.minimum(n_pos, kk)]).mean())
    out[f"Hit@{kk}"] = float((n_hit > 0).mean())
    out[f"Precision@{kk}"] = float((n_hit / kk).mean())
  return out
