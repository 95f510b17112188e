"""Shared plumbing for the raw-format readers: streaming lines, bad-line policy, row buffers.

Readers stream their inputs line by line (`iter_lines`), so a multi-GB review log never sits in
memory as one string or one parsed JSON document. A bad line becomes a `DataError` naming the file,
line and field, or, with `on_error="skip"`, a counted entry in the domain's `SkipReport`; that
includes a line with undecodable bytes and, in interaction files, a last line without its newline.

Item text fields follow one naming convention across readers (`ITEM_TEXT_FIELDS`), so that text
templates downstream can ask for `title`, `genres`, `author`, ... whatever the source format.
"""

from __future__ import annotations

import gzip
import os
import re
import zlib
from typing import Iterator, Literal

import numpy as np

from crossrec_jax.data.schema import DataError, OnError, SkipReport

# Item text field names used by every reader where the source has them ("" when unknown):
#   title      display name without a trailing "(year)"      year       release/publication year
#   genres     ", "-joined genre list                          author     book author
#   publisher  book publisher                                  category   " > "-joined category path
#   brand      brand or store name
# A reader may add fields the source has beyond these; templates ignore names they do not use.
ITEM_TEXT_FIELDS = ("title", "year", "genres", "author", "publisher", "category", "brand")

GZIP_MAGIC = b"\x1f\x8b"
LastLine = Literal["any", "note", "require"]
_YEAR_SUFFIX = re.compile(r"^(.*\S)\s+\((\d{4})\)\s*$")


def split_title_year(title: str) -> tuple[str, str]:
  """'Toy Story (1995)' -> ('Toy Story', '1995'); no year suffix -> (title, '')."""
  m = _YEAR_SUFFIX.match(title)
  return (m.group(1), m.group(2)) if m else (title.strip(), "")


def path_str(path: str | os.PathLike) -> str:
  return os.fspath(path)


def iter_lines(path: str | os.PathLike, encoding: str = "utf-8", *,
               policy: "LinePolicy | None" = None, last_line: LastLine = "any",
               header: bool = False) -> Iterator[tuple[int, str]]:
  """Yields (1-based line number, line without its end-of-line), streaming; gzip is gunzipped.

  Each line is decoded on its own, so an undecodable byte is reported on its own line and, with a
  skipping `policy`, drops that line only (never line 1 of a file with a `header`: that is a
  DataError). A final line without its newline is a file cut mid-line whose last line may still
  parse ('10' cut to '1'): `last_line="require"` (interaction and sequence files) makes it a bad
  line, "note" (catalogues: the real BX-Books.csv ends so) keeps it and counts it in the policy's
  report, "any" accepts it. Without a `policy` bad lines are a DataError naming file:line.
  Truncated or corrupt gzip streams are a DataError naming the file and the last line read; a
  `.gz` name on plain data and gzip data without a `.gz` name are a DataError saying which,
  instead of a decoding error. `encoding` must be ASCII-compatible (utf-8, latin-1): lines are
  split on the byte b"\\n".
  """
  path = path_str(path)
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  with open(path, "rb") as f:
    magic = f.read(2)
  zipped = magic == GZIP_MAGIC
  if path.endswith(".gz") and magic and not zipped:
    raise DataError(f"{path}: named .gz but not gzip data (it starts with {magic!r}); the file "
                    "is fine if it is plain text: remove the .gz from its name")
  if zipped and not path.endswith(".gz"):
    raise DataError(f"{path}: gzip-compressed data under a name without .gz; rename it to "
                    f"{os.path.basename(path)}.gz or gunzip it")
  lineno = 0
  try:
    with (gzip.open if zipped else open)(path, "rb") as f:
      while chunk := f.readlines(1 << 16):
        try:  # one decode per ~64 KB of whole lines; line by line only where that fails
          texts = b"".join(chunk).decode(encoding).split("\n")
        except UnicodeDecodeError:
          texts = None
        for k, raw in enumerate(chunk):
          lineno += 1
          bad = None
          if texts is not None:
            line = texts[k]
          else:
            try:
              line = raw.decode(encoding).rstrip("\n")
            except UnicodeDecodeError as e:
              bad = BadField("bytes", f"bytes that are not {encoding} (byte "
                             f"{raw[e.start:e.start + 1]!r} at column {e.start + 1})")
          if bad is None and last_line != "any" and not raw.endswith(b"\n") and line.strip():
            if last_line == "require":
              bad = BadField("line", "last line has no end-of-line (the file may be cut)", line)
            elif policy is not None:
              policy.report.kept[f"{os.path.basename(path)}: last line without end-of-line "
                                 "(kept; the file may be cut)"] += 1
          if bad is not None:
            if policy is None or (header and lineno == 1):
              raise DataError(f"{path}:{lineno}: {bad.reason}")
            policy(lineno, bad)
            continue
          yield lineno, line.removesuffix("\r")
  except (EOFError, zlib.error, gzip.BadGzipFile) as e:
    raise DataError(f"{path}: truncated or corrupt gzip stream after line {lineno} ({e}); "
                    "re-download the file") from e


