"""Issue 14, defects 6-13: inputs that readers used to accept silently or report wrongly.

Each test failed before its fix (see the issue for the old behaviour); all go through the public
reader functions.
"""

import gzip
import json
import pathlib
import shutil

import pytest
from conftest import require_shared_data
from test_readers import _fk as fk_folder

from crossrec_jax.data import readers
from crossrec_jax.data.schema import DataError, RatingScale

FIX = pathlib.Path(__file__).parent / "fixtures"
FIVE = RatingScale(1.0, 5.0)
REPEAT = "(user, item) repeat at another time"


def _write(path: pathlib.Path, data: str | bytes) -> pathlib.Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  data = data.encode() if isinstance(data, str) else data
  path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
  return path


# ---------------------------------------------------------------------------------------------
# 6. Book-Crossing: a stray quote swallowed the rest of the file
# ---------------------------------------------------------------------------------------------

BOOKS = ("ISBN,Book-Title,Book-Author,Year-Of-Publication,Book-Publisher\n"
         "0001,A Book,An Author,2001,A House\n0002,\"Quoted, With Comma\",Someone,0,Other\n")


def _bx(tmp_path, lines: list[str]) -> pathlib.Path:
  _write(tmp_path / "BX-Books.csv", BOOKS)
  _write(tmp_path / "BX-Ratings.csv",
         "User-ID,ISBN,Book-Rating\n" + "".join(l + "\n" for l in lines))
  return tmp_path


def _bx_lines(n: int) -> list[str]:
  return [f"{u},000{1 + u % 2},{1 + u % 10}" for u in range(n)]


def test_bookcrossing_stray_quote_names_its_line_and_skips_only_it(tmp_path):
  lines = _bx_lines(2000)
  lines[699] = lines[699].replace(",", ',"', 1)  # file line 701: 699,"0002,10
  directory = _bx(tmp_path, lines)
  with pytest.raises(DataError, match=r"malformed CSV quoting .* at .*BX-Ratings.csv:701, "
                     r"field 'line'"):
    readers.read_bookcrossing(directory)
  d = readers.read_bookcrossing(directory, on_error="skip")
  assert len(d.interactions) == 1999 and d.skipped.total == 1


# ---------------------------------------------------------------------------------------------
# 7. Food/Kitchen
# ---------------------------------------------------------------------------------------------

def _fk(tmp_path, **override):
  """test_readers' small food/kitchen folder, with two held-out test users."""
  return fk_folder(tmp_path, **{"test.txt": "1\t2,4\n2\t0,3\n", **override})


def test_food_kitchen_real_test_file_cut_at_a_line_boundary_is_an_error(tmp_path):
  real = require_shared_data("amazon_food_kitchen")
  directory = tmp_path / "fk"
  shutil.copytree(real, directory)
  lines = (real / "test.txt").read_text().splitlines(keepends=True)
  (directory / "test.txt").chmod(0o644)
  (directory / "test.txt").write_text("".join(lines[:393]))
  with pytest.raises(DataError, match=r"test.txt: 393 user lines, but the release's recorded "
                     r"count .* says 937"):
    readers.read_food_kitchen(directory)


def test_food_kitchen_held_out_counts_are_checked(tmp_path):
  directory = _fk(tmp_path)
  with pytest.raises(DataError, match=r"test.txt: 2 user lines, but .* says 3"):
    readers.read_food_kitchen(directory, held_out_counts={"valid": 1, "test": 3})
  data = readers.read_food_kitchen(directory, held_out_counts={"valid": 1, "test": 2})
  assert len(data.test) == 2


def test_food_kitchen_last_item_cut_off_is_flagged(tmp_path):
  directory = _fk(tmp_path, **{"test.txt": "1\t2,4\n2\t0,3"})  # '2\t0,31' lost its last byte
  with pytest.raises(DataError, match=r"last line has no end-of-line .* at .*test.txt:2"):
    readers.read_food_kitchen(directory)
  data = readers.read_food_kitchen(directory, on_error="skip")
  assert len(data.test) == 1 and data.skipped.total == 1


