"""The bi-encoder: towers' shapes and masks, id modes, the shared compiled step (one trace per
phase), DANN through gradient reversal, the trainable item tower, optimiser groups, the builder
(the objective: objectives/bi_encoder.py)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax.data import bi_pipeline as bp
from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import bi_encoder
from crossrec_jax import tasks
from crossrec_jax.objectives import bi_encoder as bi_objective
from crossrec_jax.objectives import losses
from crossrec_jax.train import optim
from crossrec_jax.train import schedules
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib
from crossrec_jax.tasks import bi_encoder as bi_task
from test_bi_pipeline import make_domain

TEXT_DIM = 8


@pytest.fixture(scope="module")
def data():
  src = make_domain("movies-a", [f"film {i}" for i in range(12)], 9, 6, 0)
  tgt = make_domain("movies-b", [f"film {i}" for i in range(6, 16)], 7, 5, 1)
  cat = bp.build_catalogue([src, tgt])
  hist = {"source": bp.domain_history(src, np.arange(len(src.interactions)), cat),
          "target": bp.domain_history(tgt, np.arange(len(tgt.interactions)), cat)}
  table = np.random.default_rng(0).standard_normal((len(cat), TEXT_DIM)).astype(np.float32)
  return cat, hist, table


def _objective(alignment="none", **rank):
  """The bi-encoder's objective (`objectives/bi_encoder.py`) with `RankLoss(**rank)`."""
  return bi_objective.objective(losses.make_alignment(alignment), bi_objective.RankLoss(**rank))


def _model(n_items, table=None, encoder=None, **kw):
  args = dict(num_items=n_items, text_dim=TEXT_DIM, dim=8, item_hidden=16, user_hidden=16,
              user_max_len=4, rating_hidden=(8,), discriminator_hidden=(8,), rating_dropout=0.0,
              discriminator_dropout=0.0, rngs=nnx.Rngs(0))
  args.update(kw)
  model = bi_encoder.BiEncoderRecommender(encoder, **args)
  if table is not None:
    model.set_item_text(table)
  return model


@pytest.mark.parametrize("layers", [0, 1])
def test_user_tower_shapes_and_padding_mask(layers):
  tower = bi_encoder.UserTower(8, max_len=5, num_layers=layers, num_heads=2, hidden=16,
                               use_position=True, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  hist = rng.standard_normal((3, 5, 8)).astype(np.float32)
  rating = rng.random((3, 5)).astype(np.float32)
  mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], np.float32)
  u = tower(jnp.asarray(hist), jnp.asarray(rating), jnp.asarray(mask))
  assert u.shape == (3, 8) and np.isfinite(np.asarray(u)).all()
  noisy = hist.copy()
  noisy[0, 3:] = 100.0  # padding entries of user 0, and everything of the empty user 2
  noisy[2] = -50.0
  u2 = tower(jnp.asarray(noisy), jnp.asarray(rating), jnp.asarray(mask))
  np.testing.assert_allclose(np.asarray(u2), np.asarray(u), atol=1e-5)
  with pytest.raises(ValueError, match="max_len"):
    tower(jnp.zeros((1, 6, 8)), jnp.zeros((1, 6)), jnp.ones((1, 6)))


def test_history_embedding_starts_tied_and_needs_rows():
  tower = bi_encoder.UserTower(4, max_len=3, hidden=8, num_items=6, rngs=nnx.Rngs(0))
  hist, rating, mask = jnp.ones((2, 3, 4)), jnp.zeros((2, 3)), jnp.ones((2, 3))
  rows = jnp.array([[0, 1, 2], [3, 4, 5]])
  before = np.asarray(tower(hist, rating, mask, rows))
  # Zero at init: which rows the entries are does not matter yet (history = candidate vectors).
  np.testing.assert_allclose(np.asarray(tower(hist, rating, mask, rows[::-1])), before, atol=1e-6)
  tower.history_embedding.embedding[...] = jnp.arange(24.0).reshape(6, 4) / 24
  after = np.asarray(tower(hist, rating, mask, rows))
  assert not np.allclose(after[0], after[1]) and not np.allclose(after, before)
  with pytest.raises(ValueError, match="catalogue rows"):
    tower(hist, rating, mask)


