"""Evaluation plans: which target rows and candidates every method of a study is scored on.

    spec = EvalSpec(which=("test",), num_negatives=99, ranking_users=200)
    plan = make_plan(domain, split, spec)   # fixed once, deterministic for spec.seed

A plan holds, per split part, the rows whose rating is predicted, one row per ranked user with its
sampled candidates (the positive in column 0), optional full-ranking candidates with their mask,
and which of them belong to cold-start users. `eval/evaluate.py` fills a plan with a model's
predictions and turns them into metrics.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib

__all__ = ["WHICH", "EvalSpec", "PartPlan", "EvalPlan", "cold_users", "cold_items",
           "last_row_per_user", "make_plan", "full_candidates"]

WHICH = ("valid", "test")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """What to evaluate. Sizes given as None mean 'all'.

  which: split parts to evaluate ('valid', 'test').
  threshold: like = rating > threshold for AUC; None = the scale's midpoint.
  ks: cut-offs of HR@k / NDCG@k.
  num_negatives: sampled negatives per ranked user (0 disables the sampled ranking protocol).
  ranking_users: evaluate sampled ranking on this many users (seeded draw), None = all.
  full_ranking_users: users (seeded draw) for full ranking over all items; 0 disables it.
  rating_rows: cap on rating rows per part (seeded draw of whole users' rows kept in order), None
    = all. For CPU presets: a text model scores every row with a BERT pass.
  cold_start: also report the cold-start-user subset.
  seed: negatives and subsets.
  """

  which: tuple[str, ...] = WHICH
  threshold: float | None = None
  ks: tuple[int, ...] = (5, 10, 20)
  num_negatives: int = 99
  ranking_users: int | None = None
  full_ranking_users: int = 0
  rating_rows: int | None = None
  cold_start: bool = True
  seed: int = 0

  def __post_init__(self):
    bad = [w for w in self.which if w not in WHICH]
    if bad:
      raise ValueError(f"EvalSpec.which: unknown part(s) {bad}; use {WHICH}")
    if self.num_negatives < 0 or self.full_ranking_users < 0:
      raise ValueError("EvalSpec.num_negatives and full_ranking_users must be >= 0")


@dataclasses.dataclass(frozen=True)
class PartPlan:
  """Rows and candidates of one split part.

  rating_rows: interaction rows whose rating is predicted. rating_cold: [len(rating_rows)] bool
  (a cold-start user's row); rating_cold_item: [len(rating_rows)] bool (a cold-start item's row).
  rank_rows: one row per ranked user (its positive); candidates [R, C] item codes, the positive in
  column 0. full_rows / full_candidates [F, I] / full_mask [F, I]: full ranking (mask False for the
  user's training items and the positive's duplicate).
  """

  rating_rows: np.ndarray
  rating_cold: np.ndarray
  rank_rows: np.ndarray
  candidates: np.ndarray
  rank_cold: np.ndarray
  full_rows: np.ndarray
  full_candidates: np.ndarray
  full_mask: np.ndarray
  rating_cold_item: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class EvalPlan:
  spec: EvalSpec
  scale: schema.RatingScale
  parts: Mapping[str, PartPlan]

  def summary(self) -> str:
    return "; ".join(f"{w}: {len(p.rating_rows)} ratings ({int(p.rating_cold.sum())} cold users, "
                     f"{int(np.sum(p.rating_cold_item))} cold items), "
                     f"{len(p.rank_rows)} ranked users x {p.candidates.shape[1]} candidates, "
                     f"{len(p.full_rows)} full-ranking users" for w, p in self.parts.items())


def cold_users(domain: schema.Domain, split: splits_lib.Split) -> np.ndarray:
  """[U] bool: users with no training row in this domain (labelled or not)."""
  has_train = np.bincount(domain.interactions.user[split.train],
                          minlength=domain.interactions.num_users) > 0
  return ~has_train


def cold_items(domain: schema.Domain, split: splits_lib.Split) -> np.ndarray:
  """[I] bool: items with no labelled training row in this domain (no rating to learn from)."""
  labelled = np.bincount(domain.interactions.item[split.labelled_rows],
                         minlength=domain.num_items) > 0
  return ~labelled


def last_row_per_user(domain: schema.Domain, rows: np.ndarray) -> np.ndarray:
  """Each user's last row among `rows` in canonical (time, item id) order, ascending by user."""
  order = splits_lib.canonical_order(domain, rows)
  users = domain.interactions.user[order]
  last = np.r_[users[1:] != users[:-1], True]
  return order[last]


def _draw_users(rows: np.ndarray, users: np.ndarray, n: int | None, seed: int) -> np.ndarray:
  """Keep the rows of n users drawn with default_rng(seed) (all when n is None or too large)."""
  unique = np.unique(users)
  if n is None or n >= len(unique):
    return rows
  keep = np.random.default_rng(seed).choice(unique, n, replace=False)
  return rows[np.isin(users, keep)]


def make_plan(domain: schema.Domain, split: splits_lib.Split, spec: EvalSpec) -> EvalPlan:
  """The rows and candidates every method is scored on (deterministic for spec.seed)."""
  inter = domain.interactions
  cold = cold_users(domain, split) if spec.cold_start else np.zeros(inter.num_users, bool)
  cold_item = cold_items(domain, split) if spec.cold_start else np.zeros(domain.num_items, bool)
  parts = {}
  for which in spec.which:
    # 'test' draws with spec.seed itself (YARDSTICKS P-rank-loo: default_rng(0)), 'valid' with
    # another seed.
    seed = spec.seed if which == "test" else spec.seed + 7919
    rows = split.rows(which)
    if len(rows) == 0:
      raise ValueError(f"split part {which!r} of domain {domain.name!r} is empty")
    rating_rows = (rows[:0] if domain.scale.implicit else
                   _cap_rows(rows, inter.user[rows], spec.rating_rows, seed + 3))
    last = last_row_per_user(domain, rows)
    n_neg = spec.num_negatives
    if n_neg > 0:
      rank_rows = _draw_users(last, inter.user[last], spec.ranking_users, seed + 1)
      # Aligned with rank_rows (ascending by user, the order YARDSTICKS' negatives are drawn in).
      candidates = splits_lib.ranking_candidates(domain, split, rank_rows, n_neg,
                                                 seed=seed)
    else:
      rank_rows, candidates = np.zeros(0, np.int64), np.zeros((0, 1), np.int32)
    full_rows = _draw_users(last, inter.user[last], spec.full_ranking_users,
                            seed + 2) if spec.full_ranking_users else last[:0]
    full_cands, full_mask = full_candidates(domain, split, full_rows)
    parts[which] = PartPlan(rating_rows=rating_rows, rating_cold=cold[inter.user[rating_rows]],
                            rank_rows=rank_rows, candidates=candidates,
                            rank_cold=cold[inter.user[rank_rows]], full_rows=full_rows,
                            full_candidates=full_cands, full_mask=full_mask,
                            rating_cold_item=cold_item[inter.item[rating_rows]])
  return EvalPlan(spec=spec, scale=domain.scale, parts=parts)


def _cap_rows(rows: np.ndarray, users: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
  """All rows of whole users, users taken in a seeded random order while the total stays <= max_rows
  (at least one user); every row when max_rows is None."""
  if max_rows is None or len(rows) <= max_rows:
    return rows
  unique, counts = np.unique(users, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(unique))
  n_keep = max(1, int(np.searchsorted(np.cumsum(counts[order]), max_rows, side="right")))
  return rows[np.isin(users, unique[order[:n_keep]])]


def full_candidates(domain: schema.Domain, split: splits_lib.Split,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([F, 1 + I] items, [F, 1 + I] mask): the positive in column 0, then every item; the mask drops
  the user's training items and the positive's second copy (YARDSTICKS P-rank-loo 'full')."""
  inter = domain.interactions
  n_items = domain.num_items
  cands = np.concatenate([inter.item[rows][:, None],
                          np.broadcast_to(np.arange(n_items), (len(rows), n_items))], axis=1)
  mask = np.ones(cands.shape, bool)
  mask[:, 1:][np.arange(len(rows))[:, None], inter.item[rows][:, None]] = False
  row_of_user = np.full(inter.num_users, -1, np.int64)
  row_of_user[inter.user[rows]] = np.arange(len(rows))
  if len(np.unique(inter.user[rows])) != len(rows):
    raise ValueError("full ranking takes one row per user")
  at = row_of_user[inter.user[split.train]]
  hit = at >= 0
  mask[at[hit], 1 + inter.item[split.train][hit]] = False
  return cands.astype(np.int32), mask
