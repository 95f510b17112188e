"""The bi-encoder's hybrid text + ID terms (models/bi_ids.py): ID dropout, user-id embeddings, the
linear item-item path, the text-only configuration, and a tiny hybrid run through the task."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax import config_checks
from crossrec_jax import configs
from crossrec_jax import tasks
from crossrec_jax.data import bi_pipeline as bp
from crossrec_jax.data import bi_prepare
from crossrec_jax.models import bi_encoder
from crossrec_jax.models import bi_ids
from crossrec_jax.objectives import retrieval
from crossrec_jax.train import step as step_lib
from crossrec_jax.train import trainer
from test_bi_encoder import TEXT_DIM, _objective, data  # noqa: F401  (the module fixture)

ID_PARAMS = ("id_embedding", "history_embedding", "user_embedding", "item_item")


def _hybrid(n_items, table, *, num_users=9, id_dropout=0.0, item_item_rows=None, seed=0):
  model = bi_encoder.BiEncoderRecommender(
      None, num_items=n_items, text_dim=TEXT_DIM, dim=8, item_hidden=16, user_hidden=16,
      user_max_len=4, rating_hidden=(8,), discriminator_hidden=(8,), rating_dropout=0.0,
      discriminator_dropout=0.0, item_id_embedding=True, history_id_embedding=True,
      num_users=num_users, id_dropout=id_dropout, item_item_rows=item_item_rows,
      rngs=nnx.Rngs(seed))
  model.set_item_text(table)
  return model


def _randomise_ids(model, seed=1):
  """ID embeddings away from their zero init (as after training), so dropping them shows."""
  rng = np.random.default_rng(seed)
  for emb in (model.item_tower.id_embedding, model.user_tower.history_embedding,
              model.user_tower.user_embedding):
    emb.embedding[...] = jnp.asarray(rng.standard_normal(emb.embedding.shape), jnp.float32)
  if model.item_item is not None:
    w = model.item_item.weight
    w[...] = jnp.asarray(rng.standard_normal(w.shape), jnp.float32)


def _zero_ids(model):
  for emb in (model.item_tower.id_embedding, model.user_tower.history_embedding,
              model.user_tower.user_embedding):
    emb.embedding[...] = jnp.zeros_like(emb.embedding[...])


def _batch(hist, seed=0):
  cfg = bp.BiBatchConfig(batch_size=4, history_len=4, num_positives=3, keep=0.5)
  batch = next(bp.train_batches(hist["target"], cfg, seed=seed))
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _sides(model, batch, deterministic):
  o = model.side(batch, deterministic=deterministic)
  return np.asarray(o["user"]), np.asarray(o["table"])


def test_id_dropout_one_at_train_time_is_the_text_only_path_and_eval_never_drops(data):
  cat, hist, table = data
  batch = _batch(hist)
  assert (np.asarray(batch["user_row"]) >= 0).any()
  dropped = _hybrid(len(cat), table, id_dropout=1.0)
  _randomise_ids(dropped)
  text_only = nnx.clone(dropped)  # the same text-path parameters, ID embeddings at zero
  _zero_ids(text_only)
  u_train, t_train = _sides(dropped, batch, deterministic=False)
  u_text, t_text = _sides(text_only, batch, deterministic=True)
  np.testing.assert_allclose(u_train, u_text, atol=1e-6)
  np.testing.assert_allclose(t_train, t_text, atol=1e-6)
  # Evaluation keeps every ID term, whatever p: the same as the model without ID dropout.
  kept = nnx.clone(dropped)
  for tower in (kept.item_tower, kept.user_tower):
    tower.id_drop.rate = 0.0
  u_eval, t_eval = _sides(dropped, batch, deterministic=True)
  u_kept, t_kept = _sides(kept, batch, deterministic=False)  # no dropout of any kind is set
  np.testing.assert_allclose(u_eval, u_kept, atol=1e-6)
  np.testing.assert_allclose(t_eval, t_kept, atol=1e-6)
  assert np.abs(u_eval - u_text).max() > 1e-2 and np.abs(t_eval - t_text).max() > 1e-2


def test_id_dropout_drops_whole_embeddings_at_rate_p_without_rescaling():
  drop = bi_ids.IdDropout(0.3, rngs=nnx.Rngs(0))
  x = jnp.ones((4000, 6))
  y = np.asarray(drop(x, deterministic=False))
  rows = np.unique(y, axis=0)
  assert {tuple(r) for r in rows} == {(0.0,) * 6, (1.0,) * 6}  # a whole row or nothing, no 1/(1-p)
  assert abs((y[:, 0] == 0).mean() - 0.3) < 0.03
  np.testing.assert_array_equal(np.asarray(drop(x, deterministic=True)), np.asarray(x))
  with pytest.raises(ValueError, match="id_dropout must be in"):
    bi_ids.IdDropout(1.5, rngs=nnx.Rngs(0))


def test_item_item_path_scores_the_history_mean_with_a_zero_diagonal():
  rows = np.array([5, 2, 7])  # catalogue rows covered: local 0, 1, 2
  path = bi_ids.ItemItem(rows, 9, rngs=nnx.Rngs(0))
  w = np.arange(9, dtype=np.float32).reshape(3, 3) + 1.0
  path.weight[...] = jnp.asarray(w)
  hist = jnp.asarray([[5, 2, 3, -1], [7, -1, -1, -1]])  # row 3 is not covered
  mask = jnp.asarray([[1, 1, 1, 0], [1, 0, 0, 0]], jnp.float32)
  cand = jnp.asarray([5, 2, 7, 3])
  got = np.asarray(path(hist, mask, cand))
  w0 = w * (1 - np.eye(3))
  want = np.stack([np.r_[(w0[0] + w0[1]) / 3, 0.0], np.r_[w0[2], 0.0]])
  np.testing.assert_allclose(got, want, rtol=1e-6)
  assert got[1, 2] == 0.0  # an item never predicts itself
  scaled = bi_ids.ItemItem(rows, 9, scale=30.0, rngs=nnx.Rngs(0))
  scaled.weight[...] = jnp.asarray(w)
  np.testing.assert_allclose(np.asarray(scaled(hist, mask, cand)), 30.0 * want, rtol=1e-6)
  with pytest.raises(ValueError, match="distinct catalogue rows"):
    bi_ids.ItemItem(np.array([1, 1]), 9, rngs=nnx.Rngs(0))


def test_item_item_logits_join_the_softmax_and_the_ranking_vectors(data):
  cat, hist, table = data
  batch = _batch(hist)
  rows = hist["target"].catalogue_rows
  model = _hybrid(len(cat), table, item_item_rows=rows)
  _randomise_ids(model)
  o = model.side(batch, deterministic=True)
  assert o["item_logits"].shape == (4, len(rows))
  # The loss sees towers + item-item: different from the towers alone.
  pos = jnp.asarray(batch["pos_item"])
  both = retrieval.table_softmax_loss(o["user"], o["table"], pos, exclusive=False,
                                      extra_logits=o["item_logits"])
  towers = retrieval.table_softmax_loss(o["user"], o["table"], pos, exclusive=False)
  assert abs(float(both) - float(towers)) > 1e-3
  # Evaluation: one dot product of the ranking vectors is the towers' score + the path's.
  eval_batch = {k: batch[k] for k in ("hist_item", "hist_rating", "hist_mask", "item_rows",
                                      "user_row")}
  items = model.ranking_items(jnp.asarray(rows))
  users = model.ranking_users(eval_batch, items)
  want = o["user"] @ o["table"].T + o["item_logits"]
  np.testing.assert_allclose(np.asarray(users @ items.T), np.asarray(want), rtol=1e-4, atol=1e-4)


def test_text_only_config_has_no_id_params_and_the_hybrid_has_them():
  def params(**bi):
    config = configs.load("bi_joint:tiny")
    config.model.bi_encoder.update(dict(num_items=20, cached_only=True, **bi))
    config_checks.check_config(config)
    model = bi_encoder.build_bi_encoder(config.model, rngs=nnx.Rngs(0), num_users=11,
                                        item_item_rows=np.arange(5, 15))
    return {"/".join(map(str, p)): v.shape for p, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}

  text = params(item_id_embedding=False)
  assert not [p for p in text if any(k in p for k in ID_PARAMS)], sorted(text)
  hybrid = params(item_id_embedding=True, history_id_embedding=True, user_id_embedding=True,
                  id_dropout=0.5, item_item=True)
  assert hybrid["item_tower/id_embedding/embedding"] == (20, 16)
  assert hybrid["user_tower/user_embedding/embedding"] == (11, 16)
  assert hybrid["user_tower/item_item/weight"] == (10, 10)
  assert len(hybrid) == len(text) + 4


def test_id_dropout_range_rule():
  config = configs.load("bi_joint:tiny")
  config.model.bi_encoder.id_dropout = 1.0  # allowed: always text only at train time
  config_checks.check_config(config)
  config.model.bi_encoder.id_dropout = 1.5
  with pytest.raises(ValueError, match="model.bi_encoder.id_dropout"):
    config_checks.check_config(config)


@pytest.mark.slow
def test_tiny_hybrid_run_trains_through_the_task(tmp_path):
  config = configs.load("bi_joint:tiny")
  config.data.bi.item_cache_dir = str(tmp_path / "items")
  config.train.tensorboard = False
  config.model.bi_encoder.update(dict(history_id_embedding=True, user_id_embedding=True,
                                      id_dropout=0.2, item_item=True))
  data = bi_prepare.BiPreparedData(config)
  task = tasks.make_task(config, data=data)
  final = trainer.train_and_evaluate(config, tmp_path / "run", task=task)
  assert final["global_step"] == sum(p.steps for p in config.phases)
  for split in ("target_valid", "target_test"):
    assert 0.0 < final[split]["Recall@10"] and 0.0 <= final[split]["NDCG@10"] <= 1.0
  lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert any(np.isfinite(l["loss"]) for l in lines if "loss" in l), "no training loss logged"
  assert data.num_users == data.user_offset["target"] + 943  # ML-100K's users follow ML-1M's


def test_the_objective_trains_every_id_term(data):
  """Gradients of the phase objective reach the user table and the item-item weights (both
  start at zero, so without a gradient they would stay inert)."""
  cat, hist, table = data
  batch = _batch(hist)
  model = _hybrid(len(cat), table, item_item_rows=hist["target"].catalogue_rows, id_dropout=0.3)
  graphdef, params, rng_state, rest = nnx.split(model, nnx.Param, nnx.RngState, ...)
  fn = _objective(exclusive_positives=False)
  weights = {"source": jnp.float32(0.0), "target": jnp.float32(1.0), "domain": jnp.float32(0.0)}

  def loss(p):  # as the train step: fresh rng streams inside the trace
    m = nnx.merge(graphdef, p, step_lib.reseed_streams(rng_state, jax.random.key(0)), rest)
    return fn(m, {"target": batch}, 0.0, weights, deterministic=False)[0]

  grads = nnx.to_flat_state(jax.grad(loss)(params))
  norm = {"/".join(map(str, k)): float(jnp.abs(v[...]).max()) for k, v in grads}
  for name in ("user_tower/user_embedding/embedding", "user_tower/item_item/weight",
               "item_tower/id_embedding/embedding", "user_tower/history_embedding/embedding"):
    assert norm[name] > 0.0, name
