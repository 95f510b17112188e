"""Reader for Book-Crossing (Ziegler et al., WWW 2005) in the re-cut of ../shared/data/bookcrossing.

`BX-Books.csv` (ISBN, Book-Title, Book-Author, Year-Of-Publication, Book-Publisher) and
`BX-Ratings.csv` (User-ID, ISBN, Book-Rating 1..10): CSV with a header, UTF-8, read one physical
line at a time (a quoting error names its own line). (The original 2004 dump is `;`-separated
latin-1 with a 0 "implicit" rating; it is not this format.)

There are no timestamps, and `BX-Ratings.csv` is sorted by ISBN within each user, so file order
would make "the last interaction" the user's largest ISBN: a language/publisher group, not a random
book. `time` is therefore a seeded random permutation of each user's ratings (0..n_u-1) and
`time_kind="permuted"`. Year 0 means "unknown" in Book-Crossing and becomes "" (counted).
"""

from __future__ import annotations

import csv
import os

import numpy as np

from crossrec_jax.data.readers_io import (BadField, LastLine, LinePolicy, Rows, iter_lines,
                                          path_str, to_float, to_id)
from crossrec_jax.data.schema import (DataError, Domain, Items, OnError, RatingScale, SkipReport,
                                      build_domain)

TEN_STARS = RatingScale(1.0, 10.0)
BOOK_COLUMNS = {"ISBN": "isbn", "Book-Title": "title", "Book-Author": "author",
                "Year-Of-Publication": "year", "Book-Publisher": "publisher"}
RATING_COLUMNS = ("User-ID", "ISBN", "Book-Rating")


def _records(path: str, required: tuple[str, ...], policy: LinePolicy, last_line: LastLine):
  """Yields (line number, {column: value} or BadField) for a headed CSV, one physical line each.

  Book-Crossing has no quoted newlines, so each line is parsed on its own: a stray quote is an
  error on its own line (the csv module would read on to the next quote, swallowing the lines in
  between), and an undecodable byte drops only its line under on_error="skip".
  """
  lines = iter_lines(path, "utf-8", policy=policy, last_line=last_line, header=True)
  first = next(lines, None)
  if first is None:
    raise DataError(f"{path}: empty file (expected a header with columns {list(required)})")
  try:
    header = _csv_line(first[1])
  except BadField as bad:
    raise DataError(f"{path}:1: header: {bad.reason}") from None
  missing = [c for c in required if c not in header]
  if missing:
    raise DataError(f"{path}:1: column(s) {missing} missing from the header {header}; "
                    "the file must be comma-separated UTF-8 with a header line")
  cols = [header.index(c) for c in required]
  for lineno, line in lines:
    if not line:
      continue
    try:
      record = _csv_line(line)
      if len(record) != len(header):
        raise BadField("line", f"expected {len(header)} ','-separated fields, got {len(record)}",
                       line)
    except BadField as bad:
      yield lineno, bad
      continue
    yield lineno, {c: record[i] for c, i in zip(required, cols)}


def _csv_line(line: str) -> list[str]:
  if '"' not in line:
    return line.split(",")  # what the csv module gives for a line without quotes, only faster
  try:
    return next(csv.reader((line,), strict=True))
  except csv.Error as e:
    raise BadField("line", f"malformed CSV quoting ({e})", line) from None


def _books(path: str, on_error: OnError, report: SkipReport) -> Items:
  policy = LinePolicy(path, on_error, report)
  ids: list[str] = []
  values: dict[str, list[str]] = {name: [] for name in BOOK_COLUMNS.values() if name != "isbn"}
  seen: dict[str, int] = {}
  for lineno, record in _records(path, tuple(BOOK_COLUMNS), policy, "note"):
    try:
      if isinstance(record, BadField):
        raise record
      isbn = to_id("ISBN", record["ISBN"])
      if isbn in seen:
        raise BadField("ISBN", f"duplicate ISBN (first at line {seen[isbn]})", isbn)
    except BadField as bad:
      policy(lineno, bad)
      continue
    seen[isbn] = lineno
    ids.append(isbn)
    for column, name in BOOK_COLUMNS.items():
      if name != "isbn":
        values[name].append(record[column].strip())
  if not ids:
    raise DataError(f"{path}: no book rows")
  unknown_year = np.asarray(values["year"], dtype=object) == "0"
  if unknown_year.any():
    report.kept["book with year 0 (unknown: written as '')"] += int(unknown_year.sum())
    values["year"] = ["" if y == "0" else y for y in values["year"]]
  return Items(ids=np.asarray(ids, dtype=object), fields=values)


def permuted_times(users: np.ndarray, seed: int) -> np.ndarray:
  """Per user, the ranks 0..n_u-1 of a seeded random order of that user's rows."""
  n = len(users)
  key = np.random.default_rng(seed).permutation(n)
  order = np.lexsort((key, users))
  sorted_users = users[order]
  starts = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
  first = np.repeat(starts, np.diff(np.r_[starts, n]))
  times = np.empty(n, np.int64)
  times[order] = np.arange(n) - first
  return times


def read_bookcrossing(directory: str | os.PathLike, *, seed: int = 0, kcore: int | None = None,
                      name: str = "bookcrossing", on_error: OnError = "raise") -> Domain:
  """Book-Crossing -> Domain on the 1-10 scale with permuted times (see the module docstring).

  `kcore` applies `crossrec_jax.data.splits.kcore_filter` (iterative, per user and per book)
  after reading; the times are drawn before filtering, so a user's order does not depend on k.
  """
  directory = path_str(directory)
  report = SkipReport()
  items = _books(os.path.join(directory, "BX-Books.csv"), on_error, report)
  ratings_path = os.path.join(directory, "BX-Ratings.csv")
  policy = LinePolicy(ratings_path, on_error, report)
  rows = Rows()
  # Without timestamps the schema's (user, item, time) duplicate check cannot see a repeated
  # (user, ISBN) pair (their permuted times differ), so it is checked here.
  first_line: dict[tuple[str, str], int] = {}
  for lineno, record in _records(ratings_path, RATING_COLUMNS, policy, "require"):
    try:
      if isinstance(record, BadField):
        raise record
      user, isbn = to_id("User-ID", record["User-ID"]), to_id("ISBN", record["ISBN"])
      rating = to_float("Book-Rating", record["Book-Rating"])
      if first_line.setdefault((user, isbn), lineno) != lineno:
        raise BadField("ISBN", "duplicate (User-ID, ISBN) rating (first at line "
                       f"{first_line[user, isbn]})", isbn)
      rows.add(lineno, user, isbn, rating, 0)
    except BadField as bad:
      policy(lineno, bad)
  rows.require_rows(ratings_path, report)
  _, user_code = np.unique(np.asarray(rows.users, dtype=str), return_inverse=True)
  domain = build_domain(name, user_ids=rows.users, item_ids=rows.items, ratings=rows.ratings,
                        times=permuted_times(user_code, seed), items=items, scale=TEN_STARS,
                        time_kind="permuted", on_error=on_error,
                        origin=rows.origin(ratings_path), skipped=report)
  if kcore:
    from crossrec_jax.data.splits import kcore_filter  # pylint: disable=g-import-not-at-top
    domain = kcore_filter(domain, kcore)
  return domain
