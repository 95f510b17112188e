"""Reader for the implicit cross-domain sequence format of ../shared/data/amazon_food_kitchen.

The format (LLMCDSR's `data/food-kitchen`, pickles converted to JSON):
  num.txt            item counts of A (Grocery & Gourmet Food) and B (Home & Kitchen), a line each
  instance_num.txt   user counts: A-only, B-only, overlapping
  item_set_A/B.json  ASIN -> index within its domain (0-based)
  text_A/B.json      ASIN -> product title
  train_A.txt        `uid<TAB>i,j,k,...` A-only users; indices are A indices
  train_B.txt        B-only users; indices are offset by the A count (B index + |A|)
  train_overlap.txt  overlapping users; one mixed sequence of A and offset-B indices
  valid.txt/test.txt held-out overlapping users (their own uid numbering, not the training
                     users): a mixed sequence whose last item is the target (either domain)

The two domains come back as a `CrossDomainData` (A = food = source, B = kitchen = target) with
`IMPLICIT` scale and `time_kind="sequence"`: `time` is the position in the user's sequence in its
file (for an overlapping user, the position in the mixed sequence, so each domain's order is the
given order and the two interleave as given). User ids name their file: "food:7", "kitchen:7",
"overlap:7". The held-out valid/test sequences are kept as given, in `HeldOutSequences` attached to
the returned `SequenceCrossDomainData` (a `CrossDomainData` with `valid`, `test` and the sequence
files' own skip report; the domains' reports hold their catalogue notes).

A sequence file holds one line per user: a second line with the same uid is a bad line, not more
history. The file's line count must match instance_num.txt (train files) or, for valid/test,
the known release's count (`HELD_OUT_COUNTS`), so a file cut at a line boundary is an error; one
cut mid-line is caught by its missing final newline. An item again later in a sequence is kept as
a re-purchase (counted in the domain's report).
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from crossrec_jax.data.readers_io import BadField, LinePolicy, iter_lines, path_str, to_id
from crossrec_jax.data.schema import (IMPLICIT, CrossDomainData, DataError, Items, OnError,
                                      SkipReport, build_domain)

SOURCE, TARGET = 0, 1  # domain codes in HeldOutSequences: A (food), B (kitchen)
# valid/test user counts are in no file of the format, so a cut at a line boundary would parse:
# the known releases' counts, keyed by (num.txt, instance_num.txt).
HELD_OUT_COUNTS = {(8661, 27637, 5472, 38191, 7501): {"valid": 960, "test": 937}}  # LLMCDSR


@dataclasses.dataclass(frozen=True)
class HeldOutSequences:
  """Held-out users' mixed-domain histories, each with one target item, in file order.

  Items are (domain, row) pairs: domain 0 = source (A), 1 = target (B); row indexes that
  domain's `Items`. User s's history is rows offsets[s]:offsets[s+1] of the history arrays.
  """

  user_ids: np.ndarray  # [S] object array of str, e.g. "valid:1"
  offsets: np.ndarray  # [S+1] int64
  history_domain: np.ndarray  # [H] int8
  history_item: np.ndarray  # [H] int32
  target_domain: np.ndarray  # [S] int8
  target_item: np.ndarray  # [S] int32

  def __len__(self) -> int:
    return len(self.user_ids)

  def history(self, s: int) -> tuple[np.ndarray, np.ndarray]:
    """(domains, rows) of user s's history, oldest first."""
    lo, hi = self.offsets[s], self.offsets[s + 1]
    return self.history_domain[lo:hi], self.history_item[lo:hi]


@dataclasses.dataclass(frozen=True)
class SequenceCrossDomainData(CrossDomainData):
  """A `CrossDomainData` that also carries the dataset's own held-out sequences."""

  valid: HeldOutSequences | None = None
  test: HeldOutSequences | None = None
  # Lines of the sequence files (train_*, valid, test) skipped under on_error="skip": a line can
  # hold both domains' items, so these are kept here rather than in one domain's report.
  skipped: SkipReport = dataclasses.field(default_factory=SkipReport)

  def summary(self) -> str:
    held = ", ".join(f"{k} {len(v)} held-out sequences" for k, v in
                     (("valid", self.valid), ("test", self.test)) if v is not None)
    return (f"{self.name}: source {self.source.summary()} | target {self.target.summary()} | "
            f"{held}; sequence files: {self.skipped}")


