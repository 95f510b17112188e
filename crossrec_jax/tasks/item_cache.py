"""Item-embedding cache of the bi-encoder: every item's text encoded once, stored on disk by key.

With a frozen item tower the encoder's pooled vector of an item's text never changes, so the fast
path encodes the whole catalogue once (jitted, in fixed-size batches, optionally sharded over a
mesh's data axis) and trains the user tower, the projections and the heads on these vectors.
With a trainable tower the cache is refreshed before each evaluation (the key changes with the
weights, so a stale entry is never read).

The key (`CacheKey`) is a sha256 of everything that changes the vectors:
  * encoder: a fingerprint of the encoder's parameters (`encoder_fingerprint`: paths, dtypes,
    shapes and bytes of every nnx.Param), so a fine-tuned or different checkpoint misses;
  * tokenizer: `tokenize.tokenizer_identity`;
  * template: the item-text template's name and item fields (`text.Template`), and the texts
    themselves (sha256 of all item texts in order), so a template or catalogue change misses;
  * max_len and pooling.
On disk: `cache_dir/<key>.npz` with `vectors` [I, H] float32 and `key` (the key's JSON), written
atomically, read with allow_pickle=False, and checked against the key on read (a mismatch is a
miss). At most `max_entries` files are kept (least recently used removed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import pathlib
import tempfile
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crossrec_jax.data import text as text_lib
from crossrec_jax.data import tokenize as tokenize_lib
from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import recommender as recommender_lib

__all__ = ["CacheKey", "ItemTokens", "ItemEmbeddingCache", "encoder_fingerprint", "texts_digest",
           "template_spec", "tokenize_items", "make_item_encoder", "encode_items"]

_FORMAT = "crossrec-item-cache-v1"
_log = logging.getLogger(__name__)


def encoder_fingerprint(encoder: nnx.Module) -> str:
  """sha256 hex over the encoder's parameters (path, dtype, shape, bytes), in path order."""
  digest = hashlib.sha256(_FORMAT.encode())
  state = nnx.state(encoder, nnx.Param)
  leaves = jax.tree_util.tree_leaves_with_path(state)
  for path, leaf in sorted(leaves, key=lambda pl: jax.tree_util.keystr(pl[0])):
    arr = np.ascontiguousarray(jax.device_get(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}\0".encode())
    digest.update(arr.tobytes())
  return digest.hexdigest()


def texts_digest(texts: Sequence[str]) -> str:
  digest = hashlib.sha256()
  for t in texts:
    digest.update(str(t).encode("utf-8") + b"\0")
  return digest.hexdigest()


def template_spec(template: str | text_lib.Template) -> str:
  """The part of a template that shapes item text: its name and item fields."""
  t = text_lib.get_template(template)
  return json.dumps({"name": t.name, "item_fields": [list(f) for f in t.item_fields]})


@dataclasses.dataclass(frozen=True)
class CacheKey:
  encoder: str
  tokenizer: str
  template: str
  texts: str
  max_len: int
  pooling: str

  def digest(self) -> str:
    blob = json.dumps(dataclasses.asdict(self), sort_keys=True)
    return hashlib.sha256((_FORMAT + blob).encode()).hexdigest()

  def to_json(self) -> str:
    return json.dumps(dataclasses.asdict(self), sort_keys=True)


# ----------------------------------------------------------------------------- tokens


@dataclasses.dataclass(frozen=True)
class ItemTokens:
  """[CLS] text [SEP] of every item, right-padded: input_ids, attention_mask [I, L] int32."""
  input_ids: np.ndarray
  attention_mask: np.ndarray
  truncated: int  # items whose text was cut to fit max_len

  def __len__(self) -> int:
    return len(self.input_ids)

  def take(self, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {"input_ids": self.input_ids[rows], "attention_mask": self.attention_mask[rows]}


def tokenize_items(tokenizer: Any, texts: Sequence[str], max_len: int, *,
                   token_cache: tokenize_lib.TokenCache | None = None,
                   multiple: int = 8) -> ItemTokens:
  """Tokenises item texts to [CLS] ids [SEP], cut to max_len (counted), padded to the longest item
  rounded up to `multiple` (a fixed width: one compiled encoder for the whole catalogue)."""
  if max_len < 3:
    raise ValueError(f"item max_len must be >= 3, got {max_len}")
  cache = token_cache or tokenize_lib.TokenCache(tokenizer)
  cls, sep = tokenize_lib.special_ids(tokenizer)
  pieces = cache.encode([str(t) for t in texts])
  body = max_len - 2
  width = min(max_len, -(-(max(len(p) for p in pieces) + 2) // multiple) * multiple) if pieces else 8
  ids = np.zeros((len(pieces), width), np.int32)
  mask = np.zeros((len(pieces), width), np.int32)
  truncated = 0
  for i, p in enumerate(pieces):
    if len(p) > body:
      truncated += 1
      p = p[:body]
    row = np.concatenate([[cls], p, [sep]]).astype(np.int32)
    ids[i, :len(row)] = row
    mask[i, :len(row)] = 1
  return ItemTokens(ids, mask, truncated)


# ----------------------------------------------------------------------------- encoding


def make_item_encoder(graphdef: nnx.GraphDef, pooling: str, mesh: Mesh | None = None,
                      data_axis: str = "data"):
  """jit(params, input_ids, attention_mask) -> pooled float32 [B, H]; batch sharded over
  `data_axis` of `mesh` when given (each device encodes its rows; params replicated)."""

  def fn(state, input_ids, attention_mask):
    encoder = nnx.merge(graphdef, state)
    out = encoder(input_ids, attention_mask, deterministic=True)
    return recommender_lib.pool(pooling, out, attention_mask)

  if mesh is None:
    return jax.jit(fn)
  rows = NamedSharding(mesh, P(data_axis))
  return jax.jit(fn, in_shardings=(NamedSharding(mesh, P()), rows, rows), out_shardings=rows)


def encode_items(encoder: bert_lib.BertModel, tokens: ItemTokens, *, pooling: str = "mean",
                 batch_size: int = 256, mesh: Mesh | None = None,
                 data_axis: str = "data", progress_every_s: float = 10.0) -> np.ndarray:
  """[I, H] float32 pooled vectors of every item, in fixed-size batches (the last one padded).

  A large catalogue takes minutes: progress (items done, elapsed, ETA) is logged at INFO every
  `progress_every_s` seconds, measured after each batch's vectors reach the host."""
  if mesh is not None and batch_size % mesh.shape[data_axis]:
    raise ValueError(f"batch_size {batch_size} must divide by the mesh's {data_axis!r} axis "
                     f"({mesh.shape[data_axis]})")
  graphdef, state = nnx.split(encoder)
  run = make_item_encoder(graphdef, pooling, mesh, data_axis)
  n = len(tokens)
  out = []
  t0 = last = time.perf_counter()
  for start in range(0, n, batch_size):
    rows = np.arange(start, min(start + batch_size, n))
    pad = batch_size - len(rows) if n > batch_size else 0  # one shape for every batch
    idx = np.concatenate([rows, np.full(pad, rows[-1])])
    vec = run(state, jnp.asarray(tokens.input_ids[idx]), jnp.asarray(tokens.attention_mask[idx]))
    out.append(np.asarray(jax.device_get(vec))[:len(rows)])
    now, done = time.perf_counter(), rows[-1] + 1
    if now - last >= progress_every_s or (done == n and now - t0 >= progress_every_s):
      last = now
      _log.info("item cache: encoded %d/%d items, %.0f s elapsed, ETA %.0f s", done, n, now - t0,
                (now - t0) * (n - done) / done)
  return np.concatenate(out).astype(np.float32) if out else np.zeros((0, encoder.config.hidden_size),
                                                                     np.float32)


# ----------------------------------------------------------------------------- the cache


class ItemEmbeddingCache:
  """Pooled item-text vectors on disk (or in memory only, with cache_dir=None), by `CacheKey`.

  `hits` / `misses` count lookups. `get_or_encode` is the one entry point:

      cache = ItemEmbeddingCache("~/.cache/crossrec_jax/items")
      vectors, key = cache.get_or_encode(model.encoder, tokenizer, texts, template="default",
                                         max_len=64, pooling="mean")
  """

  def __init__(self, cache_dir: str | os.PathLike | None = None, *, max_entries: int = 8):
    self.directory = None if cache_dir is None else pathlib.Path(cache_dir).expanduser()
    self.max_entries = max_entries
    self._memory: dict[str, np.ndarray] = {}
    self.hits = 0
    self.misses = 0

  def key(self, encoder: nnx.Module, tokenizer: Any, texts: Sequence[str], *,
          template: str | text_lib.Template, max_len: int, pooling: str) -> CacheKey:
    return CacheKey(encoder=encoder_fingerprint(encoder),
                    tokenizer=tokenize_lib.tokenizer_identity(tokenizer),
                    template=template_spec(template), texts=texts_digest(texts),
                    max_len=int(max_len), pooling=str(pooling))

  def path(self, key: CacheKey) -> pathlib.Path | None:
    return None if self.directory is None else self.directory / f"{key.digest()}.npz"

  def get(self, key: CacheKey) -> np.ndarray | None:
    digest = key.digest()
    if digest in self._memory:
      return self._memory[digest]
    path = self.path(key)
    if path is None or not path.exists():
      return None
    try:
      with np.load(path, allow_pickle=False) as f:
        stored, vectors = str(f["key"]), f["vectors"]
    except Exception as e:  # truncated or foreign file: say which and how to recover
      raise ValueError(f"unreadable item-embedding cache file {path} ({e!r}); delete it") from e
    if stored != key.to_json():
      return None  # a digest collision or a foreign file: treat as absent
    os.utime(path)  # least-recently-used bookkeeping
    self._memory[digest] = vectors
    return vectors

  def put(self, key: CacheKey, vectors: np.ndarray) -> None:
    vectors = np.asarray(vectors, np.float32)
    self._memory = {key.digest(): vectors}  # one live entry in memory; the disk keeps more
    path = self.path(key)
    if path is None:
      return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, vectors=vectors, key=np.asarray(key.to_json()))
      os.replace(tmp, path)  # atomic: readers see the old state or the whole file
    except BaseException:
      pathlib.Path(tmp).unlink(missing_ok=True)
      raise
    self._evict()

  def _evict(self) -> None:
    files = sorted(self.directory.glob("*.npz"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[self.max_entries:]:
      old.unlink(missing_ok=True)

  def invalidate(self, key: CacheKey) -> None:
    """Drops one entry (memory and disk)."""
    self._memory.pop(key.digest(), None)
    path = self.path(key)
    if path is not None:
      path.unlink(missing_ok=True)

  def get_or_encode(self, encoder: bert_lib.BertModel, tokenizer: Any, texts: Sequence[str], *,
                    template: str | text_lib.Template, max_len: int, pooling: str = "mean",
                    batch_size: int = 256, mesh: Mesh | None = None,
                    tokens: ItemTokens | None = None) -> tuple[np.ndarray, CacheKey]:
    """The cached [I, H] vectors for these texts under this encoder, encoding them on a miss."""
    key = self.key(encoder, tokenizer, texts, template=template, max_len=max_len, pooling=pooling)
    vectors = self.get(key)
    if vectors is not None:
      self.hits += 1
      return vectors, key
    self.misses += 1
    if tokens is None:
      tokens = tokenize_items(tokenizer, texts, max_len)
    elif len(tokens) != len(texts):
      raise ValueError(f"{len(tokens)} token rows for {len(texts)} texts")
    vectors = encode_items(encoder, tokens, pooling=pooling, batch_size=batch_size, mesh=mesh)
    self.put(key, vectors)
    return vectors, key
