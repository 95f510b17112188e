"""Tests for data/tokenize.py: explicit no-special/no-truncation encoding and the disk cache."""

import numpy as np
import pytest
import tokenizers

from crossrec_jax.data import tokenize


@pytest.fixture(scope="module")
def tok():
  return tokenize.load_tokenizer()


def test_encode_batch_has_no_special_tokens_and_no_truncation(tok):
  long_text = "the quick brown fox jumps over the lazy dog " * 40  # ~360 tokens
  ids = tokenize.encode_batch(tok, ["Toy Story (1995)", long_text])
  assert ids[0].dtype == np.int32
  assert ids[0].tolist() == tok.convert_tokens_to_ids(["toy", "story", "(", "1995", ")"])
  assert len(ids[1]) == 360 and tok.cls_token_id not in ids[1] and tok.pad_token_id not in ids[1]
  assert tokenize.special_ids(tok) == (tok.cls_token_id, tok.sep_token_id) == (101, 102)
  assert tokenize.encode_batch(tok, []) == []


def test_bare_tokenizers_backend_is_left_untouched(tok):
  bare = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
  bare.enable_truncation(4)
  ids = tokenize.encode_batch(bare, ["one two three four five six"])
  assert len(ids[0]) == 6 and bare.truncation["max_length"] == 4
  # Padding/truncation settings are not part of the identity; the vocabulary is.
  assert tokenize.tokenizer_identity(bare) == tokenize.tokenizer_identity(tok)
  bare.add_tokens(["zzznewtoken"])
  assert tokenize.tokenizer_identity(bare) != tokenize.tokenizer_identity(tok)


def test_cache_hits_misses_and_files(tok, tmp_path):
  texts = ["Heat (1995)", "Toy Story (1995)", "Heat (1995)"]
  first = tokenize.TokenCache(tok, tmp_path)
  ids = first.encode(texts)
  assert (first.hits, first.misses) == (0, 2)
  assert [x.tolist() for x in ids] == [x.tolist() for x in tokenize.encode_batch(tok, texts)]
  shards = list(tmp_path.rglob("*.npz"))
  assert len(shards) == 1 and shards[0].parent.name == first.identity[:16]
  with np.load(shards[0], allow_pickle=False) as z:  # plain arrays, no pickle
    assert set(z.files) == {"keys", "ids", "offsets"} and z["keys"].shape == (2, 32)
  second = tokenize.TokenCache(tok, tmp_path)  # a fresh process would do this
  again = second.encode(texts + ["Fargo (1996)"])
  assert (second.hits, second.misses) == (2, 1)
  assert [x.tolist() for x in again[:3]] == [x.tolist() for x in ids]
  assert len(list(tmp_path.rglob("*.npz"))) == 2
  third = tokenize.TokenCache(tok, tmp_path)
  third.encode(texts + ["Fargo (1996)"])
  assert (third.hits, third.misses) == (3, 0)


def test_cache_invalidated_by_another_tokenizer(tok, tmp_path):
  tokenize.TokenCache(tok, tmp_path).encode(["zzznewtoken here"])
  changed = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
  changed.add_tokens(["zzznewtoken"])
  other = tokenize.TokenCache(changed, tmp_path)
  ids = other.encode(["zzznewtoken here"])
  assert (other.hits, other.misses) == (0, 1)
  assert ids[0].tolist()[0] == changed.token_to_id("zzznewtoken")
  assert len({p.parent for p in tmp_path.rglob("*.npz")}) == 2


def test_corrupt_shard_names_the_file(tok, tmp_path):
  cache = tokenize.TokenCache(tok, tmp_path)
  cache.encode(["a"])
  shard = next(tmp_path.rglob("*.npz"))
  shard.write_bytes(b"not a zip")
  with pytest.raises(ValueError, match=f"{shard.name}.*delete it"):
    tokenize.TokenCache(tok, tmp_path).encode(["b"])
