"""Rating and classification metrics: RMSE, MAE and ROC AUC (pure numpy functions).

Callers pass predictions already mapped back to the domain's own rating scale (1-5, 1-10), so the
numbers are comparable with published baselines. Nothing here drops or clips values: NaN/inf inputs
and mismatched shapes raise a ValueError instead of being skipped.

Ranking metrics (HR@K, NDCG@K, MRR with sampled candidates; RecBole's full-ranking Recall/MRR/NDCG/
Hit/Precision) live in `ranking.py` and are re-exported here so `from crossrec_jax.eval import metrics`
gives every metric.
"""

from __future__ import annotations

import numpy as np

from crossrec_jax.eval.ranking import (  # noqa: F401  (re-exported)
    full_ranking_metrics,
    hit_at_k,
    hit_matrix,
    ndcg_at_k,
    rank_counts,
    rank_of_positive,
    ranking_metrics,
    reciprocal_rank,
)


def _paired(pred, target, name: str) -> tuple[np.ndarray, np.ndarray]:
  """Flattens two same-shape float arrays; raises on empty, shape mismatch or non-finite values."""
  pred = np.asarray(pred, dtype=np.float64)
  target = np.asarray(target, dtype=np.float64)
  if pred.shape != target.shape:
    raise ValueError(f"{name}: pred shape {pred.shape} != target shape {target.shape}")
  if pred.size == 0:
    raise ValueError(f"{name}: empty input")
  for label, x in (("pred", pred), ("target", target)):
    bad = ~np.isfinite(x)
    if bad.any():
      raise ValueError(f"{name}: {label} has {int(bad.sum())} non-finite values "
                       f"(first at flat index {int(np.flatnonzero(bad)[0])})")
  return pred.ravel(), target.ravel()


def rmse(pred, target) -> float:
  """Root mean squared error over all elements."""
  p, t = _paired(pred, target, "rmse")
  return float(np.sqrt(np.mean((p - t) ** 2)))


def mae(pred, target) -> float:
  """Mean absolute error over all elements."""
  p, t = _paired(pred, target, "mae")
  return float(np.mean(np.abs(p - t)))


def midranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of `x` (ascending) where tied values share the mean of their ranks."""
  x = np.asarray(x).ravel()
  order = np.argsort(x, kind="stable")
  _, inverse, counts = np.unique(x[order], return_inverse=True, return_counts=True)
  # The tied block of value v occupies sorted positions [start, start + count); its mean 1-based
  # rank is start + (count + 1) / 2.
  starts = np.cumsum(counts) - counts
  ranks = np.empty(x.size, dtype=np.float64)
  ranks[order] = (starts + (counts + 1) / 2.0)[inverse]
  return ranks


def auc(scores, labels) -> float:
  """ROC AUC = P(score of a random positive > score of a random negative), ties counting 1/2.

  Computed exactly as the Mann-Whitney U statistic over midranks, O(n log n). `labels` must be binary
  (bool, or 0/1 numbers); a single class makes AUC undefined and raises.
  """
  s, y = _paired(scores, np.asarray(labels, dtype=np.float64), "auc")
  if not np.isin(y, (0.0, 1.0)).all():
    raise ValueError(f"auc: labels must be 0/1 or bool, got values {np.unique(y)[:10]}")
  n_pos = int(y.sum())
  n_neg = y.size - n_pos
  if n_pos == 0 or n_neg == 0:
    raise ValueError(f"auc: needs both classes, got {n_pos} positives and {n_neg} negatives")
  rank_sum = midranks(s)[y == 1.0].sum()
  return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
