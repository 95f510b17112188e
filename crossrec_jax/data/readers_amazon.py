"""Readers for the Amazon review releases of McAuley's lab: 2018 (Ni et al.) and 2023 (Hou et al.).

Both are one JSON object a line, usually gzipped, streamed here line by line (a category's review
file can be GBs). Reviews are read first; the optional metadata file is then streamed and only the
reviewed items' rows are kept (meta files list millions of unreviewed products: their rows are
counted as skipped, not stored). Items without a metadata row get empty text fields, counted in
`Domain.skipped.kept`.

* 2018 reviews `*_5.json.gz`: `overall` (1-5), `reviewerID`, `asin`, `unixReviewTime` (seconds).
  Meta `meta_*.json.gz`: `asin`, `title`, `brand`, `category` (a list: the breadcrumb path), ...
  The 2018 meta dumps are JSON, but older McAuley dumps (2014) and some 2018 mirrors are Python
  literals (single quotes); a line that is not JSON is read with `ast.literal_eval`, which
  evaluates literals only, never code.
* 2023 reviews `*.jsonl(.gz)`: `rating` (1-5), `user_id`, `parent_asin` (default item key) or
  `asin`, `timestamp` (milliseconds, kept as is). Meta `meta_*.jsonl(.gz)`: `parent_asin`,
  `title`, `store` (-> `brand`), `categories` (-> `category`, `main_category` when empty).

Duplicates: the 2018 files repeat reviews (same reviewer, item and time; in the 5-core All_Beauty
file 1,108 of 5,269 lines), so both readers default to `on_duplicate="skip"`: each repeat is dropped
and counted. Pass `on_duplicate="keep"` to keep the raw lines (the README's counts are raw lines).
A reviewer reviewing an item again at another time (69 pairs in All_Beauty) follows `on_repeat`:
by default kept and counted (`Domain.skipped.kept`) when `on_duplicate` is "skip", else the
`on_duplicate` policy, so `on_duplicate="raise"` stops at the first repeated pair.
"""

from __future__ import annotations

import ast
import json
import os

import numpy as np

from crossrec_jax.data.readers_io import (BadField, LinePolicy, Rows, iter_lines, path_str,
                                          to_float, to_id, to_time)
from crossrec_jax.data.schema import (Domain, Items, OnDuplicate, OnError, RatingScale, SkipReport,
                                      build_domain)

FIVE_STARS = RatingScale(1.0, 5.0)
_META_FIELDS = ("title", "brand", "category")


def _json_line(line: str, *, literal_ok: bool) -> dict:
  try:
    obj = json.loads(line)
  except json.JSONDecodeError as e:
    obj = None
    if literal_ok:
      try:
        obj = ast.literal_eval(line)
      except (ValueError, SyntaxError, MemoryError, RecursionError):
        obj = None
    if obj is None:
      raise BadField("json", f"not a JSON object ({e.msg}, column {e.colno})", line) from None
  if not isinstance(obj, dict):
    raise BadField("json", "not a JSON object", line)
  return obj


def _get(obj: dict, *keys: str) -> object:
  """The first present key's value; a BadField naming the keys when none is there."""
  for key in keys:
    if key in obj:
      return obj[key]
  raise BadField(" or ".join(keys), "missing field")


def _text(value: object, sep: str = ", ") -> str:
  """Meta values are strings, lists of strings or null; lists are joined."""
  if value is None:
    return ""
  if isinstance(value, (list, tuple)):
    return sep.join(str(v).strip() for v in value if v not in (None, ""))
  return str(value).strip()


def _reviews(path: str, *, rating_key: str, user_key: str, item_keys: tuple[str, ...],
             time_key: str, on_error: OnError, report: SkipReport) -> Rows:
  policy = LinePolicy(path, on_error, report)
  rows = Rows()
  for lineno, line in iter_lines(path, policy=policy, last_line="require"):
    if not line.strip():
      continue
    try:
      obj = _json_line(line, literal_ok=False)
      rows.add(lineno, to_id(user_key, _get(obj, user_key)),
               to_id(" or ".join(item_keys), _get(obj, *item_keys)),
               to_float(rating_key, _get(obj, rating_key)), to_time(time_key, _get(obj, time_key)))
    except BadField as bad:
      policy(lineno, bad)
  rows.require_rows(path, report)
  return rows