def test_food_kitchen_duplicate_uid_is_not_merged(tmp_path):
  directory = _fk(tmp_path, **{"train_B.txt": "1\t3\n1\t4\n"})
  with pytest.raises(DataError, match=r"duplicate uid \(first at line 1\) at .*train_B.txt:2, "
                     r"field 'uid'"):
    readers.read_food_kitchen(directory)
  data = readers.read_food_kitchen(directory, on_error="skip")
  kitchen = data.target.interactions
  assert (kitchen.user_ids[kitchen.user] == "kitchen:1").sum() == 1
  assert data.skipped.counts["duplicate uid (first at line 1)"] == 1


@pytest.mark.parametrize("name", ["text_A.json", "item_set_B.json"])
def test_food_kitchen_json_with_non_utf8_names_file_and_line(tmp_path, name):
  text = {"text_A.json": '{"a0": "Tea",\n "a1": "Caf\xe9",\n "a2": "Rice"}',
          "item_set_B.json": '{"b0": 0,\n "b\xff": 1}'}[name]
  directory = _fk(tmp_path, **{name: text.encode("latin-1")})
  with pytest.raises(DataError, match=rf"{name}:2: bytes that are not utf-8"):
    readers.read_food_kitchen(directory)


def test_food_kitchen_json_key_listed_twice_is_an_error(tmp_path):
  directory = _fk(tmp_path, **{"item_set_A.json": '{"a0": 0,\n "a1": 1,\n "a0": 2}'})
  with pytest.raises(DataError, match=r"item_set_A.json:3: key 'a0' listed twice"):
    readers.read_food_kitchen(directory)


def test_food_kitchen_true_is_not_an_item_index(tmp_path):
  directory = _fk(tmp_path, **{"item_set_B.json": '{"b0": 0, "b1": true}'})
  with pytest.raises(DataError, match=r"item_set_B.json: ASIN 'b1' has index True"):
    readers.read_food_kitchen(directory)


def test_food_kitchen_extra_line_in_num_txt(tmp_path):
  with pytest.raises(DataError, match=r"num.txt:3: expected 2 non-negative integer lines"):
    readers.read_food_kitchen(_fk(tmp_path, **{"num.txt": "3\n2\n7\n"}))


# ---------------------------------------------------------------------------------------------
# 8. Amazon: JSON true read as a 1-star rating
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("reader,obj", [
    (readers.read_amazon2018, {"overall": True, "reviewerID": "A", "asin": "B",
                               "unixReviewTime": 1400000000}),
    (readers.read_amazon2023, {"rating": True, "user_id": "A", "parent_asin": "B",
                               "timestamp": 1400000000000}),
])
def test_amazon_true_is_not_a_rating(tmp_path, reader, obj):
  path = _write(tmp_path / "r.jsonl", json.dumps(obj) + "\n")
  field = "overall" if "overall" in obj else "rating"
  with pytest.raises(DataError, match=rf"non-numeric value at .*r.jsonl:1, field '{field}': "
                     r"value True"):
    reader(path)


# ---------------------------------------------------------------------------------------------
# 9. A non-UTF-8 byte: the right line, and skip mode skips that line only
# ---------------------------------------------------------------------------------------------

def _reviews(n: int) -> list[bytes]:
  return [json.dumps({"overall": 4.0, "reviewerID": f"A{i}", "asin": "B",
                      "unixReviewTime": 1400000000 + i}).encode() for i in range(n)]


