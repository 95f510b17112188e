"""Tests for the raw-format readers (crossrec_jax/data/readers*.py).

Real files from ../shared/data where they exist (Book-Crossing, Amazon 2018 5-core, Amazon
Food/Kitchen); hand-made fixtures in the real formats otherwise (tests/fixtures/README.md); bad
inputs written to tmp_path. Every bad input must give a DataError naming file:line and field, or a
counted skip under on_error="skip".
"""

import gzip
import json
import pathlib
import shutil

import numpy as np
import pytest
from conftest import require_shared_data

from crossrec_jax.data import readers, readers_io
from crossrec_jax.data.schema import IMPLICIT, DataError, RatingScale
from crossrec_jax.data.splits import canonical_order

FIX = pathlib.Path(__file__).parent / "fixtures"
FIVE = RatingScale(1.0, 5.0)


def _write(path: pathlib.Path, text: str | bytes, encoding: str = "utf-8") -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  opener = gzip.open if path.name.endswith(".gz") else open
  with opener(path, "wb") as f:
    f.write(text if isinstance(text, bytes) else text.encode(encoding))
  return path


def _truncated_gzip(path: pathlib.Path, text: str) -> pathlib.Path:
  data = gzip.compress(text.encode())
  path.write_bytes(data[:len(data) // 2])
  return path


# ---------------------------------------------------------------------------------------------
# Conventions
# ---------------------------------------------------------------------------------------------

def test_split_title_year():
  assert readers.split_title_year("Toy Story (1995)") == ("Toy Story", "1995")
  assert readers.split_title_year("City of Lost Children, The (Cité des enfants perdus, La) (1995)"
                                  ) == ("City of Lost Children, The (Cité des enfants perdus, La)",
                                        "1995")
  assert readers.split_title_year("unknown") == ("unknown", "")


def test_iter_lines_strips_crlf_and_reads_gzip(tmp_path):
  plain = _write(tmp_path / "a.txt", "x\r\ny\n")
  zipped = _write(tmp_path / "a.txt.gz", "x\r\ny\n")
  assert list(readers.iter_lines(plain)) == [(1, "x"), (2, "y")]
  assert list(readers.iter_lines(zipped)) == [(1, "x"), (2, "y")]


def test_iter_lines_truncated_gzip_names_the_file(tmp_path):
  bad = _truncated_gzip(tmp_path / "log.txt.gz", "".join(f"line {i} {i * 7919}\n"
                                                          for i in range(5000)))
  with pytest.raises(DataError, match=r"log.txt.gz: truncated or corrupt gzip stream after line"):
    list(readers.iter_lines(bad))


@pytest.mark.parametrize("name", ["big.txt", "big.txt.gz"])
def test_iter_lines_bad_bytes_are_counted_on_their_own_line_across_chunks(tmp_path, name):
  # 20,000 lines are several 64 KB decoding chunks: the line numbers must run on across them.
  lines = [f"line {i} {i * 7919}".encode() for i in range(1, 20001)]
  lines[15000] = b"line 15001 \xff"
  raw = b"\r\n".join(lines) + b"\r\n"
  path = tmp_path / name
  path.write_bytes(gzip.compress(raw) if name.endswith(".gz") else raw)
  with pytest.raises(DataError, match=rf"{name}:15001: bytes that are not utf-8 \(byte b'\\xff' "
                     r"at column 12\)"):
    list(readers.iter_lines(path))
  report = readers_io.SkipReport()
  got = list(readers.iter_lines(path, policy=readers_io.LinePolicy(path, "skip", report)))
  assert len(got) == 19999 and got[14999] == (15000, "line 15000 118785000")
  assert got[15000] == (15002, f"line 15002 {15002 * 7919}") and got[-1][0] == 20000
  assert report.counts == {"bytes that are not utf-8 (byte b'\\xff' at column 12)": 1}


def test_iter_lines_last_line_policies(tmp_path):
  ok = _write(tmp_path / "ok.txt", "a\r\nb\r\n")
  assert list(readers.iter_lines(ok, last_line="require")) == [(1, "a"), (2, "b")]
  cut = _write(tmp_path / "cut.txt", "a\r\nb")
  assert list(readers.iter_lines(cut)) == [(1, "a"), (2, "b")]  # catalogues may end so
  with pytest.raises(DataError, match=r"cut.txt:2: last line has no end-of-line"):
    list(readers.iter_lines(cut, last_line="require"))
  report = readers_io.SkipReport()
  policy = readers_io.LinePolicy(cut, "skip", report)
  assert list(readers.iter_lines(cut, policy=policy, last_line="require")) == [(1, "a")]
  assert report.counts == {"last line has no end-of-line (the file may be cut)": 1}
  assert list(readers.iter_lines(cut, policy=policy, last_line="note")) == [(1, "a"), (2, "b")]
  assert report.kept == {"cut.txt: last line without end-of-line (kept; the file may be cut)": 1}


def test_iter_lines_never_skips_a_header(tmp_path):
  path = _write(tmp_path / "h.csv", b"User-ID,IS\xffBN\n1,2\n")
  policy = readers_io.LinePolicy(path, "skip", readers_io.SkipReport())
  assert list(readers.iter_lines(path, policy=policy)) == [(2, "1,2")]
  with pytest.raises(DataError, match=r"h.csv:1: bytes that are not utf-8"):
    list(readers.iter_lines(path, policy=policy, header=True))


def test_iter_lines_missing_file(tmp_path):
  with pytest.raises(DataError, match="nothere.txt: file not found"):
    list(readers.iter_lines(tmp_path / "nothere.txt"))


# ---------------------------------------------------------------------------------------------
# RecBole atomic files
# ---------------------------------------------------------------------------------------------

def _recbole(tmp_path, inter: list[str], item: list[str] | None = None, suffix: str = ""):
  header = "user_id:token\titem_id:token\trating:float\ttimestamp:float"
  ipath = _write(tmp_path / f"x.inter{suffix}", "\r\n".join([header] + inter) + "\r\n")
  items = item if item is not None else [
      "item_id:token\tmovie_title:token\trelease_year:token\tclass:token_seq",
      "A (1990)\tA\t1990\tDrama", "B (1991)\tB\t1991\tComedy Drama"]
  tpath = _write(tmp_path / "x.item", "\r\n".join(items) + "\r\n")
  return ipath, tpath


def test_recbole_fixture_merges_titles_and_keeps_duplicate_ratings():
  d = readers.read_recbole_atomic(FIX / "recbole/mini.inter", FIX / "recbole/mini.item",
                                  name="mini", scale=FIVE)
  assert d.num_items == 4  # Chasing Amy's two identical rows merged
  assert len(d.interactions) == 6 and d.interactions.num_users == 3
  assert d.skipped.kept["duplicate identical item row (merged into the first)"] == 1
  assert d.skipped.kept["duplicate (user, item, time) row"] == 1
  assert d.skipped.total == 0 and d.time_kind == "timestamp"
  rows = {i: d.items.row(k) for k, i in enumerate(d.items.ids)}
  assert rows["Misérables, Les (1995)"] == {"title": "Misérables, Les", "year": "1995",
                                             "genres": "Drama, Musical"}
  assert rows["Toy Story (1995)"]["genres"] == "Animation, Children's, Comedy"
  assert set(d.items.fields) <= set(readers.ITEM_TEXT_FIELDS)


def test_recbole_duplicates_raise_when_asked():
  with pytest.raises(DataError, match=r"duplicate \(user, item, time\) row at .*mini.inter:5"):
    readers.read_recbole_atomic(FIX / "recbole/mini.inter", FIX / "recbole/mini.item",
                                name="mini", scale=FIVE, on_duplicate="raise")


def test_recbole_without_item_file_or_time_column(tmp_path):
  p = _write(tmp_path / "t.inter", "user_id:token\titem_id:token\trating:float\n"
             "u1\ta\t3\nu1\tb\t4\nu2\ta\t5\n")
  d = readers.read_recbole_atomic(p, name="t", scale=FIVE)
  assert list(d.items.ids) == ["a", "b"] and d.items.fields == {}
  assert d.time_kind == "sequence" and d.interactions.time.tolist() == [2, 3, 4]


def test_recbole_implicit_ignores_the_rating_column(tmp_path):
  ipath, tpath = _recbole(tmp_path, ["u\tA (1990)\t4\t10"])
  d = readers.read_recbole_atomic(ipath, tpath, name="x", scale=IMPLICIT)
  assert d.interactions.rating.tolist() == [1.0] and d.scale.implicit


@pytest.mark.parametrize("line,match", [
    ("u\tA (1990)\tfive\t10", r"non-numeric value at .*x.inter:3, field 'rating': value 'five'"),
    ("u\tA (1990)\t4", r"expected 4 '\\t'-separated fields, got 3 at .*x.inter:3, field 'line'"),
    ("u\tA (1990)\t4\tnoon", r"non-numeric value at .*x.inter:3, field 'timestamp'"),
    ("u\tA (1990)\t9\t10", r"rating outside \[1, 5\] at .*x.inter:3, field 'rating': value 9"),
    ("u\tZ (1999)\t4\t10", r"unknown item id at .*x.inter:3, field 'item': value 'Z \(1999\)'"),
    ("\tA (1990)\t4\t10", r"missing or empty id at .*x.inter:3, field 'user_id'"),
])
def test_recbole_bad_lines_raise_and_skip(tmp_path, line, match):
  ipath, tpath = _recbole(tmp_path, ["u\tB (1991)\t3\t5", line, "v\tA (1990)\t2\t6"])
  with pytest.raises(DataError, match=match):
    readers.read_recbole_atomic(ipath, tpath, name="x", scale=FIVE)
  d = readers.read_recbole_atomic(ipath, tpath, name="x", scale=FIVE, on_error="skip")
  assert len(d.interactions) == 2 and d.skipped.total == 1
  assert "x.inter:3" in str(d.skipped)


def test_recbole_wrong_delimiter_and_missing_column(tmp_path):
  comma = _write(tmp_path / "c.inter", "user_id:token,item_id:token\nu,a\n")
  with pytest.raises(DataError, match=r"c.inter:1: header entry .* tab-separated"):
    readers.read_recbole_atomic(comma, name="x", scale=FIVE)
  no_rating = _write(tmp_path / "n.inter", "user_id:token\titem_id:token\nu\ta\n")
  with pytest.raises(DataError, match=r"n.inter:1: column 'rating' missing from the header"):
    readers.read_recbole_atomic(no_rating, name="x", scale=FIVE)


def test_recbole_empty_truncated_and_conflicting_items(tmp_path):
  empty = _write(tmp_path / "e.inter", "")
  with pytest.raises(DataError, match="e.inter: empty file"):
    readers.read_recbole_atomic(empty, name="x", scale=FIVE)
  header_only = _write(tmp_path / "h.inter", "user_id:token\titem_id:token\trating:float\n")
  with pytest.raises(DataError, match="h.inter: no interaction rows"):
    readers.read_recbole_atomic(header_only, name="x", scale=FIVE)
  lines = "user_id:token\titem_id:token\trating:float\n" + "".join(
      f"u{i}\ti{i % 97}\t{i % 5 + 1}\n" for i in range(20000))
  trunc = _truncated_gzip(tmp_path / "t.inter.gz", lines)
  with pytest.raises(DataError, match="t.inter.gz: truncated or corrupt gzip"):
    readers.read_recbole_atomic(trunc, name="x", scale=FIVE)
  ipath, tpath = _recbole(tmp_path, ["u\tA (1990)\t3\t5"], item=[
      "item_id:token\tmovie_title:token", "A (1990)\tA", "A (1990)\tAnother A"])
  with pytest.raises(DataError, match=r"duplicate item id with other fields than line 2 at "
                     r".*x.item:3, field 'item_id'"):
    readers.read_recbole_atomic(ipath, tpath, name="x", scale=FIVE)


# ---------------------------------------------------------------------------------------------
# GroupLens MovieLens
# ---------------------------------------------------------------------------------------------

def test_movielens_dat_fixture():
  d = readers.read_movielens_dat(FIX / "ml-1m")
  assert (d.interactions.num_users, d.num_items, len(d.interactions)) == (3, 5, 7)
  row = d.items.row(d.items.index()["73"])
  # Same text as the recbole wheel's row for this film ("Misérables, Les (1995)").
  assert row == {"title": "Misérables, Les", "year": "1995", "genres": "Drama, Musical"}
  assert d.interactions.time.max() == 978302109 and d.scale == FIVE


def test_movielens_100k_fixture():
  d = readers.read_movielens_100k(FIX / "ml-100k")
  assert (d.interactions.num_users, d.num_items, len(d.interactions)) == (3, 6, 6)
  idx = d.items.index()
  assert d.items.row(idx["302"]) == {"title": "L.A. Confidential", "year": "1997",
                                     "genres": "Crime, Film-Noir, Mystery, Thriller"}
  # The year comes from the title (1996), not the release date (24-Jan-1997).
  assert d.items.row(idx["242"])["year"] == "1996"
  assert d.items.row(idx["267"]) == {"title": "unknown", "year": "", "genres": "unknown"}
  assert d.items.row(idx["1020"])["title"] == "Misérables, Les"


def _ml_dir(tmp_path, ratings: str, movies: str = "1::Toy Story (1995)::Comedy\n"):
  _write(tmp_path / "movies.dat", movies, "latin-1")
  _write(tmp_path / "ratings.dat", ratings, "latin-1")
  return tmp_path


@pytest.mark.parametrize("line,match", [
    ("1\t1\t5\t978300760", r"expected 4 '::'-separated fields, got 1 at .*ratings.dat:2"),
    ("1::1::5", r"expected 4 '::'-separated fields, got 3 at .*ratings.dat:2"),
    ("1::1::x::978300760", r"non-numeric value at .*ratings.dat:2, field 'rating'"),
    ("1::1::0::978300760", r"rating outside \[1, 5\] at .*ratings.dat:2, field 'rating'"),
    ("1::99::4::978300760", r"unknown item id at .*ratings.dat:2, field 'item': value '99'"),
])
def test_movielens_dat_bad_lines(tmp_path, line, match):
  directory = _ml_dir(tmp_path, f"2::1::3::978300000\n{line}\n")
  with pytest.raises(DataError, match=match):
    readers.read_movielens_dat(directory)
  d = readers.read_movielens_dat(directory, on_error="skip")
  assert len(d.interactions) == 1 and d.skipped.total == 1


def test_movielens_dat_empty_and_duplicate_movie(tmp_path):
  with pytest.raises(DataError, match="ratings.dat: no interaction rows"):
    readers.read_movielens_dat(_ml_dir(tmp_path, ""))
  directory = _ml_dir(tmp_path, "1::1::3::9\n", "1::A (1990)::Drama\n1::B (1991)::Drama\n")
  with pytest.raises(DataError, match=r"duplicate movie id \(first at line 1\) at .*movies.dat:2"):
    readers.read_movielens_dat(directory)
  with pytest.raises(DataError, match="movies.dat: file not found"):
    readers.read_movielens_dat(tmp_path / "nowhere")


def test_movielens_100k_bad_lines(tmp_path):
  shutil.copy(FIX / "ml-100k/u.item", tmp_path / "u.item")
  _write(tmp_path / "u.data", "1\t1\t3\t5\n1,242,4,6\n")
  with pytest.raises(DataError, match=r"expected 4 '\\t'-separated fields, got 1 at .*u.data:2"):
    readers.read_movielens_100k(tmp_path)
  item = (FIX / "ml-100k/u.item").read_bytes().replace(b"|0|0|0|0|0|1|0", b"|0|0|0|0|0|2|0", 1)
  (tmp_path / "u.item").write_bytes(item)
  _write(tmp_path / "u.data", "1\t1\t3\t5\n")
  with pytest.raises(DataError, match=r"genre flags must be 0 or 1 at .*u.item:\d+, field "
                     r"'genre flags'"):
    readers.read_movielens_100k(tmp_path)


# ---------------------------------------------------------------------------------------------
# Amazon 2018
# ---------------------------------------------------------------------------------------------

def test_amazon2018_real_counts_keep_and_skip():
  path = require_shared_data("amazon2018_small_5core", "All_Beauty_5.json.gz")
  raw = readers.read_amazon2018(path, on_duplicate="keep")
  assert raw.name == "All_Beauty"
  assert (raw.interactions.num_users, raw.num_items, len(raw.interactions)) == (991, 85, 5269)
  assert raw.skipped.kept["duplicate (user, item, time) row"] == 1108
  assert raw.skipped.kept["item without a meta row (empty title)"] == 85
  d = readers.read_amazon2018(path)  # default: repeated reviews dropped, counted
  assert len(d.interactions) == 5269 - 1108
  assert d.skipped.counts["duplicate (user, item, time) row"] == 1108
  assert d.scale == FIVE and d.interactions.time.min() > 9e8  # unix seconds


def test_amazon2018_with_meta_fixture():
  path = require_shared_data("amazon2018_small_5core", "All_Beauty_5.json.gz")
  d = readers.read_amazon2018(path, FIX / "amazon2018/meta_All_Beauty.json")
  idx = d.items.index()
  assert d.items.row(idx["B0000530HU"]) == {"title": "Fixture Aftershave Gel, 7 oz",
                                            "brand": "FixtureBrand",
                                            "category": "All Beauty > Shave > Gels"}
  assert d.items.row(idx["B0012Y0ZG2"])["title"] == "Fixture Bath Soak 'Lavender'"  # literal
  assert d.items.row(idx["B000URXP6E"]) == {"title": "Fixture Hand Cream", "brand": "",
                                            "category": ""}
  assert d.skipped.kept["repeated meta row (the first is used)"] == 1
  assert d.skipped.kept["item without a meta row (empty title)"] == 85 - 3
  assert d.skipped.counts["meta row of an item without reviews (not in the catalogue)"] == 1
  assert "B09NOREVIEW" not in idx


def _review18(**kw):
  obj = {"overall": 4.0, "reviewerID": "A1", "asin": "B1", "unixReviewTime": 1400000000}
  obj.update(kw)
  return json.dumps({k: v for k, v in obj.items() if v is not None})


@pytest.mark.parametrize("line,match", [
    (_review18(overall="great"), r"non-numeric value at .*r.json.gz:2, field 'overall'"),
    (_review18(overall=None), r"missing field at .*r.json.gz:2, field 'overall'"),
    (_review18(overall=6.0), r"rating outside \[1, 5\] at .*r.json.gz:2, field 'rating'"),
    (_review18(reviewerID=None), r"missing field at .*r.json.gz:2, field 'reviewerID'"),
    (_review18(unixReviewTime="yesterday"), r"non-numeric value at .*:2, field 'unixReviewTime'"),
    ("overall\treviewerID\tasin", r"not a JSON object .* at .*r.json.gz:2, field 'json'"),
])
def test_amazon2018_bad_lines(tmp_path, line, match):
  path = _write(tmp_path / "r.json.gz", _review18(reviewerID="A0") + "\n" + line + "\n")
  with pytest.raises(DataError, match=match):
    readers.read_amazon2018(path)
  d = readers.read_amazon2018(path, on_error="skip")
  assert len(d.interactions) == 1 and d.skipped.total == 1


def test_amazon2018_empty_truncated_unknown_meta(tmp_path):
  with pytest.raises(DataError, match="e.json.gz: no interaction rows"):
    readers.read_amazon2018(_write(tmp_path / "e.json.gz", ""))
  text = "".join(_review18(reviewerID=f"A{i}", unixReviewTime=1400000000 + i * 7) + "\n"
                 for i in range(3000))
  with pytest.raises(DataError, match="t.json.gz: truncated or corrupt gzip"):
    readers.read_amazon2018(_truncated_gzip(tmp_path / "t.json.gz", text))
  reviews = _write(tmp_path / "r.json", _review18() + "\n")
  meta = _write(tmp_path / "m.json", '{"title": "no asin here"}\n')
  with pytest.raises(DataError, match=r"missing field at .*m.json:1, field 'asin'"):
    readers.read_amazon2018(reviews, meta)


# ---------------------------------------------------------------------------------------------
# Amazon 2023
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_amazon2023_fixture(tmp_path, gz):
  reviews, meta = FIX / "amazon2023/All_Beauty.jsonl", FIX / "amazon2023/meta_All_Beauty.jsonl"
  if gz:
    reviews = _write(tmp_path / "All_Beauty.jsonl.gz", reviews.read_text())
    meta = _write(tmp_path / "meta_All_Beauty.jsonl.gz", meta.read_text())
  d = readers.read_amazon2023(reviews, meta)
  assert d.name == "All_Beauty"
  # Keyed by parent_asin: two variants of B097R46CSY are one item; one line has only asin.
  assert sorted(d.items.ids) == ["B00YQ6X8EO", "B081TJ8YS3", "B08BZ63GMJ", "B097R46CSY"]
  assert len(d.interactions) == 6 and d.interactions.num_users == 3
  assert d.skipped.counts["duplicate (user, item, time) row"] == 1
  idx = d.items.index()
  assert d.items.row(idx["B097R46CSY"]) == {"title": "Fixture Nail Polish Set",
                                            "brand": "Polish Co",
                                            "category": "Beauty & Personal Care > Nail Care"}
  assert d.items.row(idx["B00YQ6X8EO"])["category"] == "All Beauty"  # main_category fallback
  assert d.skipped.kept["item without a meta row (empty title)"] == 2
  assert d.interactions.time.max() == 1643393630220  # milliseconds, as given


def test_amazon2023_variant_keys(tmp_path):
  reviews = FIX / "amazon2023/All_Beauty.jsonl"
  d = readers.read_amazon2023(reviews, item_key="asin")
  assert d.num_items == 5
  with pytest.raises(ValueError, match="keyed by parent_asin"):
    readers.read_amazon2023(reviews, FIX / "amazon2023/meta_All_Beauty.jsonl", item_key="asin")


def _review23(**kw):
  obj = {"rating": 4.0, "user_id": "U1", "parent_asin": "P1", "timestamp": 1588687728923}
  obj.update(kw)
  return json.dumps({k: v for k, v in obj.items() if v is not None})


@pytest.mark.parametrize("line,match", [
    (_review23(rating="4 stars"), r"non-numeric value at .*r.jsonl:2, field 'rating'"),
    (_review23(rating=0.0), r"rating outside \[1, 5\] at .*r.jsonl:2, field 'rating'"),
    (_review23(parent_asin=None), r"missing field at .*r.jsonl:2, field 'parent_asin or asin'"),
    (_review23(user_id=""), r"missing or empty id at .*r.jsonl:2, field 'user_id'"),
    (_review23(timestamp=1.5), r"non-integral timestamp at .*r.jsonl:2, field 'timestamp'"),
    ('{"rating": 4.0,, "user_id": "U1"}', r"not a JSON object .* at .*r.jsonl:2, field 'json'"),
])
def test_amazon2023_bad_lines(tmp_path, line, match):
  path = _write(tmp_path / "r.jsonl", _review23(user_id="U0") + "\n" + line + "\n")
  with pytest.raises(DataError, match=match):
    readers.read_amazon2023(path)
  d = readers.read_amazon2023(path, on_error="skip")
  assert len(d.interactions) == 1 and d.skipped.total == 1


def test_amazon2023_unknown_item_in_meta_is_counted_not_kept(tmp_path):
  reviews = _write(tmp_path / "r.jsonl", _review23() + "\n")
  meta = _write(tmp_path / "m.jsonl.gz", json.dumps({"parent_asin": "P9", "title": "x"}) + "\n")
  d = readers.read_amazon2023(reviews, meta)
  assert list(d.items.ids) == ["P1"] and d.items.row(0)["title"] == ""
  assert d.skipped.counts["meta row of an item without reviews (not in the catalogue)"] == 1
  with pytest.raises(DataError, match="e.jsonl.gz: no interaction rows"):
    readers.read_amazon2023(_write(tmp_path / "e.jsonl.gz", "\n"))
  trunc = _truncated_gzip(tmp_path / "t.jsonl.gz", "".join(
      _review23(user_id=f"U{i}") + "\n" for i in range(3000)))
  with pytest.raises(DataError, match="t.jsonl.gz: truncated or corrupt gzip"):
    readers.read_amazon2023(trunc)


# ---------------------------------------------------------------------------------------------
# Book-Crossing
# ---------------------------------------------------------------------------------------------

def test_bookcrossing_real_counts_and_permuted_times():
  d = readers.read_bookcrossing(require_shared_data("bookcrossing"))
  inter = d.interactions
  assert (inter.num_users, d.num_items, len(inter)) == (48299, 18185, 204164)
  assert d.scale == RatingScale(1.0, 10.0) and d.time_kind == "permuted"
  assert inter.rating.min() == 1 and inter.rating.max() == 10
  assert d.skipped.total == 0 and d.skipped.kept["book with year 0 (unknown: written as '')"] == 314
  assert d.items.row(d.items.index()["0002005018"]) == {
      "title": "Clara Callan", "author": "Richard Bruce Wright", "year": "2001",
      "publisher": "HarperFlamingo Canada"}
  # Per user, times are 0..n_u-1.
  order = canonical_order(d)
  counts = np.bincount(inter.user, minlength=inter.num_users)
  starts = np.r_[0, np.cumsum(counts)[:-1]]
  expected = np.arange(len(inter)) - np.repeat(starts, counts)
  assert np.array_equal(inter.time[order], expected)
  # File order is ISBN order within a user: the permutation must not reproduce it.
  many = np.flatnonzero(counts >= 5)
  same = sum(np.all(np.diff(inter.time[inter.user == u]) > 0) for u in many[:300])
  assert same < 30  # a random order of >= 5 rows is increasing with probability <= 1/120
  again = readers.read_bookcrossing(require_shared_data("bookcrossing"))
  assert np.array_equal(again.interactions.time, inter.time)  # seeded
  other = readers.read_bookcrossing(require_shared_data("bookcrossing"), seed=1)
  assert not np.array_equal(other.interactions.time, inter.time)


def test_bookcrossing_5core_counts():
  # k-core itself is crossrec_jax.data.splits.kcore_filter; the reader only applies it.
  d = readers.read_bookcrossing(require_shared_data("bookcrossing"), kcore=5)
  inter = d.interactions
  assert (len(np.unique(inter.user)), len(np.unique(inter.item)), len(inter)) == (
      6564, 8771, 110501)
  assert d.skipped.total == 204164 - 110501


def test_permuted_times_are_per_user_ranks():
  users = np.array([2, 0, 2, 2, 0, 1])
  t = readers.permuted_times(users, seed=3)
  for u in (0, 1, 2):
    assert sorted(t[users == u].tolist()) == list(range(int((users == u).sum())))


BOOKS = ("ISBN,Book-Title,Book-Author,Year-Of-Publication,Book-Publisher\n"
         "0001,A Book,An Author,2001,A House\n"
         "0002,\"Quoted, With Comma\",Someone,0,Other House\n")


def _bx(tmp_path, ratings: str, books: str = BOOKS):
  _write(tmp_path / "BX-Books.csv", books)
  _write(tmp_path / "BX-Ratings.csv", "User-ID,ISBN,Book-Rating\n" + ratings)
  return tmp_path


def test_bookcrossing_small(tmp_path):
  d = readers.read_bookcrossing(_bx(tmp_path, "7,0001,8\n7,0002,3\n9,0002,10\n"))
  assert d.items.row(1) == {"title": "Quoted, With Comma", "author": "Someone", "year": "",
                            "publisher": "Other House"}
  assert d.interactions.rating.tolist() == [8.0, 3.0, 10.0]


@pytest.mark.parametrize("line,match", [
    ("7,0001,eight", r"non-numeric value at .*BX-Ratings.csv:3, field 'Book-Rating'"),
    ("7,0001,0", r"rating outside \[1, 10\] at .*BX-Ratings.csv:3, field 'rating': value 0"),
    ("7,9999,5", r"unknown item id at .*BX-Ratings.csv:3, field 'item': value '9999'"),
    ("7;0001;5", r"expected 3 ','-separated fields, got 1 at .*BX-Ratings.csv:3, field 'line'"),
    ("8,0002,5", r"duplicate \(User-ID, ISBN\) rating \(first at line 2\) at .*:3, field 'ISBN'"),
])
def test_bookcrossing_bad_lines(tmp_path, line, match):
  directory = _bx(tmp_path, f"8,0002,4\n{line}\n9,0001,6\n")
  with pytest.raises(DataError, match=match):
    readers.read_bookcrossing(directory)
  d = readers.read_bookcrossing(directory, on_error="skip")
  assert len(d.interactions) == 2 and d.skipped.total == 1


def test_bookcrossing_header_and_empty_files(tmp_path):
  semi = BOOKS.replace(",", ";")
  with pytest.raises(DataError, match=r"BX-Books.csv:1: column\(s\) \['ISBN', .* missing from "
                     r"the header .* comma-separated"):
    readers.read_bookcrossing(_bx(tmp_path, "7,0001,8\n", books=semi))
  _bx(tmp_path, "")
  _write(tmp_path / "BX-Ratings.csv", "User-ID,ISBN\n7,0001\n")
  with pytest.raises(DataError, match=r"BX-Ratings.csv:1: column\(s\) \['Book-Rating'\] missing"):
    readers.read_bookcrossing(tmp_path)
  _write(tmp_path / "BX-Ratings.csv", "")
  with pytest.raises(DataError, match="BX-Ratings.csv: empty file"):
    readers.read_bookcrossing(tmp_path)
  _bx(tmp_path, "")
  with pytest.raises(DataError, match="BX-Ratings.csv: no interaction rows"):
    readers.read_bookcrossing(tmp_path)


# ---------------------------------------------------------------------------------------------
# Amazon Food -> Kitchen sequences
# ---------------------------------------------------------------------------------------------

def test_food_kitchen_real_counts():
  directory = require_shared_data("amazon_food_kitchen")
  data = readers.read_food_kitchen(directory)
  food, kitchen = data.source, data.target
  assert (food.name, kitchen.name) == ("food", "kitchen")
  assert (food.num_items, kitchen.num_items) == (8661, 27637)  # num.txt
  assert food.scale.implicit and kitchen.time_kind == "sequence"
  users = {d.name: set(d.interactions.user_ids.tolist()) for d in (food, kitchen)}
  assert sum(u.startswith("food:") for u in users["food"]) == 5472  # instance_num.txt
  assert sum(u.startswith("kitchen:") for u in users["kitchen"]) == 38191
  assert len(users["food"] & users["kitchen"]) == 7501  # overlapping users, in both domains
  # train_A 37,281 + the overlap file's A items 45,849; train_B 265,817 + 53,321.
  assert (len(food.interactions), len(kitchen.interactions)) == (83130, 319138)
  assert (len(data.valid), len(data.test)) == (960, 937)
  # train_B.txt line 1 starts with 8661 = B index 0 (offset by the A count).
  b_index = json.loads((directory / "item_set_B.json").read_text())
  first_b = [a for a, i in b_index.items() if i == 0][0]
  kb = kitchen.interactions
  rows = np.flatnonzero(kitchen.interactions.user_ids[kb.user] == "kitchen:1")
  assert kitchen.items.ids[kb.item[rows[np.argmin(kb.time[rows])]]] == first_b
  titles = json.loads((directory / "text_B.json").read_text())
  assert kitchen.items.row(0)["title"] == titles[first_b].strip()
  # valid.txt line 1: "1<TAB>239,256,...,35882": 9 history items, target B index 35882 - 8661.
  hist_domain, hist_item = data.valid.history(0)
  assert hist_item[:2].tolist() == [239, 256] and len(hist_item) == 9
  assert (data.valid.target_domain[0], data.valid.target_item[0]) == (1, 35882 - 8661)
  assert data.skipped.total == 0 and "960 held-out" in data.summary()


def _fk(tmp_path, **override):
  files = {"num.txt": "3\n2\n", "instance_num.txt": "1\n1\n1\n",
           "item_set_A.json": json.dumps({"a0": 0, "a1": 1, "a2": 2}),
           "item_set_B.json": json.dumps({"b0": 0, "b1": 1}),
           "text_A.json": json.dumps({"a0": "Tea", "a1": "Coffee", "a2": "Rice"}),
           "text_B.json": json.dumps({"b0": "Pan", "b1": ""}),
           "train_A.txt": "1\t0,1,2\n", "train_B.txt": "1\t3,4\n",
           "train_overlap.txt": "1\t4,0,3,1\n", "valid.txt": "1\t0,3,1\n",
           "test.txt": "1\t2,4\n"}
  files.update(override)
  for name, text in files.items():
    _write(tmp_path / name, text)
  return tmp_path


def test_food_kitchen_small(tmp_path):
  data = readers.read_food_kitchen(_fk(tmp_path))
  food, kitchen = data.source.interactions, data.target.interactions
  assert len(food) == 5 and len(kitchen) == 4
  ov = food.user_ids[food.user] == "overlap:1"
  assert food.item[ov].tolist() == [0, 1] and food.time[ov].tolist() == [1, 3]  # mixed positions
  assert data.target.skipped.kept["item without a title in text_B.json (empty title)"] == 1
  assert data.test.history(0)[1].tolist() == [2] and data.test.target_item.tolist() == [1]


@pytest.mark.parametrize("override,match", [
    ({"train_A.txt": "1\t0,4\n"}, r"item index 4 is not an A \(food\) item .* at .*train_A.txt:1,"
                                  r" field 'items'"),
    ({"train_B.txt": "1\t3,x\n"}, r"non-integer item index at .*train_B.txt:1, field 'items'"),
    ({"train_overlap.txt": "1 4,0\n"}, r"expected 'uid<TAB>.* at .*train_overlap.txt:1"),
    ({"valid.txt": "1\t9\n2\t0,3\n"}, r"needs at least 2 items at .*valid.txt:1, field 'items'"),
])
def test_food_kitchen_bad_lines(tmp_path, override, match):
  with pytest.raises(DataError, match=match):
    readers.read_food_kitchen(_fk(tmp_path, **override))
  data = readers.read_food_kitchen(_fk(tmp_path, **override), on_error="skip")
  assert data.skipped.total == 1


@pytest.mark.parametrize("override,match", [
    ({"train_A.txt": ""}, r"train_A.txt: 0 user lines, but instance_num.txt says 1"),
    ({"item_set_A.json": json.dumps({"a0": 0, "a1": 1, "a2": 7})},
     r"item_set_A.json: ASIN 'a2' has index 7, not in \[0, 3\)"),
    ({"item_set_B.json": '{"b0": 0, '}, r"item_set_B.json:1: not valid JSON"),
    ({"num.txt": "three\n2\n"}, r"num.txt:1: expected an integer count"),
])
def test_food_kitchen_bad_files(tmp_path, override, match):
  with pytest.raises(DataError, match=match):
    readers.read_food_kitchen(_fk(tmp_path, **override))


def test_food_kitchen_missing_file(tmp_path):
  _fk(tmp_path)
  (tmp_path / "test.txt").unlink()
  with pytest.raises(DataError, match="test.txt: file not found"):
    readers.read_food_kitchen(tmp_path)
