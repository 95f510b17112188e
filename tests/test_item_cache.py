"""Item-embedding cache: tokens, batched encoding, hits, misses, invalidation, persistence."""

import numpy as np
import pytest
from flax import nnx

from crossrec_jax.data import text as text_lib
from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import hf_import
from crossrec_jax.tasks import item_cache
from crossrec_jax.models import recommender as recommender_lib

TEXTS = ["toy story (1995); genres: animation", "heat (1995); genres: action, crime",
         "a very long title " * 20, "casino (1995)", "babe (1995); genres: comedy"]


@pytest.fixture(scope="module")
def tokenizer():
  return hf_import.load_tokenizer()


def _encoder(seed=0):
  cfg = bert_lib.BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
  return bert_lib.BertModel(cfg, rngs=nnx.Rngs(seed))


def test_tokenize_items_adds_specials_cuts_and_counts(tokenizer):
  tokens = item_cache.tokenize_items(tokenizer, TEXTS, max_len=24)
  cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
  assert tokens.input_ids.shape[0] == 5 and tokens.input_ids.shape[1] % 8 == 0
  assert tokens.input_ids.shape[1] <= 24
  assert tokens.truncated == 1  # only the long title
  for row, mask in zip(tokens.input_ids, tokens.attention_mask):
    n = int(mask.sum())
    assert row[0] == cls and row[n - 1] == sep and (row[n:] == 0).all()


def test_encode_items_batches_equal_one_pass(tokenizer):
  enc = _encoder()
  tokens = item_cache.tokenize_items(tokenizer, TEXTS, max_len=24)
  whole = item_cache.encode_items(enc, tokens, pooling="mean", batch_size=8)
  split = item_cache.encode_items(enc, tokens, pooling="mean", batch_size=2)  # padded last batch
  np.testing.assert_allclose(split, whole, atol=1e-5)
  ref = recommender_lib.pool("mean", enc(tokens.input_ids, tokens.attention_mask),
                             tokens.attention_mask)
  np.testing.assert_allclose(whole, np.asarray(ref), atol=1e-5)


def test_hit_miss_and_persistence(tmp_path, tokenizer, monkeypatch):
  enc = _encoder()
  calls = []
  real = item_cache.encode_items
  monkeypatch.setattr(item_cache, "encode_items",
                      lambda *a, **k: calls.append(1) or real(*a, **k))
  cache = item_cache.ItemEmbeddingCache(tmp_path)
  kw = dict(template="default", max_len=24, pooling="mean", batch_size=4)
  first, key = cache.get_or_encode(enc, tokenizer, TEXTS, **kw)
  again, key2 = cache.get_or_encode(enc, tokenizer, TEXTS, **kw)
  assert (cache.misses, cache.hits, len(calls)) == (1, 1, 1)
  assert key == key2 and again is first
  # A new process (fresh cache object) reads the file: no encoding.
  fresh = item_cache.ItemEmbeddingCache(tmp_path)
  loaded, _ = fresh.get_or_encode(enc, tokenizer, TEXTS, **kw)
  assert (fresh.hits, len(calls)) == (1, 1)
  np.testing.assert_array_equal(loaded, first)


def test_invalidation_on_encoder_template_length_pooling_and_texts(tmp_path, tokenizer):
  enc = _encoder()
  cache = item_cache.ItemEmbeddingCache(tmp_path, max_entries=32)
  kw = dict(template="default", max_len=24, pooling="mean", batch_size=8)
  base, key = cache.get_or_encode(enc, tokenizer, TEXTS, **kw)
  # The same weights in another object: still a hit (the key hashes values, not identity).
  cache.get_or_encode(_encoder(0), tokenizer, TEXTS, **kw)
  assert cache.hits == 1
  # Fine-tuned weights: a miss, and different vectors.
  changed = _encoder()
  changed.pooler.kernel[...] = changed.pooler.kernel[...] + 1.0
  changed.embeddings.word_embeddings.embedding[...] *= 1.5
  vec, key_enc = cache.get_or_encode(changed, tokenizer, TEXTS, **kw)
  assert key_enc.encoder != key.encoder and not np.allclose(vec, base)
  misses = cache.misses
  for change in (dict(template="tallrec"), dict(max_len=16), dict(pooling="cls")):
    cache.get_or_encode(enc, tokenizer, TEXTS, **{**kw, **change})
    misses += 1
    assert cache.misses == misses, change
  cache.get_or_encode(enc, tokenizer, TEXTS[:-1], **kw)  # another catalogue
  assert cache.misses == misses + 1
  custom = text_lib.Template(name="default", prefix="p", prefix_implicit="p", rated="{item}",
                             unrated="{item}", empty="e", candidate="{item}",
                             item_fields=(("title", "{}"),))
  assert item_cache.template_spec(custom) != item_cache.template_spec("default")


def test_invalidate_and_eviction(tmp_path, tokenizer):
  enc = _encoder()
  cache = item_cache.ItemEmbeddingCache(tmp_path, max_entries=2)
  keys = [cache.get_or_encode(enc, tokenizer, TEXTS, template="default", max_len=m,
                              pooling="mean")[1] for m in (16, 20, 24)]
  assert len(list(tmp_path.glob("*.npz"))) == 2  # the least recently used entry went
  cache.invalidate(keys[-1])
  assert not cache.path(keys[-1]).exists() and cache.get(keys[-1]) is None
