"""Which unit of the example text each token belongs to (the `segments` contract).

Per token of a cross-encoder example (`data/examples.build_examples`):
  0 = special tokens and the template prefix, 1 = profile facts, 2 = candidate,
  3 + k = history entry k (k = 0 the newest entry).

`example_segments` reads the ExampleSet's own 'segments' column where the data layer writes one;
otherwise it recomputes it exactly, by building the same examples a second time through a token
cache that returns *markers* (piece number, position in the piece) instead of token ids: the
assembly code is build_examples' own, so the spans cannot drift from the real ids.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossrec_jax.data import examples as examples_lib

__all__ = ["SPECIAL", "PROFILE", "CANDIDATE", "HISTORY", "example_segments",
           "segments_from_markers", "num_entries"]

SPECIAL, PROFILE, CANDIDATE, HISTORY = 0, 1, 2, 3


class _MarkerCache:
  """A TokenCache stand-in: piece j's token t becomes -(1 + j * M + t) (M > every piece's
  length); build_examples' special [CLS]/[SEP] ids stay the real (non-negative) ids."""

  def __init__(self, cache: Any):
    self._cache = cache
    self.identity = cache.identity
    self.stride = 0

  @property
  def hits(self) -> int:
    return self._cache.hits

  @property
  def misses(self) -> int:
    return self._cache.misses

  def encode(self, texts):
    pieces = self._cache.encode(texts)
    self.stride = max(len(p) for p in pieces) + 1
    return [-(1 + j * self.stride + np.arange(len(p), dtype=np.int64)).astype(np.int32)
            for j, p in enumerate(pieces)]


def segments_from_markers(markers: np.ndarray, stride: int) -> np.ndarray:
  """[L] int32 segments of one marker row (see `_MarkerCache`); piece 0 is the template prefix,
  piece 1 the empty-history sentence, later pieces history entries (before the first [SEP])
  and the candidate (after it)."""
  markers = np.asarray(markers, np.int64)
  seg = np.full(len(markers), SPECIAL, np.int32)
  special = markers >= 0
  seps = np.flatnonzero(special[1:]) + 1  # position 0 is [CLS]
  first_sep = int(seps[0]) if len(seps) else len(markers)
  code = -markers - 1
  piece, pos = code // stride, code % stride
  before = np.arange(len(markers)) < first_sep
  entry = ~special & before & (piece >= 2)
  starts = entry & (pos == 0)
  order = np.cumsum(starts) - 1  # oldest entry 0
  n = int(starts.sum())
  seg[entry] = HISTORY + (n - 1 - order[entry])
  seg[~special & ~before] = CANDIDATE
  return seg


def example_segments(examples: examples_lib.ExampleSet, data: Any, split: Any, *,
                     cache: Any = None, **build_kw: Any) -> np.ndarray:
  """[N] object array of int32 [L_i] segment rows of `examples` (aligned with its 'row' column).

  `examples`' own 'segments' column when it has one. Else `data`, `split` and `build_kw` must be
  what built `examples` (`build_examples(data, split, **build_kw)`, `cache`/`tokenizer` the
  same): the marker build is checked token count by token count against it.
  """
  if "segments" in examples.keys():
    return examples["segments"]
  from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
  if cache is None:
    cache = tokenize_lib.TokenCache(build_kw["tokenizer"])
  marker_cache = _MarkerCache(cache)
  marked = examples_lib.build_examples(data, split, cache=marker_cache, **build_kw)
  where = {int(r): i for i, r in enumerate(marked["row"])}
  out = []
  for row, ids in zip(examples["row"], examples["input_ids"]):
    if int(row) not in where:
      raise ValueError(f"example of row {int(row)} is not among the rows build_kw builds "
                       f"({build_kw.get('which')!r}); pass the arguments that built it")
    markers = marked["input_ids"][where[int(row)]]
    special = markers >= 0  # [CLS]/[SEP] keep their real ids in the marker build
    if len(markers) != len(ids) or not np.array_equal(markers[special], np.asarray(ids)[special]):
      raise ValueError(f"example of row {int(row)}: the marker build differs from the example "
                       "(another template, max_len or tokenizer?)")
    out.append(segments_from_markers(markers, marker_cache.stride))
  return np.fromiter(out, dtype=object, count=len(out))


def num_entries(segments: np.ndarray) -> int:
  """History entries in one example's segment row (their ids are HISTORY + 0 .. n - 1)."""
  segments = np.asarray(segments)
  hist = segments[segments >= HISTORY]
  return int(hist.max() - HISTORY + 1) if len(hist) else 0