@pytest.mark.parametrize("name", ["r.json", "r.json.gz"])
def test_non_utf8_byte_names_its_line_and_skips_only_it(tmp_path, name):
  lines = _reviews(100)
  lines[50] = lines[50].replace(b'"B"', b'"B\xff"')
  path = _write(tmp_path / name, b"\n".join(lines) + b"\n")
  with pytest.raises(DataError, match=rf"bytes that are not utf-8 .* at .*{name}:51, field "
                     r"'bytes'"):
    readers.read_amazon2018(path)
  d = readers.read_amazon2018(path, on_error="skip")
  assert len(d.interactions) == 99 and d.skipped.total == 1


def test_bookcrossing_non_utf8_byte_names_its_line(tmp_path):
  directory = _bx(tmp_path, _bx_lines(10))
  raw = (directory / "BX-Ratings.csv").read_bytes().replace(b"4,0001,5", b"4,0001\xe9,5")
  (directory / "BX-Ratings.csv").write_bytes(raw)
  with pytest.raises(DataError, match=r"bytes that are not utf-8 .* at .*BX-Ratings.csv:6"):
    readers.read_bookcrossing(directory)
  d = readers.read_bookcrossing(directory, on_error="skip")
  assert len(d.interactions) == 9 and d.skipped.total == 1


# ---------------------------------------------------------------------------------------------
# 10. (user, item) rated again at another time
# ---------------------------------------------------------------------------------------------

def _recbole(tmp_path, rows: list[str]) -> tuple[pathlib.Path, pathlib.Path]:
  inter = _write(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\t"
                 "timestamp:float\r\n" + "".join(r + "\r\n" for r in rows))
  item = _write(tmp_path / "x.item", "item_id:token\tmovie_title:token\r\nA\tA\r\nB\tB\r\n")
  return inter, item


def _read_repeat(kind: str, tmp_path, **kw):
  if kind == "recbole":
    inter, item = _recbole(tmp_path, ["u\tA\t4\t10", "v\tB\t3\t11", "u\tA\t2\t12"])
    return readers.read_recbole_atomic(inter, item, name="x", scale=FIVE, **kw)
  if kind in ("ml-1m", "ml-100k"):
    directory = tmp_path / kind
    shutil.copytree(FIX / kind, directory, dirs_exist_ok=True)
    data = directory / ("ratings.dat" if kind == "ml-1m" else "u.data")
    first = data.read_text(encoding="latin-1").splitlines()[0]
    sep = "::" if kind == "ml-1m" else "\t"
    user, item, _, time = first.split(sep)
    with open(data, "a", encoding="latin-1") as f:
      f.write(sep.join([user, item, "1", str(int(time) + 100)]) + "\n")  # fresh copy each call
    read = readers.read_movielens_dat if kind == "ml-1m" else readers.read_movielens_100k
    return read(directory, **kw)
  key = ("overall", "reviewerID", "asin", "unixReviewTime") if kind == "amazon2018" else (
      "rating", "user_id", "parent_asin", "timestamp")
  rows = [(4.0, "A", "B", 100), (3.0, "C", "B", 100), (2.0, "A", "B", 200)]
  path = _write(tmp_path / "r.jsonl", "".join(json.dumps(dict(zip(key, r))) + "\n" for r in rows))
  read = readers.read_amazon2018 if kind == "amazon2018" else readers.read_amazon2023
  return read(path, **kw)


KINDS = ["recbole", "ml-1m", "ml-100k", "amazon2018", "amazon2023"]


@pytest.mark.parametrize("kind", KINDS)
def test_user_item_repeat_raises_under_on_duplicate_raise(tmp_path, kind):
  with pytest.raises(DataError, match=r"\(user, item\) repeat at another time at .*, field 'item'"):
    _read_repeat(kind, tmp_path, on_duplicate="raise")


@pytest.mark.parametrize("kind", KINDS)
def test_user_item_repeat_is_counted_under_its_own_name(tmp_path, kind):
  kept = _read_repeat(kind, tmp_path, on_duplicate="keep")
  assert kept.skipped.kept[REPEAT] == 1
  skipped = _read_repeat(kind, tmp_path, on_duplicate="keep", on_repeat="skip")
  assert len(skipped.interactions) == len(kept.interactions) - 1
  assert skipped.skipped.counts[REPEAT] == 1


