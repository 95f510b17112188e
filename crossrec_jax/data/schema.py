"""Typed, validated columnar tables: items, interactions, domains and a source/target pair.

Everything downstream (splits, text, tokens, baselines) works on these integer-indexed numpy
columns. Raw string ids are encoded once, here, where they can be checked: an interaction with an
empty or blank user id, an unknown item, a rating outside the domain's scale, a NaN, a duplicate
(user, item, time) row or a (user, item) pair again at another time is an error naming the row
(file and line when the reader passes them), or, with `on_error="skip"` (`on_duplicate`,
`on_repeat` for the last two), is dropped, counted and reported in `Domain.skipped`; "keep" keeps
and counts them. Nothing is dropped or clamped silently.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Literal, Mapping, Sequence

import numpy as np

OnError = Literal["raise", "skip"]
# Duplicate (user, item, time) rows are usually a double-logged event ("raise"/"skip"), but where
# a dataset merges items (ML-100K's ids are titles: 18 titles merge two films) they are two real
# ratings, and protocols keep them ("keep", counted in the report).
OnDuplicate = Literal["raise", "skip", "keep"]
# How `Interactions.time` orders a user's interactions: real timestamps, a given sequence position
# (implicit logs without clocks), or a seeded random permutation (data with neither, e.g.
# Book-Crossing, whose file order is by ISBN and would leak a language/publisher group).
TimeKind = Literal["timestamp", "sequence", "permuted"]


class DataError(ValueError):
  """Bad input data; the message names the file, line and field (or row) at fault."""


@dataclasses.dataclass
class SkipReport:
  """Rows dropped by an explicit `on_error="skip"` policy, counted per reason."""

  counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
  examples: dict[str, list[str]] = dataclasses.field(default_factory=dict)
  kept: collections.Counter = dataclasses.field(default_factory=collections.Counter)

  def add(self, reason: str, where: str, n: int = 1) -> None:
    self.counts[reason] += n
    shown = self.examples.setdefault(reason, [])
    if len(shown) < 3:
      shown.append(where)

  def merge(self, other: "SkipReport") -> "SkipReport":
    for reason, n in other.counts.items():
      self.counts[reason] += n
      for where in other.examples.get(reason, []):
        if len(self.examples.setdefault(reason, [])) < 3:
          self.examples[reason].append(where)
    self.kept.update(other.kept)
    return self

  @property
  def total(self) -> int:
    return sum(self.counts.values())

  def __str__(self) -> str:
    kept = "".join(f"; kept {n} x {reason}" for reason, n in sorted(self.kept.items()))
    if not self.counts:
      return "no rows skipped" + kept
    parts = [f"{n} x {reason} (e.g. {'; '.join(self.examples.get(reason, []))})"
             for reason, n in sorted(self.counts.items())]
    return f"skipped {self.total} rows: " + ", ".join(parts) + kept


@dataclasses.dataclass(frozen=True)
class RatingScale:
  """A domain's rating range. Implicit feedback: every interaction is a positive (value 1)."""

  low: float
  high: float
  implicit: bool = False

  def __post_init__(self):
    if not self.implicit and not self.high > self.low:
      raise ValueError(f"rating scale needs high > low, got [{self.low}, {self.high}]")

  def contains(self, r: np.ndarray) -> np.ndarray:
    return (r >= self.low) & (r <= self.high)

  def normalise(self, r: np.ndarray) -> np.ndarray:
    """Ratings -> [0, 1], so domains on different scales share one rating head."""
    if self.implicit:
      return np.ones_like(np.asarray(r, np.float32))
    return ((np.asarray(r, np.float32) - self.low) / (self.high - self.low)).astype(np.float32)

  def denormalise(self, x: np.ndarray) -> np.ndarray:
    """[0, 1] -> the domain's own scale (metrics are reported there)."""
    return (np.asarray(x, np.float32) * (self.high - self.low) + self.low).astype(np.float32)


IMPLICIT = RatingScale(1.0, 1.0, implicit=True)


@dataclasses.dataclass(frozen=True)
class Items:
  """An item catalogue: unique string ids and text fields (title, genres, author, ...)."""

  ids: np.ndarray  # [I] object array of str, unique
  fields: Mapping[str, np.ndarray]  # name -> [I] object array of str ("" when unknown)

  def __post_init__(self):
    ids = np.asarray(self.ids, dtype=object)
    object.__setattr__(self, "ids", ids)
    fields = {k: np.asarray(v, dtype=object) for k, v in self.fields.items()}
    object.__setattr__(self, "fields", fields)
    for name, col in fields.items():
      if len(col) != len(ids):
        raise DataError(f"item field {name!r} has {len(col)} values for {len(ids)} item ids")
    if len(set(ids.tolist())) != len(ids):
      counts = collections.Counter(ids.tolist())
      dup = [i for i, n in counts.items() if n > 1][:5]
      raise DataError(f"duplicate item ids in the item table: {dup}")

  def __len__(self) -> int:
    return len(self.ids)

  def index(self) -> dict[str, int]:
    """id -> row. Built on demand (cheap for catalogues of 10^5 items)."""
    return {item_id: row for row, item_id in enumerate(self.ids.tolist())}

  def row(self, i: int) -> dict[str, str]:
    return {name: col[i] for name, col in self.fields.items()}


