"""Leakage-free train/valid/test splits, label fractions, cold-start users, histories, candidates.

A `Split` is row indices into one domain's interactions. The rule everything here enforces:
no evaluation interaction, nor anything after it in time, reaches a training example or the
history of its own example.

Orders. Within a user, the canonical order is (time, item id, row) (`canonical_order`): ties in time
are broken by the item's *id string*, not its integer code, so a protocol does not depend on how a
reader numbered the items (ML-100K: by title, as YARDSTICKS specifies). Every module that needs a
per-user chronological order uses `canonical_order`.

Users with too few interactions. Temporal splits never evaluate a user without a training row:
a user with 1 interaction is train-only, a user with 2 has a test row but no valid row (counted in
`Split.counts` as `users_train_only` / `users_without_valid`). Cold-start users are the deliberate
exception (`apply_cold_start`).

Histories (`history_rows`). The history of an example is the user's last K *visible* rows strictly
before it in time (or sequence position), oldest first; rows tying with it in time are not before
it, and the example itself never is. Visible (`visible_rows`): train examples see train rows (labelled
or not: an unlabelled row is an interaction whose rating is hidden, see `examples.py`); valid
examples see train rows; test examples see train rows, plus valid rows only with
`test_sees_valid=True` (off by default, so a test example's history never contains held-out data).
Rows removed for cold-start users are visible to nobody. A source's context rows (`Split.context`,
`given_split`) are visible to every example, with their ratings, and are never examples.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Mapping

import numpy as np

from crossrec_jax.data import schema

SplitKind = Literal["loo", "ratio", "random", "given"]
Which = Literal["train", "valid", "test"]
_EMPTY = np.zeros(0, np.int64)


@dataclasses.dataclass(frozen=True)
class Split:
  """One domain's split: ascending int64 row indices into `domain.interactions`.

  Attributes:
    kind: "loo" (temporal leave-one-out), "ratio" (temporal per-user ratio), "random" or
      "given" (the source's own assignment, `given_split`).
    train, valid, test: disjoint row indices.
    train_labelled: [len(train)] bool, aligned with `train`: rows whose rating may be used as a
      training label (and shown in histories). Unlabelled rows stay in `train`: their text still
      feeds the domain loss.
    removed: rows in no split (training rows of cold-start users); train|valid|test|removed covers
      every row.
    cold_users: user codes whose training rows were removed (`apply_cold_start`).
    label_fraction: the fraction `train_labelled` was drawn with (1.0: all labelled).
    context: rows that are history only (a source's context rows, `given_split`): visible, with
      their rating, in every example's history, never an example themselves.
    counts: policy counts (users_train_only, users_without_valid, cold rows, ...).
  """

  kind: str
  train: np.ndarray
  valid: np.ndarray
  test: np.ndarray
  train_labelled: np.ndarray
  removed: np.ndarray = dataclasses.field(default_factory=lambda: _EMPTY)
  cold_users: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int32))
  label_fraction: float = 1.0
  counts: Mapping[str, int] = dataclasses.field(default_factory=dict)
  context: np.ndarray = dataclasses.field(default_factory=lambda: _EMPTY)

  def __post_init__(self):
    for name in ("train", "valid", "test", "removed", "context"):
      rows = np.asarray(getattr(self, name), np.int64)
      if rows.ndim != 1 or (np.diff(rows) <= 0).any():
        raise ValueError(f"Split.{name} must be strictly ascending 1-D row indices")
      object.__setattr__(self, name, rows)
    labelled = np.asarray(self.train_labelled, bool)
    if labelled.shape != self.train.shape:
      raise ValueError(f"Split.train_labelled has shape {labelled.shape}, "
                       f"train has {self.train.shape}")
    object.__setattr__(self, "train_labelled", labelled)
    every = np.concatenate([self.train, self.valid, self.test, self.removed, self.context])
    if len(np.unique(every)) != len(every):
      raise ValueError("Split.train/valid/test/removed/context overlap")

  def rows(self, which: Which) -> np.ndarray:
    return {"train": self.train, "valid": self.valid, "test": self.test}[which]

  @property
  def labelled_rows(self) -> np.ndarray:
    return self.train[self.train_labelled]

  def summary(self) -> str:
    return (f"{self.kind} split: train {len(self.train)} "
            f"({int(self.train_labelled.sum())} labelled, fraction {self.label_fraction:g}), valid {len(self.valid)}, test {len(self.test)}, "
            f"removed {len(self.removed)}"
            + (f", context {len(self.context)}" if len(self.context) else "")
            + f"; {dict(self.counts)}")


# ----------------------------------------------------------------------------- orders


def item_id_rank(domain: schema.Domain) -> np.ndarray:
  """[I] int64: each item code's position in the sorted item ids."""
  rank = np.empty(domain.num_items, np.int64)
  rank[np.argsort(domain.items.ids.astype(str), kind="stable")] = np.arange(domain.num_items)
  return rank


def canonical_order(domain: schema.Domain, rows: np.ndarray | None = None) -> np.ndarray:
  """`rows` (default: all) sorted by (user, time, item id, row)."""
  inter = domain.interactions
  rows = np.arange(len(inter)) if rows is None else np.asarray(rows, np.int64)
  rank = item_id_rank(domain)
  return rows[np.lexsort((rows, rank[inter.item[rows]], inter.time[rows], inter.user[rows]))]


# ----------------------------------------------------------------------------- filtering


def kcore_filter(domain: schema.Domain, k: int, *, users: bool = True,
                 items: bool = True) -> schema.Domain:
  """Iterative k-core: drop users/items with fewer than k interactions until none is left.

  Returns a new Domain whose users and (when `items`) item catalogue are compacted to the survivors,
  keeping their relative order (user codes stay in sorted-id order). The dropped row count is added
  to `Domain.skipped` under "below k-core". Raises `DataError` if nothing survives.
  """
  inter = domain.interactions
  keep = np.ones(len(inter), bool)
  while True:
    bad = np.zeros(len(inter), bool)
    if users:
      bad |= np.bincount(inter.user[keep], minlength=inter.num_users)[inter.user] < k
    if items:
      bad |= np.bincount(inter.item[keep], minlength=domain.num_items)[inter.item] < k
    bad &= keep
    if not bad.any():
      break
    keep &= ~bad
  if not keep.any():
    raise schema.DataError(f"domain {domain.name!r}: the {k}-core is empty")
  report = schema.SkipReport().merge(domain.skipped)
  if (~keep).any():
    n_users = len(np.unique(inter.user)) - len(np.unique(inter.user[keep]))
    n_items = len(np.unique(inter.item)) - len(np.unique(inter.item[keep]))
    report.add(f"below {k}-core (users={users}, items={items})",
               f"{n_users} users and {n_items} items left out", int((~keep).sum()))
  return _subset(domain, keep, report, compact_items=items)


def dedupe_user_item(domain: schema.Domain) -> schema.Domain:
  """Keep each (user, item) pair's earliest row (canonical order): the ranking protocols' rule.

  Dropped rows are counted in `Domain.skipped`.
  """
  inter = domain.interactions
  order = canonical_order(domain)
  pair = inter.user[order].astype(np.int64) * domain.num_items + inter.item[order]
  _, first = np.unique(pair, return_index=True)
  keep = np.zeros(len(inter), bool)
  keep[order[first]] = True
  report = schema.SkipReport().merge(domain.skipped)
  if (~keep).any():
    report.add("repeated (user, item) pair (earliest kept)", "dedupe_user_item", int((~keep).sum()))
  return _subset(domain, keep, report, compact_items=False)


def _subset(domain: schema.Domain, keep: np.ndarray, report: schema.SkipReport,
            compact_items: bool) -> schema.Domain:
  inter = domain.interactions.take(keep)
  user_used = np.unique(inter.user)
  user_map = np.full(domain.interactions.num_users, -1, np.int32)
  user_map[user_used] = np.arange(len(user_used), dtype=np.int32)
  inter = dataclasses.replace(inter, user_ids=domain.interactions.user_ids[user_used],
                              user=user_map[inter.user])
  items = domain.items
  if compact_items:
    item_used = np.unique(inter.item)
    item_map = np.full(domain.num_items, -1, np.int32)
    item_map[item_used] = np.arange(len(item_used), dtype=np.int32)
    items = schema.Items(ids=items.ids[item_used],
                         fields={name: col[item_used] for name, col in items.fields.items()})
    inter = dataclasses.replace(inter, item=item_map[inter.item])
  return dataclasses.replace(domain, items=items, interactions=inter, skipped=report)


# ----------------------------------------------------------------------------- splits


def _position_from_end(domain: schema.Domain) -> tuple[np.ndarray, np.ndarray]:
  """Per row: its 0-based position from the end of its user's canonical order, and the user's n."""
  inter = domain.interactions
  order = canonical_order(domain)
  n_user = np.bincount(inter.user, minlength=inter.num_users)
  end = np.cumsum(n_user)  # exclusive end of each user's block in `order`
  from_end = np.empty(len(inter), np.int64)
  from_end[order] = end[inter.user[order]] - 1 - np.arange(len(inter))
  return from_end, n_user[inter.user]


def _frac_floor(n: np.ndarray, fraction: float) -> np.ndarray:
  """floor(n * fraction) without float error at exact multiples (0.1 * 30 == 3.0000000000000004)."""
  micro = int(round(fraction * 1_000_000))
  return (n.astype(np.int64) * micro) // 1_000_000


def _temporal(kind: str, domain: schema.Domain, n_test: np.ndarray,
              n_valid: np.ndarray) -> Split:
  inter = domain.interactions
  from_end, n = _position_from_end(domain)
  # Never evaluate a user without a training row: cap test, then valid, at n - 1 in total.
  n_test = np.minimum(n_test, n - 1)
  n_valid = np.minimum(n_valid, n - 1 - n_test)
  test = from_end < n_test
  valid = ~test & (from_end < n_test + n_valid)
  train = ~(test | valid)
  per_user = np.bincount(inter.user, minlength=inter.num_users)
  users_test = np.bincount(inter.user[test], minlength=inter.num_users)
  users_valid = np.bincount(inter.user[valid], minlength=inter.num_users)
  counts = {"users_train_only": int(((users_test == 0) & (per_user > 0)).sum()),
            "users_without_valid": int(((users_valid == 0) & (users_test > 0)).sum())}
  return Split(kind=kind, train=np.flatnonzero(train), valid=np.flatnonzero(valid),
               test=np.flatnonzero(test), train_labelled=np.ones(int(train.sum()), bool),
               counts=counts)


def temporal_loo(domain: schema.Domain) -> Split:
  """Per user: last row (canonical order) -> test, second last -> valid, the rest -> train.

  1 interaction: train only; 2: train + test (see the module docstring).
  """
  ones = np.ones(len(domain.interactions), np.int64)
  return _temporal("loo", domain, ones, ones)


def temporal_ratio(domain: schema.Domain, test_fraction: float = 0.1,
                   valid_fraction: float = 0.1) -> Split:
  """Per user: the last max(1, floor(f_test n)) rows -> test, the max(1, floor(f_valid n)) before
  them -> valid, the rest -> train.

  The YARDSTICKS protocol P-rating-temporal (ML-100K: 80,808 / 9,596 / 9,596).
  """
  _, n = _position_from_end(domain)
  return _temporal("ratio", domain, np.maximum(1, _frac_floor(n, test_fraction)),
                   np.maximum(1, _frac_floor(n, valid_fraction)))


def random_split(domain: schema.Domain, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
                 seed: int = 0) -> Split:
  """Rows in `default_rng(seed).permutation(N)` order: the first floor(f_train N) -> train, the
  next floor(f_valid N) -> valid, the rest -> test (YARDSTICKS P-rating-random)."""
  if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-9:
    raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
  n = len(domain.interactions)
  perm = np.random.default_rng(seed).permutation(n)
  n_train = int(_frac_floor(np.array([n]), fractions[0])[0])
  n_valid = int(_frac_floor(np.array([n]), fractions[1])[0])
  train = np.sort(perm[:n_train])
  return Split(kind="random", train=train, valid=np.sort(perm[n_train:n_train + n_valid]),
               test=np.sort(perm[n_train + n_valid:]), train_labelled=np.ones(len(train), bool))


def given_split(domain: schema.Domain) -> Split:
  """The source's own assignment of rows (`Interactions.part`: 'train' | 'valid' | 'test' |
  'context'), for benchmarks that come with a fixed split. Context rows are history only."""
  part = domain.interactions.part
  if part is None:
    raise ValueError(f"data.split='given': domain {domain.name!r} has no Interactions.part "
                     "(its source does not supply a split)")
  rows = {p: np.flatnonzero(part == p) for p in schema.PARTS}
  return Split(kind="given", train=rows["train"], valid=rows["valid"], test=rows["test"],
               train_labelled=np.ones(len(rows["train"]), bool), context=rows["context"])


def make_split(domain: schema.Domain, kind: SplitKind, *, seed: int = 0,
               label_fraction: float = 1.0, label_seed: int | None = None,
               label_count: int = 0) -> Split:
  """One call for configs: the split of `kind`, then `with_label_fraction` (or, with
  `label_count` > 0, `with_label_count`: exactly that many labelled training rows)."""
  if kind == "given":
    split = given_split(domain)
  elif kind == "loo":
    split = temporal_loo(domain)
  elif kind == "ratio":
    split = temporal_ratio(domain)
  elif kind == "random":
    split = random_split(domain, seed=seed)
  else:
    raise ValueError(f"split kind must be 'loo', 'ratio', 'random' or 'given', got {kind!r}")
  label_seed = seed if label_seed is None else label_seed
  if label_count > 0:
    if label_fraction != 1.0:
      raise ValueError(f"data.label_count={label_count} and data.label_fraction={label_fraction}: "
                       "give one of them (label_fraction 1.0 with a label_count)")
    return with_label_count(split, label_count, seed=label_seed)
  return with_label_fraction(split, label_fraction, seed=label_seed)


# ----------------------------------------------------------------------------- labels, cold start


def with_label_fraction(split: Split, fraction: float, seed: int = 0) -> Split:
  """Mark round(fraction * |train|) training rows labelled (at least 1 when fraction > 0).

  Per row, uniformly: the rows are a prefix of `default_rng(seed).permutation(|train|)`, so for one
  seed the labelled sets are nested (1% within 10% within 100%). fraction 0.0: no labels at all.
  """
  if not 0.0 <= fraction <= 1.0:
    raise ValueError(f"label fraction must be in [0, 1], got {fraction}")
  n = len(split.train)
  n_labelled = 0 if fraction == 0 or n == 0 else max(1, int(round(fraction * n)))
  labelled = np.zeros(n, bool)
  labelled[np.random.default_rng(seed).permutation(n)[:n_labelled]] = True
  return dataclasses.replace(split, train_labelled=labelled, label_fraction=float(fraction))


def with_label_count(split: Split, count: int, seed: int = 0) -> Split:
  """Mark exactly `count` training rows labelled: a prefix of the same permutation as
  `with_label_fraction`, so for one seed K shots are nested in 2K shots (16 within 64).

  Only the labels of training rows are hidden; context rows keep their ratings in histories."""
  n = len(split.train)
  if not 0 <= count <= n:
    raise ValueError(f"data.label_count={count}: the split has {n} training rows")
  labelled = np.zeros(n, bool)
  labelled[np.random.default_rng(seed).permutation(n)[:count]] = True
  return dataclasses.replace(split, train_labelled=labelled,
                             label_fraction=float(count) / max(n, 1))


def apply_cold_start(domain: schema.Domain, split: Split, users: np.ndarray) -> Split:
  """Remove every training row of `users` (into `Split.removed`); their valid/test rows stay.

  Their examples then have an empty history in this domain. Evaluation reports them separately
  (`Split.cold_users`): cold users measure what transfers from the source domain and the candidate
  text alone; the other users stay warm and are scored as usual. The remaining training rows keep
  their `train_labelled` flags: to draw the label fraction among them, call `with_label_fraction`
  after this.
  """
  users = np.unique(np.asarray(users, np.int32))
  cold = np.isin(domain.interactions.user[split.train], users)
  counts = dict(split.counts, cold_users=len(users), cold_rows_removed=int(cold.sum()))
  return dataclasses.replace(split, train=split.train[~cold],
                             train_labelled=split.train_labelled[~cold],
                             removed=np.union1d(split.removed, split.train[cold]),
                             cold_users=np.union1d(split.cold_users, users).astype(np.int32),
                             counts=counts)


# ----------------------------------------------------------------------------- histories


def visible_rows(split: Split, which: Which, test_sees_valid: bool = False) -> np.ndarray:
  """Rows an example of split part `which` may see in its history (see the module docstring)."""
  seen = np.union1d(split.train, split.context) if len(split.context) else split.train
  if which in ("train", "valid"):
    return seen
  if which == "test":
    return np.union1d(seen, split.valid) if test_sees_valid else seen
  raise ValueError(f"which must be 'train', 'valid' or 'test', got {which!r}")


def history_rows(domain: schema.Domain, visible: np.ndarray, rows: np.ndarray,
                 k: int) -> np.ndarray:
  """[len(rows), k] int64: each row's last k visible rows of the same user strictly before it in
  time, oldest first, left-padded with -1."""
  inter = domain.interactions
  visible = np.asarray(visible, np.int64)
  rows = np.asarray(rows, np.int64)
  if k <= 0 or len(visible) == 0:
    return np.full((len(rows), max(k, 0)), -1, np.int64)
  order = canonical_order(domain, visible)
  # (user, time) as one sortable int64 key: times replaced by their dense rank.
  _, time_rank = np.unique(inter.time, return_inverse=True)
  span = np.int64(time_rank.max() + 1)
  key = inter.user[order].astype(np.int64) * span + time_rank[order]
  user = inter.user[rows].astype(np.int64)
  end = np.searchsorted(key, user * span + time_rank[rows], side="left")
  start = np.searchsorted(key, user * span, side="left")
  pos = end[:, None] - k + np.arange(k)[None, :]
  ok = pos >= start[:, None]
  return np.where(ok, order[np.clip(pos, 0, len(order) - 1)], -1)


# ----------------------------------------------------------------------------- ranking candidates


def ranking_candidates(domain: schema.Domain, split: Split, eval_rows: np.ndarray,
                       num_negatives: int = 99, seed: int = 0) -> np.ndarray:
  """[R, 1 + num_negatives] item codes: each eval row's item (column 0) and sampled negatives.

  Negatives are items the user never interacted with in any split (nor in `split.removed`), drawn
  with one `default_rng(seed)` as `rng.choice(never_interacted, num_negatives, replace=False)`,
  visiting rows by user code (sorted user ids), then canonical order, with `never_interacted` in
  item-id order (YARDSTICKS P-rank-loo; ML-100K popularity then gives HR@10 0.3961). `split` is
  accepted so that protocols which restrict
  the pool by split can grow here; today every row of the domain counts as interacted.
  """
  del split  # All rows count as interacted, whichever split holds them.
  inter = domain.interactions
  eval_rows = np.asarray(eval_rows, np.int64)
  visit = canonical_order(domain, eval_rows)
  by_user = np.argsort(inter.user, kind="stable")
  bounds = np.searchsorted(inter.user[by_user], np.arange(inter.num_users + 1))
  rng = np.random.default_rng(seed)
  out = np.empty((len(eval_rows), 1 + num_negatives), np.int32)
  where = {int(r): i for i, r in enumerate(eval_rows)}
  if len(where) != len(eval_rows):
    raise ValueError("eval_rows contains repeated rows")
  never = np.ones(domain.num_items, bool)
  by_id = np.argsort(item_id_rank(domain))  # item codes in id order
  for r in visit:
    u = inter.user[r]
    seen = inter.item[by_user[bounds[u]:bounds[u + 1]]]
    never[seen] = False
    pool = by_id[never[by_id]]
    never[seen] = True
    if len(pool) < num_negatives:
      raise ValueError(f"user {inter.user_ids[u]!r} has only {len(pool)} never-interacted items, "
                       f"fewer than num_negatives={num_negatives}")
    out[where[int(r)], 0] = inter.item[r]
    out[where[int(r)], 1:] = rng.choice(pool, num_negatives, replace=False)
  return out