class BadField(Exception):
  """Raised inside a reader's per-line parse; `LinePolicy` turns it into a DataError or a skip."""

  def __init__(self, field: str, reason: str, value: object = None):
    super().__init__(reason)
    self.field, self.reason, self.value = field, reason, value


class LinePolicy:
  """Applies `on_error` to a bad line: raise a DataError naming file:line and field, or count it."""

  def __init__(self, path: str | os.PathLike, on_error: OnError, report: SkipReport):
    if on_error not in ("raise", "skip"):
      raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    self.path, self.on_error, self.report = path_str(path), on_error, report

  def __call__(self, lineno: int, bad: BadField) -> None:
    where = f"{self.path}:{lineno}, field {bad.field!r}"
    if self.on_error == "raise":
      shown = "" if bad.value is None else f": value {_clip(bad.value)!r}"
      raise DataError(f"{bad.reason} at {where}{shown} "
                      "(pass on_error='skip' to drop and count such lines)")
    self.report.add(bad.reason, where)


def _clip(value: object, n: int = 80) -> object:
  if isinstance(value, str) and len(value) > n:
    return value[:n] + "..."
  return value


def need(fields: list[str], n: int, sep: str, what: str = "line") -> None:
  """Checks a split line's field count (a wrong delimiter shows up here)."""
  if len(fields) != n:
    raise BadField(what, f"expected {n} {sep!r}-separated fields, got {len(fields)}",
                   sep.join(fields))


def to_float(field: str, value: object) -> float:
  if isinstance(value, bool):  # JSON true would be float 1.0: a 1-star rating
    raise BadField(field, "non-numeric value", value)
  try:
    out = float(value)
  except (TypeError, ValueError):
    raise BadField(field, "non-numeric value", value) from None
  return out


def to_time(field: str, value: object) -> int:
  """An integral timestamp ('978300760', 978300760, '978300760.0'); fractions are an error."""
  if isinstance(value, bool):
    raise BadField(field, "non-numeric value", value)
  if isinstance(value, int):
    return value
  if isinstance(value, str):
    try:
      return int(value)
    except ValueError:
      pass
  t = to_float(field, value)
  if not np.isfinite(t) or t != int(t):
    raise BadField(field, "non-integral timestamp", value)
  return int(t)


def to_id(field: str, value: object) -> str:
  """A non-empty id; JSON numbers are accepted and written as their decimal string."""
  if isinstance(value, bool) or value is None:
    raise BadField(field, "missing or non-string id", value)
  if isinstance(value, int):
    value = str(value)
  if not isinstance(value, str) or not value.strip():
    raise BadField(field, "missing or empty id", value)
  return value


class Rows:
  """Raw interaction columns collected while streaming, with each row's line number."""

  def __init__(self):
    self.users: list[str] = []
    self.items: list[str] = []
    self.ratings: list[float] = []
    self.times: list[int] = []
    self.lines: list[int] = []

  def add(self, lineno: int, user: str, item: str, rating: float, time: int) -> None:
    self.users.append(user)
    self.items.append(item)
    self.ratings.append(rating)
    self.times.append(time)
    self.lines.append(lineno)

  def __len__(self) -> int:
    return len(self.users)

  def origin(self, path: str | os.PathLike) -> tuple[str, np.ndarray]:
    return path_str(path), np.asarray(self.lines, np.int64)

  def require_rows(self, path: str | os.PathLike, report: SkipReport) -> None:
    """An empty interaction file is an error of its own, not a bare 'no interactions'."""
    if not self.users:
      skipped = f" ({report})" if report.total else ""
      raise DataError(f"{path_str(path)}: no interaction rows{skipped}")