def _ints(path: str, n: int) -> list[int]:
  """Exactly `n` non-negative integer lines (an extra line is a different file, not ignored).

  A count cut short ('27637' -> '2763') fails the checks against item_set_*.json and the sequence
  files, so a missing final newline is accepted here (`echo -n` writes such files).
  """
  values = []
  for lineno, line in iter_lines(path):
    if line.strip():
      try:
        values.append(int(line))
      except ValueError:
        raise DataError(f"{path}:{lineno}: expected an integer count, got {line!r}") from None
      if values[-1] < 0 or len(values) > n:
        raise DataError(f"{path}:{lineno}: expected {n} non-negative integer lines, got "
                        f"{line!r} as number {len(values)}")
  if len(values) < n:
    raise DataError(f"{path}: expected {n} integer lines, got {len(values)}")
  return values


def _catalogue(directory: str, side: str, count: int, report: SkipReport) -> Items:
  """item_set_{side}.json (ASIN -> index) + text_{side}.json (ASIN -> title) -> Items by index."""
  path = os.path.join(directory, f"item_set_{side}.json")
  index = _json_map(path)
  # bool is an int in Python: JSON true would silently be index 1.
  bad = [(k, v) for k, v in index.items()
         if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < count]
  if bad:
    raise DataError(f"{path}: ASIN {bad[0][0]!r} has index {bad[0][1]!r}, not in [0, {count}) "
                    f"(num.txt); {len(bad)} such entries")
  ids = np.empty(count, dtype=object)
  ids[list(index.values())] = list(index.keys())
  if len(index) != count or any(i is None for i in ids):
    raise DataError(f"{path}: {len(index)} ASINs for {count} indices (num.txt); the indices must "
                    f"be 0..{count - 1}, each once")
  text_path = os.path.join(directory, f"text_{side}.json")
  text = _json_map(text_path)
  titles = [str(text.get(asin, "") or "").strip() for asin in ids]
  missing = sum(1 for t in titles if not t)
  if missing:
    report.kept[f"item without a title in text_{side}.json (empty title)"] += missing
  extra = len(set(text) - set(index))
  if extra:
    report.add(f"title for an ASIN not in item_set_{side}.json", text_path, extra)
  return Items(ids=ids, fields={"title": titles})


def _json_map(path: str) -> dict:
  """A JSON object file (a few MB: a map, not a log, so it is loaded whole)."""
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  with open(path, "rb") as f:
    data = f.read()
  repeated: list[str] = []

  def pairs(items: list[tuple[str, object]]) -> dict:
    out = dict(items)
    if len(out) != len(items):  # json.loads would keep the last value of a repeated key silently
      seen: set[str] = set()
      repeated.extend(k for k, _ in items if k in seen or seen.add(k))
    return out

  try:
    text = data.decode("utf-8")
    obj = json.loads(text, object_pairs_hook=pairs)
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
    raise DataError(f"{path}:{line}: bytes that are not utf-8 (byte "
                    f"{data[e.start:e.start + 1]!r} at column {column})") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno})") from e
  if not isinstance(obj, dict):
    raise DataError(f"{path}: expected a JSON object (ASIN -> value), got {type(obj).__name__}")
  if repeated:
    key = json.dumps(repeated[0])
    second = text.find(key, text.find(key) + 1)
    raise DataError(f"{path}:{text.count(chr(10), 0, second) + 1}: key {repeated[0]!r} listed "
                    f"twice ({len(repeated)} repeated keys)")
  return obj


def _sequences(path: str, policy: LinePolicy, lo: int, hi: int, what: str, min_len: int = 1):
  """Yields (line number, uid, [indices]) of `uid<TAB>i,j,...` lines, indices in [lo, hi)."""
  seen: dict[str, int] = {}
  for lineno, line in iter_lines(path, policy=policy, last_line="require"):
    if not line.strip():
      continue
    try:
      uid, tab, seq = line.partition("\t")
      if not tab:
        raise BadField("line", "expected 'uid<TAB>comma-separated item indices'", line)
      uid = to_id("uid", uid.strip())
      if uid in seen:  # one line per user: a second line would merge two histories
        raise BadField("uid", f"duplicate uid (first at line {seen[uid]})", uid)
      try:
        # Tolerate one trailing comma ("1,2,3,"), nothing else: "1,,2" is an error.
        items = [int(x) for x in seq.strip().removesuffix(",").split(",")]
      except ValueError:
        raise BadField("items", "non-integer item index", seq) from None
      if len(items) < min_len:
        raise BadField("items", f"needs at least {min_len} items", seq)
      out = [i for i in items if not lo <= i < hi]
      if out:
        raise BadField("items", f"item index {out[0]} is not {what} (expected [{lo}, {hi}))", seq)
    except BadField as bad:
      policy(lineno, bad)
      continue
    seen[uid] = lineno
    yield lineno, uid, items


def _check_count(path: str, seen: int, skipped: int, expected: int, source: str) -> None:
  """User lines read (+ skipped) against the recorded count: a cut at a line boundary parses."""
  if seen > expected or seen + skipped < expected:
    raise DataError(f"{path}: {seen} user lines" + (f" (+ {skipped} skipped)" if skipped else "")
                    + f", but {source} says {expected}; is the file truncated or extended?")