PARTS = ("train", "valid", "test", "context")  # the parts a source's own split may assign


@dataclasses.dataclass(frozen=True)
class Interactions:
  """Columnar interactions of one domain, integer-coded.

  `user` indexes `user_ids`; `item` indexes the domain's `Items` rows; `rating` is on the domain's
  own scale (1.0 for implicit); `time` orders each user's interactions (see `TimeKind`).
  """

  user_ids: np.ndarray  # [U] object array of str
  user: np.ndarray  # [N] int32
  item: np.ndarray  # [N] int32
  rating: np.ndarray  # [N] float32
  time: np.ndarray  # [N] int64
  # [N] object array of str in PARTS: a source's own split (`splits.given_split`); None = none.
  part: np.ndarray | None = None

  def __post_init__(self):
    if self.part is not None and len(self.part) != len(self.user):
      raise DataError(f"Interactions.part has {len(self.part)} rows, the table {len(self.user)}")
    if self.part is not None and not np.isin(self.part, PARTS).all():
      bad = sorted(set(np.asarray(self.part).tolist()) - set(PARTS))
      raise DataError(f"Interactions.part: unknown parts {bad[:5]} (allowed: {PARTS})")

  def __len__(self) -> int:
    return len(self.user)

  @property
  def num_users(self) -> int:
    return len(self.user_ids)

  def take(self, rows: np.ndarray) -> "Interactions":
    """A subset of rows (boolean mask or indices); the user vocabulary is kept."""
    return dataclasses.replace(self, user=self.user[rows], item=self.item[rows],
                               rating=self.rating[rows], time=self.time[rows],
                               part=None if self.part is None else self.part[rows])


@dataclasses.dataclass(frozen=True)
class Domain:
  """One domain: its items, its interactions, its rating scale and how time is defined."""

  name: str
  items: Items
  interactions: Interactions
  scale: RatingScale
  time_kind: TimeKind = "timestamp"
  skipped: SkipReport = dataclasses.field(default_factory=SkipReport)

  def __post_init__(self):
    if len(self.interactions) == 0:
      raise DataError(f"domain {self.name!r} has no interactions")
    if len(self.items) == 0:
      raise DataError(f"domain {self.name!r} has no items")

  @property
  def num_items(self) -> int:
    return len(self.items)

  def summary(self) -> str:
    return (f"{self.name}: {self.interactions.num_users} users, {self.num_items} items, "
            f"{len(self.interactions)} interactions, scale "
            f"{'implicit' if self.scale.implicit else f'[{self.scale.low:g}, {self.scale.high:g}]'}, "
            f"time={self.time_kind}; {self.skipped}")


@dataclasses.dataclass(frozen=True)
class CrossDomainData:
  """A source domain (data-rich) and a target domain (sparse) for transfer."""

  source: Domain
  target: Domain
  name: str = ""

  def domains(self) -> tuple[Domain, Domain]:
    return self.source, self.target


DUPLICATE = "duplicate (user, item, time) row"
REPEAT = "(user, item) repeat at another time"


def _apply(policy: str, rows: np.ndarray, reason: str, field: str, keep: np.ndarray, reject,
           report: SkipReport) -> None:
  """A duplicate-row policy: "keep" counts the kept rows, "raise"/"skip" go through `reject`."""
  if policy == "keep":
    if (rows & keep).any():
      report.kept[reason] += int((rows & keep).sum())
  elif policy in ("raise", "skip"):
    reject(rows, reason, field, policy=policy)
  else:
    raise ValueError(f"on_duplicate / on_repeat must be 'raise', 'skip' or 'keep', got "
                     f"{policy!r}")


def _repeats(keep: np.ndarray, key: np.ndarray, time: np.ndarray | None = None) -> np.ndarray:
  """Kept rows whose key (and time) equal those of an earlier kept row in file order."""
  rows = np.flatnonzero(keep)
  k = key[rows]
  order = np.argsort(k, kind="stable") if time is None else np.lexsort((time[rows], k))  # stable
  equal = k[order[1:]] == k[order[:-1]]
  if time is not None:
    equal &= time[rows][order[1:]] == time[rows][order[:-1]]
  out = np.zeros(len(keep), bool)
  out[rows[order[1:][equal]]] = True
  return out


def _where(origin: tuple[str, np.ndarray] | None, row: int, field: str) -> str:
  if origin is None:
    return f"row {row}, field {field!r}"
  path, lines = origin
  return f"{path}:{int(lines[row])}, field {field!r}"


