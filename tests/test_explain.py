"""Explanations on tiny models: IG completeness, exact leave-one-out, a planted feature ranks first."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from crossrec_jax import explain
from crossrec_jax.explain import segments as seg_lib
from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import recommender as recommender_lib

PAD, CLS, SEP, PLANT = 0, 1, 2, 5
PREFIX = (3, 4)


def tiny_model(seed=0, vocab=40):
  cfg = bert_lib.BertConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=64, hidden_dropout_prob=0.0,
                            attention_probs_dropout_prob=0.0)
  rngs = nnx.Rngs(seed)
  return recommender_lib.CrossEncoderRecommender(
      bert_lib.BertModel(cfg, rngs=rngs), pooling="mean", rating_hidden=(32,),
      rating_dropout=0.0, discriminator_dropout=0.0, rngs=rngs)


def synthetic(n, rng, planted_share=0.5, entries=3):
  """Rows [CLS] prefix e_2 e_1 e_0 [SEP] candidate [SEP] (e_0 newest), each entry 3 tokens; the
  label is 1 iff one entry is the planted item (tokens 5 6 7), else 0. Returns ids, segments,
  labels, the planted entry's k (-1 if none)."""
  ids, segs, labels, where = [], [], [], []
  for _ in range(n):
    planted = rng.random() < planted_share
    k_plant = int(rng.integers(entries)) if planted else -1
    row, seg = [CLS, *PREFIX], [0, 0, 0]
    for k in reversed(range(entries)):  # oldest first
      entry = [PLANT, 6, 7] if k == k_plant else list(rng.integers(10, 40, 3))
      row += entry
      seg += [seg_lib.HISTORY + k] * 3
    cand = list(rng.integers(10, 40, 2))
    row += [SEP, *cand, SEP]
    seg += [0, seg_lib.CANDIDATE, seg_lib.CANDIDATE, 0]
    ids.append(np.array(row, np.int32))
    segs.append(np.array(seg, np.int32))
    labels.append(1.0 if planted else 0.0)
    where.append(k_plant)
  return ids, segs, np.array(labels, np.float32), np.array(where)