def test_item_tower_standardises_and_id_embedding_starts_at_zero(data):
  cat, _, table = data
  plain = _model(len(cat), table)
  with_ids = _model(len(cat), table, item_id_embedding=True)
  np.testing.assert_allclose(np.asarray(plain.item_vectors(None)),
                             np.asarray(with_ids.item_vectors(None)), atol=1e-6)
  assert plain.item_vectors(jnp.array([[0, 1], [2, -1]])).shape == (2, 2, 8)
  np.testing.assert_allclose(np.asarray(plain.item_tower.text_mean[...]), table.mean(0), atol=1e-6)
  with pytest.raises(ValueError, match="catalogue"):
    plain.set_item_text(table[:-1])


def test_domain_ids_and_catalogue_rows_give_the_same_loss(data):
  cat, hist, table = data
  # The table softmax over the domain's items (exclusive positives) is the sampled softmax with
  # every domain item as an explicit candidate, which is what catalogue-row batches carry.
  model = _model(len(cat), table, item_id_embedding=True)
  objective = _objective(exclusive_positives=True, in_batch=False)
  b = next(bp.train_batches(hist["target"], bp.BiBatchConfig(batch_size=4, history_len=4,
                                                              num_positives=5), seed=0))
  w = {"source": 0.0, "target": 1.0, "domain": 0.0}
  local, _ = objective(model, {"target": b}, 0.0, w, deterministic=True)
  rows, _ = objective(model, {"target": bp.to_catalogue_rows(b)}, 0.0, w, deterministic=True)
  np.testing.assert_allclose(float(local), float(rows), rtol=1e-5)
  out = model(b)
  assert out["features"].shape == (4, 24) and out["rating"].shape == (4,)
  assert out["domain_logit"].shape == (4,) and out["score"].shape == (4,)


def _train(model, phase_weights, alignment, batches, steps, **rank):
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  labels = optim.label_params(params, bi_encoder.OPTIMIZER_PREFIXES)
  groups = {g: optim.GroupConfig(lr=3e-3) for g in bi_encoder.OPTIMIZER_PREFIXES}
  opt = optim.make_optimizer(labels, groups)
  state = state_lib.init_train_state(params, opt.tx, state_lib.make_rng(0), rest)
  use = (phase_weights["source"] != 0 or alignment != "none",
         phase_weights["target"] != 0 or alignment != "none")
  fn = step_lib.make_train_step(
      graphdef, rng_state, opt,
      weights={k: schedules.loss_weight_schedule(v) for k, v in phase_weights.items()},
      lam=schedules.dann_lambda(steps), alignment=losses.make_alignment(alignment),
      objective=_objective(alignment, **rank), use_source=use[0], use_target=use[1])
  history = []
  for _ in range(steps):
    src, tgt = next(batches)
    state, m = fn(state, src, tgt)
    history.append(jax.device_get(m))
  return fn, history


def _pairs(hist, cfg, seed=0):
  its = [bp.train_batches(hist[s], cfg, seed=seed, stream=i) for i, s in enumerate(("source", "target"))]
  while True:
    yield next(its[0]), next(its[1])


def test_one_trace_per_phase_and_the_loss_falls(data):
  cat, hist, table = data
  cfg = bp.BiBatchConfig(batch_size=4, history_len=4, num_positives=5)
  fn, history = _train(_model(len(cat), table, item_id_embedding=True),
                       {"source": 1.0, "target": 1.0, "domain": 0.0}, "none",
                       _pairs(hist, cfg), 12, rating_weight=0.5)
  assert fn.num_traces == 1
  first = np.mean([m["loss"] for m in history[:3]])
  last = np.mean([m["loss"] for m in history[-3:]])
  assert last < first
  assert {"rank_loss_source", "rank_loss_target", "rating_loss_target", "rmse_target"} <= set(history[-1])


def test_dann_step_and_gradient_reversal(data):
  cat, hist, table = data
  cfg = bp.BiBatchConfig(batch_size=4, history_len=4, num_positives=5)
  fn, history = _train(_model(len(cat), table), {"source": 1.0, "target": 0.0, "domain": 0.1},
                       "dann", _pairs(hist, cfg), 3)
  assert fn.num_traces == 1 and "domain_acc" in history[-1] and "loss_domain" in history[-1]
  # The domain loss's gradient on the user tower flips sign with reversal (lam = 1).
  src, tgt = next(_pairs(hist, cfg))
  grads = []
  for reverse in (True, False):
    model = _model(len(cat), table, reverse_gradient=reverse)
    graphdef, params, rng_state, rest = state_lib.split_model(model)

    def loss(p):
      m = nnx.merge(graphdef, p, rng_state, rest)
      return _objective("dann")(m, {"source": src, "target": tgt}, 1.0,
                                {"source": 0.0, "target": 0.0, "domain": 1.0},
                                deterministic=True)[0]

    g = jax.jit(jax.grad(loss))(params)
    grads.append(np.asarray(g["user_tower"]["mlp_out"]["kernel"][...]))
  assert np.abs(grads[0]).max() > 0
  np.testing.assert_allclose(grads[0], -grads[1], rtol=1e-5, atol=1e-8)


