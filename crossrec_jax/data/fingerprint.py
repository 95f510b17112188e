"""A fingerprint of the data a run actually trains and evaluates on (recorded with its checkpoints).

A config names its data (`data.source`, the split, the preset's caps), but the name does not fix
the rows: a source re-registered under the same name, a changed file behind a reader, or a
hand-built `PreparedData` give other tables under the same config. The trainer records this
fingerprint in every checkpoint and refuses to resume a run on data with another one.

What is hashed: the data's `report` (JSON: source, seed, split summaries, example counts), and
every in-memory example set's columns (`ExampleSet.columns`: rows, labels, masks, token ids).
Example sets read back from a TFDS build are named by their preparation settings (already in the
report), so their records are not reread.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def _update(h: "hashlib._Hash", column: np.ndarray) -> None:
  column = np.asarray(column)
  if column.dtype == object:  # ragged token ids: lengths, then the concatenated values
    parts = [np.asarray(x, np.int64).ravel() for x in column]
    h.update(np.array([len(p) for p in parts], np.int64).tobytes())
    column = np.concatenate(parts) if parts else np.zeros(0, np.int64)
  h.update(str(column.dtype).encode())
  h.update(np.ascontiguousarray(column).tobytes())


def data_fingerprint(data: Any) -> str:
  """16 hex digits over `data.report` and the columns of `data.sources`' in-memory example sets."""
  h = hashlib.sha256()
  h.update(json.dumps(getattr(data, "report", {}), sort_keys=True, default=str).encode())
  for name, src in sorted(getattr(data, "sources", {}).items()):
    columns = getattr(src, "columns", None)
    if columns is None:
      continue
    h.update(name.encode())
    for key in sorted(columns):
      h.update(key.encode())
      _update(h, columns[key])
  return h.hexdigest()[:16]
