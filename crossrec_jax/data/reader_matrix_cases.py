"""The reader fault matrix's inputs: a tiny clean dataset per reader and its corruptions.

Each `Spec` writes a clean folder in a reader's real format, reads it through the public reader,
and names, per fault kind, how to corrupt its interaction file: a `Fault` replaces, appends or
cuts lines (or rewrites a side file), and says which line the reader must name (None for a fault
of the whole file). `reader_matrix.py` runs every (reader, fault) pair and checks the outcome.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Callable

from crossrec_jax.data import readers
from crossrec_jax.data.schema import RatingScale, SkipReport

# The fault kinds of issue 14, in table order.
FAULTS = ("truncated gzip", "wrong delimiter", "missing column", "non-numeric", "out of scale",
          "unknown id", "empty file", "header only", "duplicate row", "(user, item) repeat",
          "non-UTF-8 byte", "cut last line", "stray quote",
          # the same kinds on the item catalogue (item file, meta file, JSON map)
          "catalogue: empty file", "catalogue: duplicate id", "catalogue: non-UTF-8 byte",
          "catalogue: cut last line")


@dataclasses.dataclass(frozen=True)
class Fault:
  """One corruption: `edit(lines) -> lines` on `file` (byte lines without end-of-line).

  `line`: the physical line the reader must name (None: a fault of the whole file). `whole`:
  the format cannot drop one line for this fault (a header, a JSON document, a gzip stream), so
  on_error="skip" may still reject the file, naming it. `added`: interaction rows the fault adds;
  `appended`: the named line is the one the fault appends.
  """

  edit: Callable[[list[bytes]], list[bytes]] | None
  line: int | None
  file: str | None = None  # default: the spec's interaction file
  whole: bool = False
  added: int = 0
  appended: bool = False
  gzip: bool = False  # rewrite the file as a truncated .gz instead of editing it


def replace(lineno: int, new: bytes, whole: bool = False) -> Fault:
  return Fault(lambda ls: ls[:lineno - 1] + [new] + ls[lineno:], lineno, whole=whole)


def append(new: bytes) -> Fault:
  return Fault(lambda ls: ls + [new], None, added=1, appended=True)


EMPTY = Fault(lambda ls: [], None, whole=True)
HEADER_ONLY = Fault(lambda ls: ls[:1], None, whole=True)
TRUNCATED_GZIP = Fault(None, None, whole=True, gzip=True)
CUT = Fault(None, -1)  # the last line loses its end-of-line and its last character


def catalogue(file: str, lineno: int | None, bad: bytes | None, whole: bool = False,
              duplicate: Fault | None = None) -> dict:
  """Faults of an item catalogue `file`; `bad` replaces line `lineno` (None: latin-1 file);
  `duplicate` lists an id twice (default: the last line again)."""
  duplicate = duplicate or Fault(lambda ls: ls + [ls[-1]], None, appended=True)
  faults = {"catalogue: empty file": dataclasses.replace(EMPTY, file=file),
            "catalogue: duplicate id": dataclasses.replace(duplicate, file=file, whole=whole),
            "catalogue: cut last line": dataclasses.replace(CUT, file=file, whole=whole)}
  if bad is not None:
    faults["catalogue: non-UTF-8 byte"] = dataclasses.replace(replace(lineno, bad, whole=whole),
                                                              file=file)
  return faults


def delimited(lineno: int, sep: str, row: tuple[str, ...], wrong: str, high: str) -> dict:
  """The line faults of a delimited format; `row` = (user, item, rating[, time]) of `lineno`."""

  def line(**change: str) -> bytes:
    fields = dict(zip("uirt", row), **change)
    return sep.join(fields[k] for k in "uirt"[:len(row)]).encode("utf-8", "surrogateescape")

  return {"wrong delimiter": replace(lineno, wrong.join(row).encode()),
          "non-numeric": replace(lineno, line(r="x")),
          "out of scale": replace(lineno, line(r=high)),
          "unknown id": replace(lineno, line(i="Z9")),
          "duplicate row": append(line()),
          "(user, item) repeat": append(line(r="1", t="200")),
          "non-UTF-8 byte": replace(lineno, line(u=row[0] + "\udcff")),  # the byte 0xff
          "cut last line": CUT}


@dataclasses.dataclass(frozen=True)
class Spec:
  """A reader, a clean folder for it, and its faults (absent key: 'n/a', with `not_applicable`)."""

  name: str
  files: dict[str, str]  # file name -> clean text
  data: str  # the interaction file the faults edit
  read: Callable[[str, str], tuple[int, SkipReport]]  # (folder, on_error) -> (rows, report)
  faults: dict[str, Fault]
  not_applicable: dict[str, str]

  def write(self, directory: str) -> None:
    for name, text in self.files.items():
      with open(os.path.join(directory, name), "wb") as f:
        f.write(text.encode("latin-1" if self.name.startswith("read_movielens") else "utf-8"))


def _domain_counts(d) -> tuple[int, SkipReport]:
  return len(d.interactions), d.skipped


def _pick(directory: str, name: str) -> str:
  """`name`, or `name.gz` where a fault rewrote it gzipped."""
  path = os.path.join(directory, name)
  return path if os.path.exists(path) else path + ".gz"


# --- RecBole atomic -------------------------------------------------------------------------------

def _read_recbole(directory: str, on_error: str):
  return _domain_counts(readers.read_recbole_atomic(
      _pick(directory, "x.inter"), os.path.join(directory, "x.item"), name="x",
      scale=RatingScale(1.0, 5.0), on_error=on_error))


RECBOLE = Spec(
    "read_recbole_atomic",
    {"x.inter": "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                "u1\tA\t4\t10\nu2\tB\t3\t11\nu1\tB\t5\t12\n",
     "x.item": "item_id:token\tmovie_title:token\nA\tA\nB\tB\nC\tC\n"},
    "x.inter", _read_recbole,
    {**delimited(3, "\t", ("u2", "B", "3", "11"), ",", "9"),
     "truncated gzip": TRUNCATED_GZIP,
     "missing column": replace(1, b"user_id:token\titem_id:token\ttimestamp:float", whole=True),
     "empty file": EMPTY, "header only": HEADER_ONLY,
     **catalogue("x.item", 3, b"B\tB\xff")},
    {"stray quote": "RecBole atomic files have no quoting: a quote is part of the value"})


# --- GroupLens ML-1M / ML-100K --------------------------------------------------------------------

def _grouplens(name: str, sep: str, items: str, data: str, read) -> Spec:
  ratings = "".join(sep.join(r) + "\n" for r in (("1", "1", "4", "100"), ("2", "2", "3", "101"),
                                                 ("1", "2", "5", "102")))
  faults = delimited(2, sep, ("2", "2", "3", "101"), "\t" if sep == "::" else ",", "9")
  del faults["non-UTF-8 byte"]  # latin-1
  return Spec(
      name, {items: _GROUPLENS_ITEMS[items], data: ratings}, data,
      lambda directory, on_error: _domain_counts(read(directory, on_error=on_error)),
      {**faults, "missing column": replace(2, sep.join(("2", "2", "3")).encode()),
       "empty file": EMPTY, **catalogue(items, None, None)},
      {"truncated gzip": "the reader takes a folder of fixed, uncompressed file names",
       "header only": "the format has no header line",
       "non-UTF-8 byte": "the files are latin-1: every byte is a character",
       "stray quote": "the format has no quoting: a quote is part of the value",
       "catalogue: non-UTF-8 byte": "the files are latin-1: every byte is a character"})


_FLAGS = "|".join(["0"] * 18 + ["1"])
_GROUPLENS_ITEMS = {
    "movies.dat": "1::A (1990)::Drama\n2::B (1991)::Comedy\n3::C (1992)::Drama\n",
    "u.item": "".join(f"{i}|{t} (199{i})|01-Jan-199{i}||http://x|{_FLAGS}\n"
                      for i, t in ((1, "A"), (2, "B"), (3, "C"))),
}
ML1M = _grouplens("read_movielens_dat", "::", "movies.dat", "ratings.dat",
                  readers.read_movielens_dat)
ML100K = _grouplens("read_movielens_100k", "\t", "u.item", "u.data", readers.read_movielens_100k)


# --- Amazon 2018 / 2023 ---------------------------------------------------------------------------

def _amazon(name: str, data: str, keys: tuple[str, str, str, str], read) -> Spec:
  rating, user, item, time = keys

  def line(r: object = 3.0, u: str = "A2", i: str = "B2", t: int = 101, drop: str = "") -> bytes:
    obj = {rating: r, user: u, item: i, time: t}
    return json.dumps({k: v for k, v in obj.items() if k != drop}).encode()

  clean = b"\n".join([line(4.0, "A1", "B1", 100), line(), line(5.0, "A1", "B2", 102)]) + b"\n"
  meta = "".join(json.dumps({item: i, "title": t}) + "\n"
                 for i, t in (("B1", "One"), ("B2", "Two")))
  return Spec(
      name, {data: clean.decode(), "meta_" + data: meta}, data,
      lambda directory, on_error: _domain_counts(read(
          _pick(directory, data), os.path.join(directory, "meta_" + data), on_error=on_error)),
      {"truncated gzip": TRUNCATED_GZIP,
       "wrong delimiter": replace(2, b"3.0\tA2\tB2\t101"),
       "missing column": replace(2, line(drop=rating)),
       "non-numeric": replace(2, line(r="x")),
       "out of scale": replace(2, line(r=9.0)),
       "empty file": EMPTY,
       "duplicate row": append(line()),
       "(user, item) repeat": append(line(r=1.0, t=200)),
       "non-UTF-8 byte": replace(2, line().replace(b'"A2"', b'"A2\xff"')),
       "cut last line": CUT,
       "stray quote": replace(2, line().replace(b'"A2"', b'"A2""')),
       **catalogue("meta_" + data, 2, json.dumps({item: "B2", "title": "Tw"}).encode()
                   .replace(b"Tw", b"Tw\xff"))},
      {"unknown id": "the catalogue is the reviewed items (a meta row of an unreviewed item is "
                     "counted as skipped)",
       "header only": "the format has no header line"})


AMAZON2018 = _amazon("read_amazon2018", "r_5.json",
                     ("overall", "reviewerID", "asin", "unixReviewTime"), readers.read_amazon2018)
AMAZON2023 = _amazon("read_amazon2023", "r.jsonl",
                     ("rating", "user_id", "parent_asin", "timestamp"), readers.read_amazon2023)


# --- Book-Crossing --------------------------------------------------------------------------------

BOOKCROSSING = Spec(
    "read_bookcrossing",
    {"BX-Books.csv": "ISBN,Book-Title,Book-Author,Year-Of-Publication,Book-Publisher\n"
                     "0001,A Book,An Author,2001,A House\n0002,\"Quoted, Title\",B,1999,C\n"
                     "0003,Third,D,2003,E\n",
     "BX-Ratings.csv": "User-ID,ISBN,Book-Rating\n7,0001,8\n8,0002,4\n9,0001,10\n"},
    "BX-Ratings.csv",
    lambda directory, on_error: _domain_counts(readers.read_bookcrossing(directory,
                                                                         on_error=on_error)),
    {**delimited(3, ",", ("8", "0002", "4"), ";", "11"),
     "missing column": replace(1, b"User-ID,ISBN", whole=True),
     "empty file": EMPTY, "header only": HEADER_ONLY,
     "stray quote": replace(3, b'8,"0002,4'),
     **catalogue("BX-Books.csv", 3, b"0002,Quoted\xff,B,1999,C")},
    {"truncated gzip": "the reader takes a folder of fixed, uncompressed file names"})


# --- Amazon Food -> Kitchen sequences -------------------------------------------------------------

def _read_food_kitchen(directory: str, on_error: str):
  """Rows are sequence lines (one user each): train users plus held-out users."""
  data = readers.read_food_kitchen(directory, on_error=on_error)
  users = set(data.source.interactions.user_ids) | set(data.target.interactions.user_ids)
  report = SkipReport().merge(data.skipped).merge(data.source.skipped).merge(data.target.skipped)
  return len(users) + len(data.valid) + len(data.test), report


def _text_b_with_a_stray_quote(lines: list[bytes]) -> list[bytes]:
  return [l.replace(b'"Pan"', b'"Pa"n"') for l in lines]


FOOD_KITCHEN = Spec(
    "read_food_kitchen",
    {"num.txt": "3\n2\n", "instance_num.txt": "1\n3\n1\n",
     "item_set_A.json": json.dumps({"a0": 0, "a1": 1, "a2": 2}),
     "item_set_B.json": json.dumps({"b0": 0, "b1": 1}),
     "text_A.json": json.dumps({"a0": "Tea", "a1": "Coffee", "a2": "Rice"}),
     "text_B.json": json.dumps({"b0": "Pan", "b1": "Pot"}, indent=1) + "\n",
     "train_A.txt": "1\t0,1,2\n", "train_B.txt": "1\t3,4\n2\t4\n3\t3,4\n",
     "train_overlap.txt": "1\t4,0,3,1\n", "valid.txt": "1\t0,3,1\n", "test.txt": "1\t2,4\n"},
    "train_B.txt", _read_food_kitchen,
    {"wrong delimiter": replace(2, b"2 4"),
     "missing column": replace(2, b"2"),
     "non-numeric": replace(2, b"2\tx"),
     "unknown id": replace(2, b"2\t9"),
     "empty file": EMPTY,
     "duplicate row": append(b"2\t4"),
     "(user, item) repeat": replace(2, b"2\t4,3,4"),
     "non-UTF-8 byte": replace(2, b"2\xff\t4"),
     "cut last line": CUT,
     "stray quote": Fault(_text_b_with_a_stray_quote, 2, file="text_B.json", whole=True),
     **catalogue("text_B.json", 2, b' "b0": "Pan\xff",', whole=True, duplicate=Fault(
         lambda ls: ls[:2] + [b' "b1": "Pot",', b' "b0": "Pan"'] + ls[3:], 4))},
    {"truncated gzip": "the reader takes a folder of fixed, uncompressed file names",
     "out of scale": "implicit feedback: there are no ratings",
     "header only": "the format has no header line"})

SPECS = (RECBOLE, ML1M, ML100K, AMAZON2018, AMAZON2023, BOOKCROSSING, FOOD_KITCHEN)