def test_trainable_item_tower_encodes_the_batch_items(data):
  cat, hist, table = data
  cfg = bert_lib.BertConfig(vocab_size=40, hidden_size=TEXT_DIM, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=16, max_position_embeddings=8,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
  model = _model(len(cat), table, encoder=bert_lib.BertModel(cfg, rngs=nnx.Rngs(1)))
  rng = np.random.default_rng(0)
  ids = rng.integers(1, 40, (len(cat), 8)).astype(np.int32)
  mask = np.ones_like(ids)
  batch = next(bp.train_batches(hist["target"], bp.BiBatchConfig(
      batch_size=4, history_len=4, mode="interaction", negatives="uniform", num_negatives=3), seed=0))
  batch = bp.with_item_tokens(batch, ids, mask)
  graphdef, params, rng_state, rest = state_lib.split_model(model)

  def loss(p):
    m = nnx.merge(graphdef, p, rng_state, rest)
    return _objective()(m, {"target": batch}, 0.0, {"source": 0.0, "target": 1.0, "domain": 0.0},
                        deterministic=True)[0]

  g = jax.jit(jax.grad(loss))(params)
  assert np.abs(np.asarray(g["encoder"]["pooler"]["kernel"][...])).max() == 0  # mean pooling
  assert np.abs(np.asarray(g["encoder"]["embeddings"]["word_embeddings"]["embedding"][...])).max() > 0
  cached = _model(len(cat), table)
  with pytest.raises(ValueError, match="without an encoder"):
    _objective()(cached, {"target": batch}, 0.0, {"source": 0.0, "target": 1.0, "domain": 0.0})


def test_builder_and_the_task_registry():
  cfg = config_base.base_config("tiny").model
  cfg.kind = "bi_encoder"
  cfg.pooling = "mean"
  cfg.bi_encoder = ml_collections.ConfigDict(dict(
      num_items=5, text_dim=64, cached_only=True, dim=8, score="cosine", temperature=0.1,
      item_hidden=8, item_dropout=0.0, item_id_embedding=True, history_len=3, user_layers=1,
      user_heads=2, user_hidden=8, user_dropout=0.1, use_rating=True, use_position=True,
      rating_weight=0.0, loss="bpr", in_batch=False, exclusive_positives=True))
  assert tasks.TASKS["bi_encoder"] is bi_task.BiEncoderTask  # what model.kind='bi_encoder' runs
  model = bi_encoder.build_bi_encoder(cfg, rngs=nnx.Rngs(0))
  rank = bi_objective.RankLoss.from_config(cfg.bi_encoder)
  assert (rank.loss, rank.temperature, rank.in_batch) == ("bpr", 0.1, False)
  assert isinstance(model, bi_encoder.BiEncoderRecommender) and model.encoder is None
  model.set_item_text(np.random.default_rng(0).standard_normal((5, 64)).astype(np.float32))
  v = model.item_vectors(None)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(v), axis=-1), 1.0, rtol=1e-5)  # cosine
  labels = optim.label_params(nnx.state(model, nnx.Param), bi_encoder.OPTIMIZER_PREFIXES)
  assert set(jax.tree.leaves(labels)) == {"item_tower", "user_tower", "rating_head",
                                          "discriminator"}
  cfg.bi_encoder.score = "l2"
  with pytest.raises(ValueError, match="bi_encoder.score"):
    bi_encoder.build_bi_encoder(cfg, rngs=nnx.Rngs(0))
  cfg.bi_encoder.loss = "hinge"
  with pytest.raises(ValueError, match="bi_encoder.loss"):
    bi_objective.RankLoss.from_config(cfg.bi_encoder)
  cfg.bi_encoder.update(dict(loss="bpr", temperature=0.0))
  with pytest.raises(ValueError, match="bi_encoder.temperature"):
    bi_objective.RankLoss.from_config(cfg.bi_encoder)