# ---------------------------------------------------------------------------------------------
# 11. A last line cut mid-way that still parses
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["ml-1m", "ml-100k", "bookcrossing"])
def test_cut_last_line_is_flagged(tmp_path, kind):
  if kind == "bookcrossing":
    directory, data = _bx(tmp_path, _bx_lines(5)), "BX-Ratings.csv"
    read = readers.read_bookcrossing
  else:
    directory = tmp_path / kind
    shutil.copytree(FIX / kind, directory)
    data = "ratings.dat" if kind == "ml-1m" else "u.data"
    read = readers.read_movielens_dat if kind == "ml-1m" else readers.read_movielens_100k
  n = len(read(directory).interactions)
  path = directory / data
  path.write_bytes(path.read_bytes()[:-3])  # a timestamp or a rating '10' loses its last digits
  with pytest.raises(DataError, match=rf"last line has no end-of-line .* at .*{data}:\d+"):
    read(directory)
  d = read(directory, on_error="skip")
  assert len(d.interactions) == n - 1 and d.skipped.total == 1


def test_cut_last_line_of_a_catalogue_is_kept_and_counted(tmp_path):
  # Catalogues may end without a newline (the real BX-Books.csv does): kept, but not silently.
  inter, item = _recbole(tmp_path, ["u\tA\t4\t10"])
  item.write_bytes(item.read_bytes()[:-3])  # "B\tB\r\n" -> "B\t"
  d = readers.read_recbole_atomic(inter, item, name="x", scale=FIVE)
  assert d.skipped.kept["x.item: last line without end-of-line (kept; the file may be cut)"] == 1


def test_bookcrossing_header_with_a_bad_byte_is_an_error_even_when_skipping(tmp_path):
  directory = _bx(tmp_path, _bx_lines(3))
  raw = (directory / "BX-Ratings.csv").read_bytes().replace(b"User-ID", b"User-\xffID")
  (directory / "BX-Ratings.csv").write_bytes(raw)
  with pytest.raises(DataError, match=r"BX-Ratings.csv:1: bytes that are not utf-8"):
    readers.read_bookcrossing(directory, on_error="skip")


# ---------------------------------------------------------------------------------------------
# 12. A whitespace-only user id (the fast path)
# ---------------------------------------------------------------------------------------------

def test_whitespace_user_id_is_rejected_on_the_fast_path(tmp_path):
  inter, item = _recbole(tmp_path, ["u\tA\t4\t10", " \tB\t3\t11"])
  with pytest.raises(DataError, match=r"empty user id at .*x.inter:3, field 'user'"):
    readers.read_recbole_atomic(inter, item, name="x", scale=FIVE)
  directory = tmp_path / "ml"
  shutil.copytree(FIX / "ml-1m", directory)
  with open(directory / "ratings.dat", "a", encoding="latin-1") as f:
    f.write("  ::1::4::978300000\n")
  with pytest.raises(DataError, match=r"empty user id at .*ratings.dat:\d+, field 'user'"):
    readers.read_movielens_dat(directory)


# ---------------------------------------------------------------------------------------------
# 13. Advice for a compression that does not match the name
# ---------------------------------------------------------------------------------------------

def test_plain_json_named_gz_and_gzip_named_json(tmp_path):
  text = b"".join(l + b"\n" for l in _reviews(3))
  plain = tmp_path / "r.json.gz"
  plain.write_bytes(text)
  with pytest.raises(DataError, match=r"r.json.gz: named .gz but not gzip data") as e:
    readers.read_amazon2018(plain)
  assert "re-download" not in str(e.value)
  zipped = tmp_path / "r.json"
  zipped.write_bytes(gzip.compress(text))
  with pytest.raises(DataError, match=r"r.json: gzip-compressed data under a name without .gz"):
    readers.read_amazon2018(zipped)
