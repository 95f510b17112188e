"""The one edit every explanation by removal needs: drop history entries from a batch.

A batch is a dict of numpy arrays with a leading row axis. Two layouts are understood, and a
batch may hold both (examples with text and an ID history): each present is edited.
  * token rows (the cross-encoder): 'input_ids', 'attention_mask' [B, L] and 'segments' [B, L]
    (`explain/segments.py`, -1 on padding); entry k's tokens (segment 3 + k) are deleted, the
    rest moves left, so the row is exactly the example built without that entry's text. (Two
    things the example builder would do differently are not done: a history emptied by the
    edit gets no "no history" sentence, and older entries cut for length do not move in.)
  * history arrays (the bi-encoder's 'hist_item' / 'hist_rating' / 'hist_mask', or
    'history_item' / 'history_rating' [B, K] of rating models over item IDs; -1 pads items):
    entry k's column is set to what padding holds (item -1, mask 0, the layout's pad rating).
Entries are numbered from the newest (k = 0), in every layout, so a unit means the same thing
whichever model reads it (the text keeps the newest entries that fit its token budget, so its
entry k is the ID history's entry k).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from crossrec_jax.explain import segments as seg_lib

__all__ = ["HISTORY_ARRAYS", "layouts", "layout", "entry_counts", "drop_entries", "take_rows"]

Batch = Mapping[str, np.ndarray]
# (item ids, ratings, mask or None, the rating padding holds) of the array layouts; the pads
# are those of `data/bi_pipeline.history_batch` and `data/examples.build_examples`.
HISTORY_ARRAYS = (("hist_item", "hist_rating", "hist_mask", 0.0),
                  ("history_item", "history_rating", None, -1.0))


def layouts(batch: Batch) -> list[tuple[str, tuple | None]]:
  """[('tokens', None)] and/or [('arrays', keys)]: every editable layout in the batch; an error
  naming the keys when there is none."""
  found = [("tokens", None)] if "segments" in batch else []
  found += [("arrays", keys) for keys in HISTORY_ARRAYS if keys[0] in batch]
  if not found:
    raise KeyError(f"a batch to edit needs 'segments' (token rows) or one of "
                   f"{[k[0] for k in HISTORY_ARRAYS]} (history arrays); it has {sorted(batch)}")
  return found


def layout(batch: Batch) -> tuple[str, tuple | None]:
  """The first of `layouts(batch)`."""
  return layouts(batch)[0]


def _array_valid(batch: Batch, keys) -> np.ndarray:
  valid = np.asarray(batch[keys[0]]) >= 0
  if keys[2] is not None and keys[2] in batch:
    valid &= np.asarray(batch[keys[2]]) > 0
  return valid


def _newest_first_columns(valid: np.ndarray) -> np.ndarray:
  """[B, K] column of entry k (newest = 0: the k-th valid column from the right), -1 if none."""
  b, k = valid.shape
  rank = np.cumsum(valid[:, ::-1], axis=1)[:, ::-1] - 1  # 0 at the newest valid column
  cols = np.full((b, k), -1, np.int64)
  rows, where = np.nonzero(valid)
  cols[rows, rank[rows, where]] = where
  return cols


def entry_counts(batch: Batch) -> np.ndarray:
  """[B] int: history entries of each row (the most of any layout the batch holds)."""
  counts = []
  for kind, keys in layouts(batch):
    if kind == "tokens":
      counts.append(np.array([seg_lib.num_entries(s) for s in np.asarray(batch["segments"])],
                             np.int64))
    else:
      counts.append(_array_valid(batch, keys).sum(axis=1).astype(np.int64))
  return np.max(counts, axis=0)


def take_rows(batch: Batch, rows: np.ndarray) -> dict[str, np.ndarray]:
  """The batch's rows `rows` (arrays with a leading row axis; others are kept as they are)."""
  n = len(next(iter(batch.values())))
  return {k: (np.asarray(v)[rows] if np.ndim(v) and len(v) == n else v) for k, v in batch.items()}


def drop_entries(batch: Batch, drop: np.ndarray) -> dict[str, np.ndarray]:
  """The batch with entry k of row b removed wherever drop[b, k] (bool [B, K'], k newest first;
  entries beyond a row's count are ignored). Shapes are kept (token rows stay length L)."""
  drop = np.asarray(drop, bool)
  out = {k: np.array(v, copy=True) for k, v in batch.items()}
  for kind, keys in layouts(batch):
    (_drop_tokens if kind == "tokens" else _drop_columns)(batch, out, drop, keys)
  return out


def _drop_columns(batch: Batch, out: dict[str, np.ndarray], drop: np.ndarray, keys) -> None:
  cols = _newest_first_columns(_array_valid(batch, keys))
  width = min(drop.shape[1], cols.shape[1])
  b, k = np.nonzero(drop[:, :width] & (cols[:, :width] >= 0))
  c = cols[b, k]
  out[keys[0]][b, c] = -1
  out[keys[1]][b, c] = keys[3]
  if keys[2] is not None and keys[2] in out:
    out[keys[2]][b, c] = 0


def _drop_tokens(batch: Batch, out: dict[str, np.ndarray], drop: np.ndarray, keys) -> None:
  del keys
  segs = np.asarray(batch["segments"])
  per_token = [k for k in ("input_ids", "attention_mask", "token_type_ids", "segments")
               if k in batch]
  for b in range(len(segs)):
    ks = np.flatnonzero(drop[b])
    if not len(ks):
      continue
    keep = ~np.isin(segs[b], seg_lib.HISTORY + ks)
    n = int(keep.sum())
    for name in per_token:
      row = np.asarray(batch[name])[b]
      out[name][b] = -1 if name == "segments" else 0
      out[name][b, :n] = row[keep]
