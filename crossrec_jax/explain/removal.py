"""Explanations by removal, for any model: re-score the example without history entries.

`score_fn(batch) -> [B]` is any model's prediction on a batch of a layout `edits.py` can edit
(the cross-encoder's rating, the bi-encoder's score, a rating model over item IDs). It is called
on fixed-size chunks of `chunk` rows (the last one padded by repeating a row), so a jitted
score_fn compiles once.

    loo = leave_one_out(score_fn, batch)   # loo['delta'][b, k] = f(x_b) - f(x_b without entry k)

A positive delta means the entry pushed the prediction up. The deltas are exact: each is one
forward pass on the edited example, nothing is approximated (tests/test_explain.py checks it
against re-running the model on the edited example).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from crossrec_jax.explain import edits

__all__ = ["score_in_chunks", "score_without", "leave_one_out"]

ScoreFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]


def score_in_chunks(score_fn: ScoreFn, batch: Mapping[str, np.ndarray], chunk: int) -> np.ndarray:
  """[B] float64 scores of every row, `chunk` rows per call (the last chunk padded)."""
  n = len(next(iter(batch.values())))
  out = np.zeros(n, np.float64)
  for lo in range(0, n, chunk):
    rows = np.arange(lo, min(lo + chunk, n))
    padded = np.concatenate([rows, np.full(chunk - len(rows), rows[0])])
    got = np.asarray(score_fn(edits.take_rows(batch, padded)), np.float64).reshape(-1)
    out[rows] = got[:len(rows)]
  return out


def score_without(score_fn: ScoreFn, batch: Mapping[str, np.ndarray], drop: np.ndarray, *,
                  chunk: int = 64) -> np.ndarray:
  """[B] scores of every row with the entries `drop` [B, K] (bool, newest first) removed."""
  return score_in_chunks(score_fn, edits.drop_entries(batch, drop), chunk)


def leave_one_out(score_fn: ScoreFn, batch: Mapping[str, np.ndarray], *, chunk: int = 64,
                  max_entries: int | None = None) -> dict[str, np.ndarray]:
  """Removes each history entry alone and re-scores, all (row, entry) pairs in chunks.

  Returns 'score' [B] (unedited), 'without' [B, K] (the score without entry k; NaN where the
  row has no entry k) and 'delta' = score - without [B, K]; K = the most entries of a row
  (at most `max_entries`).
  """
  counts = edits.entry_counts(batch)
  if max_entries is not None:
    counts = np.minimum(counts, max_entries)
  width = int(counts.max()) if len(counts) else 0
  base = score_in_chunks(score_fn, batch, chunk)
  without = np.full((len(counts), width), np.nan)
  rows = np.repeat(np.arange(len(counts)), counts)
  ks = np.concatenate([np.arange(c) for c in counts]) if len(rows) else np.zeros(0, np.int64)
  if len(rows):
    expanded = edits.take_rows(batch, rows)
    drop = np.zeros((len(rows), width), bool)
    drop[np.arange(len(rows)), ks] = True
    without[rows, ks] = score_without(score_fn, expanded, drop, chunk=chunk)
  return {"score": base, "without": without, "delta": base[:, None] - without}