def _meta_items(item_ids: list[str], meta_path: str | None, *, item_keys: tuple[str, ...],
                fields, on_error: OnError, report: SkipReport) -> Items:
  """Items for the reviewed ids (first-seen order); text from the meta file where it has a row.

  `fields(obj) -> {name: text}` maps one meta object to our field names.
  """
  ids = list(dict.fromkeys(item_ids))
  row_of = {item: r for r, item in enumerate(ids)}
  values = {name: [""] * len(ids) for name in _META_FIELDS}
  found = np.zeros(len(ids), bool)
  if meta_path is not None:
    policy = LinePolicy(meta_path, on_error, report)
    for lineno, line in iter_lines(meta_path, policy=policy, last_line="note"):
      if not line.strip():
        continue
      try:
        obj = _json_line(line, literal_ok=True)
        item = to_id(" or ".join(item_keys), _get(obj, *item_keys))
        r = row_of.get(item)
        if r is None:
          report.add("meta row of an item without reviews (not in the catalogue)",
                     f"{meta_path}:{lineno}")
          continue
        if found[r]:
          report.kept["repeated meta row (the first is used)"] += 1
          continue
        text = fields(obj)
      except BadField as bad:
        policy(lineno, bad)
        continue
      found[r] = True
      for name, value in text.items():
        values[name][r] = value
  if not found.all():
    report.kept["item without a meta row (empty title)"] += int((~found).sum())
  return Items(ids=np.asarray(ids, dtype=object), fields=values)


def _fields_2018(obj: dict) -> dict[str, str]:
  return {"title": _text(obj.get("title")), "brand": _text(obj.get("brand")),
          "category": _text(obj.get("category"), " > ")}


def _fields_2023(obj: dict) -> dict[str, str]:
  category = _text(obj.get("categories"), " > ") or _text(obj.get("main_category"))
  return {"title": _text(obj.get("title")), "brand": _text(obj.get("store")),
          "category": category}


def read_amazon2018(reviews_path: str | os.PathLike, meta_path: str | os.PathLike | None = None,
                    *, name: str | None = None, on_error: OnError = "raise",
                    on_duplicate: OnDuplicate = "skip", on_repeat: OnDuplicate | None = None
                    ) -> Domain:
  """Amazon 2018 reviews (+ meta) -> Domain on the 1-5 scale; `time` in seconds.

  The name defaults to the file's category ("All_Beauty_5.json.gz" -> "All_Beauty").
  """
  reviews_path = path_str(reviews_path)
  report = SkipReport()
  rows = _reviews(reviews_path, rating_key="overall", user_key="reviewerID", item_keys=("asin",),
                  time_key="unixReviewTime", on_error=on_error, report=report)
  items = _meta_items(rows.items, None if meta_path is None else path_str(meta_path),
                      item_keys=("asin",), fields=_fields_2018, on_error=on_error, report=report)
  return build_domain(name or _category(reviews_path), user_ids=rows.users, item_ids=rows.items,
                      ratings=rows.ratings, times=rows.times, items=items, scale=FIVE_STARS,
                      on_error=on_error, on_duplicate=on_duplicate,
                      on_repeat=_repeat_policy(on_duplicate, on_repeat),
                      origin=rows.origin(reviews_path), skipped=report)


def read_amazon2023(reviews_path: str | os.PathLike, meta_path: str | os.PathLike | None = None,
                    *, name: str | None = None, item_key: str = "parent_asin",
                    on_error: OnError = "raise", on_duplicate: OnDuplicate = "skip",
                    on_repeat: OnDuplicate | None = None) -> Domain:
  """Amazon 2023 reviews (+ meta) -> Domain on the 1-5 scale; `time` in milliseconds.

  Items are keyed by `parent_asin` (variants of one product share it; the meta file is keyed by
  it) with a fallback to `asin` on lines without it; `item_key="asin"` keys by variant instead
  (no meta then: the meta files have no variant rows).
  """
  if item_key not in ("parent_asin", "asin"):
    raise ValueError(f"item_key must be 'parent_asin' or 'asin', got {item_key!r}")
  if item_key == "asin" and meta_path is not None:
    raise ValueError("the 2023 meta files are keyed by parent_asin: read them with "
                     "item_key='parent_asin'")
  keys = ("parent_asin", "asin") if item_key == "parent_asin" else ("asin",)
  reviews_path = path_str(reviews_path)
  report = SkipReport()
  rows = _reviews(reviews_path, rating_key="rating", user_key="user_id", item_keys=keys,
                  time_key="timestamp", on_error=on_error, report=report)
  items = _meta_items(rows.items, None if meta_path is None else path_str(meta_path),
                      item_keys=keys, fields=_fields_2023, on_error=on_error, report=report)
  return build_domain(name or _category(reviews_path), user_ids=rows.users, item_ids=rows.items,
                      ratings=rows.ratings, times=rows.times, items=items, scale=FIVE_STARS,
                      on_error=on_error, on_duplicate=on_duplicate,
                      on_repeat=_repeat_policy(on_duplicate, on_repeat),
                      origin=rows.origin(reviews_path), skipped=report)


def _repeat_policy(on_duplicate: OnDuplicate, on_repeat: OnDuplicate | None) -> OnDuplicate:
  """A re-review at another time is a real event: dropping exact re-logs ("skip") keeps it."""
  if on_repeat is not None:
    return on_repeat
  return "keep" if on_duplicate == "skip" else on_duplicate


def _category(path: str) -> str:
  base = os.path.basename(path)
  for suffix in (".gz", ".jsonl", ".json"):
    base = base.removesuffix(suffix)
  return base.removesuffix("_5") or base