def _held_out(path: str, prefix: str, n_a: int, n_all: int, on_error: OnError,
              report: SkipReport, expected: int | None) -> HeldOutSequences:
  policy = LinePolicy(path, on_error, report)
  before = report.total
  users, offsets, hist, targets = [], [0], [], []
  for _, uid, items in _sequences(path, policy, 0, n_all, "an A or offset-B item", min_len=2):
    users.append(f"{prefix}:{uid}")
    hist.extend(items[:-1])
    offsets.append(len(hist))
    targets.append(items[-1])
  if not users:
    raise DataError(f"{path}: no held-out sequences")
  if expected is not None:
    _check_count(path, len(users), report.total - before, expected,
                 "the release's recorded count (readers_food_kitchen.HELD_OUT_COUNTS)")
  hist, targets = np.asarray(hist, np.int64), np.asarray(targets, np.int64)
  return HeldOutSequences(
      user_ids=np.asarray(users, dtype=object), offsets=np.asarray(offsets, np.int64),
      history_domain=(hist >= n_a).astype(np.int8),
      history_item=np.where(hist >= n_a, hist - n_a, hist).astype(np.int32),
      target_domain=(targets >= n_a).astype(np.int8),
      target_item=np.where(targets >= n_a, targets - n_a, targets).astype(np.int32))


def read_food_kitchen(directory: str | os.PathLike, *, on_error: OnError = "raise",
                      name: str = "amazon_food_to_kitchen",
                      held_out_counts: dict[str, int] | None = None) -> SequenceCrossDomainData:
  """Amazon Food (A, source) and Kitchen (B, target), implicit sequences; see the module doc.

  `held_out_counts` ({"valid": n, "test": m}) checks valid.txt / test.txt for lines lost at a line
  boundary; it defaults to the recorded counts of a known release (`HELD_OUT_COUNTS`, keyed by
  num.txt + instance_num.txt), and without one only a cut mid-line (no final newline) is caught.
  """
  directory = path_str(directory)
  n_a, n_b = _ints(os.path.join(directory, "num.txt"), 2)
  n_users = _ints(os.path.join(directory, "instance_num.txt"), 3)
  reports = {SOURCE: SkipReport(), TARGET: SkipReport()}
  items = {SOURCE: _catalogue(directory, "A", n_a, reports[SOURCE]),
           TARGET: _catalogue(directory, "B", n_b, reports[TARGET])}
  cols = {d: ([], [], []) for d in (SOURCE, TARGET)}  # user ids, item rows, positions
  lines_report = SkipReport()
  files = (("train_A.txt", "food", 0, n_a, "an A (food) item", n_users[0]),
           ("train_B.txt", "kitchen", n_a, n_a + n_b, "an offset-B (kitchen) item", n_users[1]),
           ("train_overlap.txt", "overlap", 0, n_a + n_b, "an A or offset-B item", n_users[2]))
  for filename, prefix, lo, hi, what, expected in files:
    path = os.path.join(directory, filename)
    seen, before = 0, lines_report.total
    for _, uid, seq in _sequences(path, LinePolicy(path, on_error, lines_report), lo, hi, what):
      seen += 1
      for pos, i in enumerate(seq):
        d = SOURCE if i < n_a else TARGET
        cols[d][0].append(f"{prefix}:{uid}")
        cols[d][1].append(i if d == SOURCE else i - n_a)
        cols[d][2].append(pos)
    _check_count(path, seen, lines_report.total - before, expected, "instance_num.txt")
  domains = []
  for d, domain_name in ((SOURCE, "food"), (TARGET, "kitchen")):
    users, rows, pos = cols[d]
    # The indices were checked against the catalogue, so the ids below are all known.
    domains.append(build_domain(
        domain_name, user_ids=users, item_ids=items[d].ids[np.asarray(rows, np.int64)],
        ratings=None, times=pos, items=items[d], scale=IMPLICIT, time_kind="sequence",
        # An item again later in a sequence is a re-purchase, not a double log: kept, counted.
        on_error=on_error, on_repeat="keep", skipped=reports[d]))
  if held_out_counts is None:
    held_out_counts = HELD_OUT_COUNTS.get((n_a, n_b, *n_users), {})
  held = {split: _held_out(os.path.join(directory, f"{split}.txt"), split, n_a, n_a + n_b,
                           on_error, lines_report, held_out_counts.get(split))
          for split in ("valid", "test")}
  return SequenceCrossDomainData(source=domains[0], target=domains[1], name=name,
                                 valid=held["valid"], test=held["test"], skipped=lines_report)