def build_domain(name: str, *, user_ids: Sequence[str], item_ids: Sequence[str],
                 ratings: Sequence[float] | np.ndarray | None, times: Sequence[int] | np.ndarray,
                 items: Items, scale: RatingScale, time_kind: TimeKind = "timestamp",
                 on_error: OnError = "raise", on_duplicate: OnDuplicate | None = None,
                 on_repeat: OnDuplicate | None = None,
                 origin: tuple[str, np.ndarray] | None = None,
                 skipped: SkipReport | None = None,
                 parts: Sequence[str] | None = None) -> Domain:
  """Validate raw string-keyed interaction columns and encode them against `items`.

  Args:
    parts: a source's own split, per row one of PARTS (`Interactions.part`, `split='given'`).
    ratings: None for implicit feedback (every row is a positive with rating 1).
    origin: (file path, [N] line numbers) so that errors point at the raw line.
    on_error: "raise" stops at the first bad row; "skip" drops it and counts it per reason.
    on_duplicate: policy for duplicate (user, item, time) rows; defaults to `on_error`.
    on_repeat: policy for a (user, item) pair rated again at another time (counted as
      REPEAT); defaults to the duplicate policy. The first row (file order) is kept.
    skipped: a report to extend (a reader's own parse-level skips).
  """
  if on_error not in ("raise", "skip"):
    raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
  report = skipped if skipped is not None else SkipReport()
  user_col = np.asarray(user_ids, dtype=object)
  item_col = np.asarray(item_ids, dtype=object)
  n = len(user_col)
  rating = (np.ones(n, np.float32) if ratings is None else np.asarray(ratings, np.float64))
  time = np.asarray(times, np.float64)
  if not (len(item_col) == len(rating) == len(time) == n):
    raise DataError(f"domain {name!r}: column lengths differ (users {n}, items {len(item_col)}, "
                    f"ratings {len(rating)}, times {len(time)})")
  keep = np.ones(n, bool)

  def reject(bad: np.ndarray, reason: str, field: str, policy: str = on_error) -> None:
    bad = bad & keep
    if not bad.any():
      return
    rows = np.flatnonzero(bad)
    if policy == "raise":
      detail = f"value {_value(field, rows[0])!r}"
      hint = "on_error" if reason not in (DUPLICATE, REPEAT) else (
          "on_duplicate" if reason == DUPLICATE else "on_repeat")
      raise DataError(f"domain {name!r}: {reason} at {_where(origin, rows[0], field)}: {detail}"
                      f" ({len(rows)} such rows; pass {hint}='skip' to drop and count them)")
    for r in rows[:3]:
      report.add(reason, _where(origin, r, field))
    report.counts[reason] += len(rows) - min(len(rows), 3)
    keep[rows] = False

  def _value(field: str, row: int):
    value = {"user": user_col, "item": item_col, "rating": rating, "time": time}[field][row]
    return value.item() if isinstance(value, np.generic) else value  # 9.0, not np.float64(9.0)

  if set(map(type, user_col.tolist())) <= {str}:
    user_vocab, user_all = np.unique(user_col.astype(str), return_inverse=True)
    blank = np.char.strip(user_vocab) == ""  # checked once per distinct id: ML-1M has 10^6 rows
    reject(blank[user_all], "empty user id", "user")
  else:
    reject(np.array([not isinstance(u, str) or not u.strip() for u in user_col], bool),
           "empty user id", "user")
    user_vocab, user_all = np.unique(user_col.astype(str), return_inverse=True)
  index = items.index()
  item_row = np.fromiter((index.get(i, -1) for i in item_col), np.int64, count=n)
  reject(item_row < 0, "unknown item id", "item")
  reject(np.isnan(rating), "NaN rating", "rating")
  if not scale.implicit:
    reject(~scale.contains(np.nan_to_num(rating, nan=scale.low)), "rating outside "
           f"[{scale.low:g}, {scale.high:g}]", "rating")
  reject(~np.isfinite(time), "non-finite time", "time")
  # Duplicate (user, item, time) rows: a double-logged event, not two ratings; a (user, item)
  # repeat at another time: a re-rating. Either way the first kept row in file order stays.
  pair = user_all.astype(np.int64) * (len(items) + 1) + item_row + 1
  same = _repeats(keep, pair, time)
  _apply(on_duplicate or on_error, same, DUPLICATE, "time", keep, reject, report)
  again = _repeats(keep, pair) & ~same  # kept exact duplicates are not re-ratings
  _apply(on_repeat or on_duplicate or on_error, again, REPEAT, "item", keep, reject, report)

  # Re-code users over the kept rows only (a user whose rows were all skipped disappears).
  present, user_code = np.unique(user_all[keep], return_inverse=True)
  vocab = user_vocab[present]
  if parts is not None and len(parts) != n:
    raise DataError(f"domain {name!r}: parts has {len(parts)} rows, the columns {n}")
  inter = Interactions(user_ids=vocab.astype(object), user=user_code.astype(np.int32),
                       item=item_row[keep].astype(np.int32),
                       rating=rating[keep].astype(np.float32), time=time[keep].astype(np.int64),
                       part=None if parts is None else np.asarray(parts, object)[keep])
  return Domain(name=name, items=items, interactions=inter, scale=scale, time_kind=time_kind,
                skipped=report)