@functools.lru_cache(maxsize=1)
def planted_model():
  """A tiny model trained until the planted entry decides its rating."""
  model = tiny_model(seed=1)
  rng = np.random.default_rng(0)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  tx = optax.adam(3e-3)
  opt = tx.init(params)

  @jax.jit
  def step(params, opt, batch, label):
    def loss(p):
      out = nnx.merge(graphdef, p, rest)(batch, 0.0, deterministic=True)
      return jnp.mean((out["rating"] - label) ** 2)
    value, grads = jax.value_and_grad(loss)(params)
    updates, opt = tx.update(grads, opt, params)
    return optax.apply_updates(params, updates), opt, value

  for _ in range(300):
    ids, segs, labels, _ = synthetic(64, rng)
    batch = explain.collate_tokens(ids, segs)
    batch = {k: jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids")}
    params, opt, value = step(params, opt, batch, jnp.asarray(labels))
  assert float(value) < 0.02, f"the planted model did not learn its rule (loss {float(value)})"
  return nnx.merge(graphdef, params, rest)


def test_ig_is_complete_on_a_tiny_model():
  model = tiny_model()
  ids, segs, _, _ = synthetic(6, np.random.default_rng(3))
  batch = explain.collate_tokens(ids, segs, buckets=(24,))
  ig = explain.IntegratedGradients(model, steps=16, baseline_id=PAD, keep_ids=(CLS, SEP))
  got = ig(batch)
  delta = got["score"] - got["baseline_score"]
  # f(x) through the inputs_embeds entry equals the model's own forward from token ids.
  np.testing.assert_allclose(got["score"], explain.CrossEncoderExplainer(model).score_fn(batch),
                             atol=1e-6)
  assert np.all(np.abs(delta) > 1e-4)  # the check is not vacuous: the baseline scores differ
  np.testing.assert_allclose(got["attributions"].sum(1), delta, atol=explain.TOLERANCE)
  assert got["complete"].all() and np.all(np.abs(got["gap"]) <= explain.TOLERANCE)
  # Special tokens and padding are kept in the baseline: they get no attribution.
  special = np.isin(batch["input_ids"], (CLS, SEP)) | (batch["attention_mask"] == 0)
  assert np.all(got["attributions"][special] == 0)
  # Too few steps break completeness, and the check says so.
  coarse = explain.IntegratedGradients(model, steps=1, baseline_id=PAD, keep_ids=(CLS, SEP),
                                       tolerance=1e-7)(batch)
  assert not coarse["complete"].all()


def test_unit_sums_add_up_to_the_token_total():
  model = tiny_model()
  ids, segs, _, _ = synthetic(4, np.random.default_rng(4))
  batch = explain.collate_tokens(ids, segs)
  got = explain.CrossEncoderExplainer(model, steps=8, keep_ids=(CLS, SEP), chunk=4).explain(batch)
  total = got["history"].sum(1) + got["candidate"] + got["template"] + got["profile"]
  np.testing.assert_allclose(total, got["tokens"].sum(1), rtol=1e-9, atol=1e-12)
  assert got["history"].shape == (4, 3)


def test_leave_one_out_equals_rerunning_the_model_on_the_edited_example():
  model = tiny_model()
  rng = np.random.default_rng(5)
  ids, segs, _, _ = synthetic(5, rng, entries=3)
  ids2, segs2, _, _ = synthetic(2, rng, entries=1)  # rows of different entry counts
  ids, segs = ids + ids2, segs + segs2
  batch = explain.collate_tokens(ids, segs)
  ex = explain.CrossEncoderExplainer(model, chunk=4)
  loo = explain.leave_one_out(ex.score_fn, batch, chunk=4)
  assert loo["delta"].shape == (7, 3) and np.isnan(loo["delta"][5:, 1:]).all()
  for b in range(7):
    for k in range(seg_lib.num_entries(segs[b])):
      keep = segs[b] != seg_lib.HISTORY + k
      edited = explain.collate_tokens([ids[b][keep]], [segs[b][keep]])  # built without entry k
      direct = ex.score_fn(edited)[0]
      np.testing.assert_allclose(loo["without"][b, k], direct, atol=1e-6)
      np.testing.assert_allclose(loo["delta"][b, k], ex.score_fn(
          explain.collate_tokens([ids[b]], [segs[b]]))[0] - direct, atol=1e-6)


@pytest.mark.parametrize("method", explain.METHODS)
def test_a_planted_history_item_ranks_first(method):
  model = planted_model()
  ids, segs, labels, where = synthetic(40, np.random.default_rng(7), planted_share=1.0)
  batch = explain.collate_tokens(ids, segs)
  got = explain.CrossEncoderExplainer(model, steps=32, keep_ids=(CLS, SEP)).explain(batch, method)
  assert np.all(got["score"] > 0.8)  # the model does use the planted item
  top = np.argmax(got["history"], axis=1)
  assert np.mean(top == where) >= 0.95, (top, where)


def test_bi_encoder_contributions_are_exact_removals():
  from crossrec_jax.explain import bi_encoder as bi_explain
  from crossrec_jax.models import bi_encoder as bi_model
  model = bi_model.BiEncoderRecommender(None, num_items=12, text_dim=8, dim=16, item_hidden=16,
                                        user_hidden=16, rating_hidden=(8,),
                                        discriminator_hidden=(8,), rngs=nnx.Rngs(0))
  model.set_item_text(np.random.default_rng(0).normal(size=(12, 8)).astype(np.float32))
  batch = {"hist_item": np.array([[-1, 2, 3, 4], [5, 6, -1, -1], [7, 8, 9, 10]], np.int32),
           "hist_rating": np.full((3, 4), 0.75, np.float32),
           "hist_mask": np.array([[0, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 1]], np.float32),
           "item": np.array([1, 11, 0], np.int32)}
  ex = bi_explain.BiEncoderExplainer(model, chunk=4)
  got = ex.explain(batch)
  assert got["history"].shape == (3, 4) and np.isnan(got["history"][0, 3])
  for b, k, col in ((0, 0, 3), (0, 2, 1), (1, 0, 1), (2, 3, 0)):  # entry k = k-th from the newest
    edited = {name: v[b:b + 1].copy() for name, v in batch.items()}
    edited["hist_item"][0, col], edited["hist_mask"][0, col] = -1, 0
    u = np.asarray(model.user_vectors({k_: jnp.asarray(v) for k_, v in edited.items()}))
    v = np.asarray(model.item_vectors(jnp.asarray(edited["item"])))
    np.testing.assert_allclose(got["history"][b, k], got["score"][b] - np.sum(u * v), atol=1e-5)
    u_full, _ = ex.vectors({name: v_[b:b + 1] for name, v_ in batch.items()})
    np.testing.assert_allclose(got["user_delta"][b, k], (u_full - u)[0], atol=1e-5)
  assert np.all(got["user_change"][~np.isnan(got["history"])] > 0)


def test_leave_one_out_covers_the_hybrid_id_history_model():
  """The generic edit (entry k's column emptied, as padding) on a model over item IDs."""
  from crossrec_jax.models import hybrid
  rng = np.random.default_rng(0)
  model = hybrid.HybridRatingModel(hybrid.standardise(rng.normal(size=(7, 6))), num_users=(2, 3),
                                   num_items=(3, 4), dim=4, hidden=8, dropout=0.0,
                                   rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  run = jax.jit(lambda s, b: nnx.merge(graphdef, s)(b, 0.0, deterministic=True)["rating"])
  score = lambda b: np.asarray(run(state, {k: jnp.asarray(v) for k, v in b.items()}))
  batch = {"domain": np.array([0, 1, 1]), "user": np.array([1, 0, 2]), "item": np.array([2, 0, 3]),
           "history_item": np.array([[-1, 0, 1], [-1, -1, 2], [1, 2, 3]]),
           "history_rating": np.array([[-1, 1.0, -1], [-1, -1, 0.5], [0.25, -1, 0.75]],
                                      np.float32)}
  loo = explain.leave_one_out(score, batch, chunk=4)
  assert loo["delta"].shape == (3, 3) and np.isnan(loo["delta"][1, 1:]).all()
  for b, k, col in ((0, 0, 2), (0, 1, 1), (1, 0, 2), (2, 0, 2), (2, 2, 0)):
    edited = {name: v[b:b + 1].copy() for name, v in batch.items()}
    edited["history_item"][0, col], edited["history_rating"][0, col] = -1, -1.0
    np.testing.assert_allclose(loo["without"][b, k], score(edited)[0], atol=1e-6)
  assert np.all(np.abs(loo["delta"][~np.isnan(loo["delta"])]) > 0)  # every entry matters
