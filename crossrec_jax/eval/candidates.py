"""Candidate examples for text models: one example per (evaluated row's history, candidate item).

A ranking plan (`eval/plan.py`) asks a model to score C candidate items per evaluated row. A text
model needs each (user history, candidate) cell written out as an example: `candidate_domain`
adds one synthetic interaction per cell (the row's user and time, the candidate's item), and
`candidate_examples` tokenises them with the row's own history.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib

__all__ = ["candidate_domain", "candidate_examples"]


def candidate_domain(domain: schema.Domain, rows: np.ndarray, candidates: np.ndarray,
                     mask: np.ndarray | None = None
                     ) -> tuple[schema.Domain, np.ndarray, np.ndarray]:
  """The domain plus one new interaction per (row, candidate) cell: same user and time as the row,
  the candidate's item, so its history is the row's history (`splits.history_rows` sees only rows
  strictly before that time, and the new rows are visible to nobody).

  Returns (domain', new row indices [M], flat cell index [M] into [R, C]) for the cells in `mask`.
  The new rows' rating is the held-out one for column 0 and the scale's low end elsewhere (never a
  training label: only evaluation examples are built from them).
  """
  inter = domain.interactions
  rows = np.asarray(rows, np.int64)
  cands = np.asarray(candidates)
  if cands.shape[0] != len(rows):
    raise ValueError(f"{cands.shape[0]} candidate rows for {len(rows)} eval rows")
  cell_mask = np.ones(cands.shape, bool) if mask is None else np.asarray(mask, bool)
  cells = np.flatnonzero(cell_mask.reshape(-1))
  r_of = cells // cands.shape[1]
  col = cells % cands.shape[1]
  src = rows[r_of]
  rating = np.where(col == 0, inter.rating[src], np.float32(domain.scale.low)).astype(np.float32)
  extra = dataclasses.replace(
      inter,
      user=np.concatenate([inter.user, inter.user[src]]),
      item=np.concatenate([inter.item, cands.reshape(-1)[cells].astype(inter.item.dtype)]),
      rating=np.concatenate([inter.rating, rating]),
      time=np.concatenate([inter.time, inter.time[src]]),
      part=None if inter.part is None else np.concatenate([inter.part, inter.part[src]]))
  new_rows = len(inter) + np.arange(len(cells), dtype=np.int64)
  return dataclasses.replace(domain, interactions=extra), new_rows, cells


def candidate_examples(data: schema.CrossDomainData | schema.Domain, split: splits_lib.Split,
                       rows: np.ndarray, candidates: np.ndarray, mask: np.ndarray | None = None, *,
                       which: str, domain_id: int = 1, test_sees_valid: bool = False,
                       **build_kw) -> tuple[Any, np.ndarray]:
  """Tokenised examples of every (row history, candidate item) cell -> (ExampleSet, cell index).

  The ExampleSet's 'row' column is the evaluated row of `rows` (in the original domain), 'cell' the
  flat index into [R, C]; 'item' is the candidate.

  `build_kw` are `examples.build_examples`' template, tokenizer, max_len, history_len, cache...
  Histories are those of the row's split part `which` (a valid row sees train rows; a test row
  train rows, plus valid rows with test_sees_valid).
  """
  from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
  domain = data if isinstance(data, schema.Domain) else data.domains()[domain_id]
  big, new_rows, cells = candidate_domain(domain, rows, candidates, mask)
  aug = dataclasses.replace(split, test=new_rows, valid=split.valid, removed=split.removed)
  ex = examples_lib.build_examples(big, aug, domain_id=domain_id, which="test",
                                   test_sees_valid=test_sees_valid and which == "test", **build_kw)
  # 'row' names the evaluated interaction of the original domain (not the synthetic row), 'cell'
  # the flat [R, C] candidate cell.
  ex.columns["row"] = np.asarray(rows, np.int64)[cells // np.asarray(candidates).shape[1]]
  ex.columns["cell"] = cells
  return ex, cells
