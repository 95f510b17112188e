"""Batched tokenisation of text pieces, with a content-addressed cache on disk.

Pieces (item texts, history entries, template prefixes) are tokenised *without* special tokens,
padding or truncation; `examples.py` adds [CLS]/[SEP] and fits `max_len` itself. Each unique text is
tokenised once per tokenizer, ever: the cache key is sha256(tokenizer identity + text), where the
identity hashes the tokenizer's full serialisation (vocabulary, normaliser, pre-tokeniser...) minus
its padding/truncation settings, which do not change the ids of a piece. A different tokenizer
therefore never reads another's ids.

On disk: `cache_dir/<identity[:16]>/<shard hash>.npz`, each shard holding `keys` ([n, 32] uint8
digests), `ids` (all ids concatenated, int32) and `offsets` ([n + 1] int64), written atomically and
read with `allow_pickle=False`. A call that tokenises new texts adds one shard.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import tempfile
from typing import Any, Sequence

import numpy as np

from crossrec_jax import hf_files

_FORMAT = b"crossrec-token-cache-v1\0"


def load_tokenizer(path: str | os.PathLike | None = None):
  """The checkpoint's fast tokenizer, offline (default: the packaged all-MiniLM-L6-v2)."""
  return hf_files.load_tokenizer(path)


def _backend(tokenizer: Any):
  """The `tokenizers.Tokenizer` behind a transformers fast tokenizer (or the object itself)."""
  backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
  if not hasattr(backend, "to_str"):
    raise TypeError(f"need a fast tokenizer (tokenizers.Tokenizer backend), got {type(tokenizer)}")
  return backend


def tokenizer_identity(tokenizer: Any) -> str:
  """sha256 hex of the tokenizer's serialisation without its padding/truncation settings."""
  spec = json.loads(_backend(tokenizer).to_str())
  spec.pop("padding", None)
  spec.pop("truncation", None)
  return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def special_ids(tokenizer: Any) -> tuple[int, int]:
  """([CLS] id, [SEP] id)."""
  cls = getattr(tokenizer, "cls_token_id", None)
  sep = getattr(tokenizer, "sep_token_id", None)
  if cls is None or sep is None:
    backend = _backend(tokenizer)
    cls, sep = backend.token_to_id("[CLS]"), backend.token_to_id("[SEP]")
  if cls is None or sep is None:
    raise ValueError("tokenizer has no [CLS]/[SEP] tokens; a BERT-style tokenizer is required")
  return int(cls), int(sep)


def encode_batch(tokenizer: Any, texts: Sequence[str]) -> list[np.ndarray]:
  """int32 ids of each text: no special tokens, no padding, no truncation (set explicitly, because
  the packaged tokenizer.json pads and truncates to 128 by default)."""
  if not texts:
    return []
  if hasattr(tokenizer, "backend_tokenizer"):  # transformers: flags are applied per call
    ids = tokenizer(list(texts), add_special_tokens=False, padding=False, truncation=False,
                    return_attention_mask=False, return_token_type_ids=False)["input_ids"]
  else:  # a bare tokenizers.Tokenizer: work on a copy so the caller's settings stay untouched
    backend = type(tokenizer).from_str(tokenizer.to_str())
    backend.no_padding()
    backend.no_truncation()
    ids = [e.ids for e in backend.encode_batch(list(texts), add_special_tokens=False)]
  return [np.asarray(x, np.int32) for x in ids]


class TokenCache:
  """Token ids of text pieces, memoised in memory and (with `cache_dir`) on disk.

  `hits` / `misses` count unique texts found / tokenised by `encode` since construction.
  """

  def __init__(self, tokenizer: Any, cache_dir: str | os.PathLike | None = None):
    self.tokenizer = tokenizer
    self.identity = tokenizer_identity(tokenizer)
    self._salt = _FORMAT + self.identity.encode() + b"\0"
    self.directory = None if cache_dir is None else pathlib.Path(cache_dir) / self.identity[:16]
    self._ids: dict[bytes, np.ndarray] = {}
    self._loaded: set[str] = set()
    self.hits = 0
    self.misses = 0

  def key(self, text: str) -> bytes:
    return hashlib.sha256(self._salt + text.encode("utf-8")).digest()

  def encode(self, texts: Sequence[str]) -> list[np.ndarray]:
    """int32 ids for each text (see `encode_batch`); unique new texts are tokenised in one batch."""
    keys = [self.key(t) for t in texts]
    self._load_shards()
    missing: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
      if k not in self._ids and k not in missing:
        missing[k] = t
    self.misses += len(missing)
    self.hits += len(set(keys)) - len(missing)
    if missing:
      new = dict(zip(missing, encode_batch(self.tokenizer, list(missing.values()))))
      self._ids.update(new)
      self._write_shard(new)
    return [self._ids[k] for k in keys]

  def _load_shards(self) -> None:
    if self.directory is None or not self.directory.is_dir():
      return
    for path in sorted(self.directory.glob("*.npz")):
      if path.name in self._loaded:
        continue
      try:
        with np.load(path, allow_pickle=False) as shard:
          keys, ids, offsets = shard["keys"], shard["ids"], shard["offsets"]
      except Exception as e:  # a truncated or foreign file: say which, and how to recover
        raise ValueError(f"unreadable token cache shard {path} ({e!r}); "
                         "delete it to rebuild") from e
      if keys.ndim != 2 or keys.shape[1] != 32 or len(offsets) != len(keys) + 1:
        raise ValueError(f"token cache shard {path} has inconsistent arrays; delete it to rebuild")
      for i, k in enumerate(keys):
        self._ids.setdefault(k.tobytes(), ids[offsets[i]:offsets[i + 1]])
      self._loaded.add(path.name)

  def _write_shard(self, new: dict[bytes, np.ndarray]) -> None:
    if self.directory is None:
      return
    self.directory.mkdir(parents=True, exist_ok=True)
    keys = np.frombuffer(b"".join(new), np.uint8).reshape(len(new), 32)
    lengths = np.fromiter((len(v) for v in new.values()), np.int64, count=len(new))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    ids = np.concatenate(list(new.values())).astype(np.int32) if len(new) else np.zeros(0, np.int32)
    name = hashlib.sha256(keys.tobytes()).hexdigest()[:32] + ".npz"
    # Atomic: a reader (another process) never sees a half-written shard.
    fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
    try:
      with os.fdopen(fd, "wb") as f:
        np.savez(f, keys=keys, ids=ids, offsets=offsets)
      os.replace(tmp, self.directory / name)
    except BaseException:
      pathlib.Path(tmp).unlink(missing_ok=True)
      raise
    self._loaded.add(name)
