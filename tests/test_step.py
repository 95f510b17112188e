"""Tests for train/step.py: one trace per phase, the loss formula, masks, alignment, DANN."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from crossrec_jax.models import bert
from crossrec_jax.models import heads
from crossrec_jax.models import recommender
from crossrec_jax.objectives import cross_encoder as ce_objective
from crossrec_jax.objectives import losses
from crossrec_jax.tasks import cross_encoder as ce_task
from crossrec_jax.train import optim
from crossrec_jax.train import schedules
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib

GROUPS = ("encoder", "rating_head", "discriminator")


def tiny_model(dropout=0.0, seed=0, reverse=True, output="regression"):
  cfg = bert.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
  rngs = nnx.Rngs(seed)
  return recommender.CrossEncoderRecommender(
      bert.BertModel(cfg, rngs=rngs), pooling="mean", rating_hidden=(8,), rating_output=output,
      rating_dropout=dropout, discriminator_hidden=(8,), discriminator_dropout=dropout,
      reverse_gradient=reverse, rngs=rngs)


def make_batch(rng, b=4, length=8, labelled=True):
  ids = rng.integers(1, 50, (b, length)).astype(np.int32)
  mask = np.ones((b, length), np.int32)
  mask[0, length // 2:] = 0  # one padded row
  return {"input_ids": ids * mask, "attention_mask": mask,
          "token_type_ids": np.zeros((b, length), np.int32),
          "label": rng.random(b).astype(np.float32),
          "label_mask": np.full(b, 1.0 if labelled else 0.0, np.float32),
          "valid": np.ones(b, np.float32)}


def build(model, *, weights, alignment="dann", lam=None, lr=1e-3, **kw):
  parts = state_lib.split_model(model)
  opt = optim.make_optimizer(optim.label_params(parts.params),
                             {g: {"lr": lr, "weight_decay": 0.0} for g in GROUPS})
  state = state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(0), parts.rest)
  fn = step_lib.make_train_step(
      parts.graphdef, parts.rng_state, opt,
      weights={k: schedules.loss_weight_schedule(v) for k, v in weights.items()},
      lam=lam or schedules.dann_lambda(10), alignment=losses.make_alignment(alignment),
      objective=ce_objective.objective(losses.make_alignment(alignment), model.rating_output),
      **kw)
  return parts, opt, state, fn


def test_phase_traces_once_while_lambda_and_weights_change():
  model = tiny_model(dropout=0.1)
  weights = {"source": 1.0, "target": {"kind": "linear", "init_value": 0.0, "end_value": 1.0,
                                       "transition_steps": 6},
             "domain": {"kind": "dann", "total_steps": 6}}
  _, _, state, fn = build(model, weights=weights, lam=schedules.dann_lambda(6))
  rng = np.random.default_rng(0)
  seen = []
  for _ in range(6):
    state, m = fn(state, make_batch(rng), make_batch(rng))
    seen.append((float(m["lambda"]), float(m["w_target"]), float(m["w_domain"])))
  assert fn.num_traces == 1
  lams, w_t, w_d = zip(*seen)
  assert lams[0] == 0.0 and len(set(lams)) == 6 and list(lams) == sorted(lams)
  np.testing.assert_allclose(w_t, np.arange(6) / 6, rtol=1e-6)
  assert len(set(w_d)) == 6
  assert int(state.step) == 6 and int(state.opt_step) == 6
  # A new bucket length is a new shape: exactly one more trace.
  state, _ = fn(state, make_batch(rng, length=12), make_batch(rng, length=12))
  assert fn.num_traces == 2


def test_loss_is_the_weighted_sum_of_its_parts():
  model = tiny_model(dropout=0.0)
  rng = np.random.default_rng(1)
  src, tgt = make_batch(rng), make_batch(rng)
  tgt["label_mask"][:2] = 0.0  # unlabelled target rows: no rating loss, still domain loss
  out_s = model(src, 0.0)
  out_t = model(tgt, 0.0)
  l_s = losses.masked_mse(out_s["rating"], src["label"])
  l_t = losses.masked_mse(out_t["rating"], tgt["label"], tgt["label_mask"])
  l_d = losses.domain_bce(jnp.concatenate([out_s["domain_logit"], out_t["domain_logit"]]),
                          jnp.concatenate([jnp.zeros(4), jnp.ones(4)]))
  _, _, state, fn = build(model, weights={"source": 0.7, "target": 0.2, "domain": 0.5})
  _, m = fn(state, src, tgt)
  np.testing.assert_allclose(m["loss_source"], l_s, rtol=1e-5)
  np.testing.assert_allclose(m["loss_target"], l_t, rtol=1e-5)
  np.testing.assert_allclose(m["loss_domain"], l_d, rtol=1e-5)
  np.testing.assert_allclose(m["loss"], 0.7 * l_s + 0.2 * l_t + 0.5 * l_d, rtol=1e-5)
  assert float(m["n_labelled_target"]) == 2.0
  np.testing.assert_allclose(m["rmse_source"], np.sqrt(l_s), rtol=1e-5)


def test_unlabelled_target_still_trains_the_discriminator():
  model = tiny_model()
  rng = np.random.default_rng(2)
  src, tgt = make_batch(rng), make_batch(rng, labelled=False)
  parts, _, state, fn = build(model, weights={"source": 0.0, "target": 1.0, "domain": 1.0},
                              lam=optax.constant_schedule(1.0))  # the DANN ramp starts at 0
  before = jax.tree.map(np.asarray, parts.params)
  new, m = fn(state, src, tgt)
  assert float(m["loss_target"]) == 0.0 and float(m["n_labelled_target"]) == 0.0
  assert float(m["loss_domain"]) > 0.0
  after = jax.tree.map(np.asarray, new.params)
  moved = lambda group: any(not np.array_equal(a, b) for a, b in zip(
      jax.tree.leaves(before[group]), jax.tree.leaves(after[group])))
  assert moved("discriminator") and moved("encoder")
  # No labelled row anywhere: the rating head gets a zero gradient; no weight decay: unchanged.
  assert not moved("rating_head")


def test_unused_side_is_not_encoded():
  model = tiny_model()
  rng = np.random.default_rng(3)
  src = make_batch(rng)
  bad = dict(src, input_ids=np.full_like(src["input_ids"], 10 ** 6))  # would gather garbage
  _, _, state, fn = build(model, weights={"source": 1.0, "target": 0.0, "domain": 0.0},
                          alignment="none", use_target=False, donate=False)
  _, m1 = fn(state, src, src)
  _, m2 = fn(state, src, bad)
  assert "loss_target" not in m1 and "loss_domain" not in m1
  np.testing.assert_array_equal(m1["loss"], m2["loss"])
  with pytest.raises(ValueError, match="needs both"):
    build(model, weights={"source": 1.0, "target": 0.0, "domain": 1.0}, alignment="mmd",
          use_target=False)


@pytest.mark.parametrize("kind", ["mmd", "coral"])
def test_feature_penalties_use_pooled_features(kind):
  model = tiny_model()
  rng = np.random.default_rng(4)
  src, tgt = make_batch(rng), make_batch(rng)
  expected = losses.make_alignment(kind).penalty(model.encode(src), model.encode(tgt),
                                                  src["valid"], tgt["valid"])
  _, _, state, fn = build(model, weights={"source": 1.0, "target": 1.0, "domain": 1.0},
                          alignment=kind)
  _, m = fn(state, src, tgt)
  np.testing.assert_allclose(m["loss_domain"], expected, rtol=1e-4, atol=1e-7)
  assert "domain_acc" not in m and "lambda" not in m


def test_dropout_depends_only_on_rng_and_step():
  model = tiny_model(dropout=0.3)
  rng = np.random.default_rng(5)
  src, tgt = make_batch(rng), make_batch(rng)
  _, _, state, fn = build(model, weights={"source": 1.0, "target": 1.0, "domain": 0.1},
                          donate=False)
  _, a = fn(state, src, tgt)
  _, b = fn(state, src, tgt)
  _, c = fn(state.replace(rng=state_lib.make_rng(1)), src, tgt)
  _, d = fn(state.replace(step=state.step + 1), src, tgt)
  assert float(a["loss"]) == float(b["loss"])
  assert float(a["loss"]) != float(c["loss"]) and float(a["loss"]) != float(d["loss"])


def test_metrics_cover_norms_and_learning_rates():
  model = tiny_model()
  rng = np.random.default_rng(6)
  parts, _, state, fn = build(model, weights={"source": 1.0, "target": 1.0, "domain": 0.1},
                              lr=3e-4, donate=False)
  new, m = fn(state, make_batch(rng), make_batch(rng))
  for g in GROUPS:
    np.testing.assert_allclose(m[f"lr_{g}"], 3e-4, rtol=1e-6)
  np.testing.assert_allclose(m["param_norm"], optax.tree.norm(new.params), rtol=1e-5)
  assert float(m["grad_norm"]) > 0 and 0.0 <= float(m["domain_acc"]) <= 1.0


def test_eval_step_predicts_in_unit_interval_and_matches_model():
  for output in ("regression", "logit"):
    model = tiny_model(output=output)
    parts = state_lib.split_model(model)
    ev = ce_task.make_eval_step(parts.graphdef, parts.rng_state, parts.rest,
                                rating_output=output)
    batch = make_batch(np.random.default_rng(7))
    out = ev(parts.params, batch)
    expected = model(batch)["rating"]
    if output == "logit":
      expected = jax.nn.sigmoid(expected)
    np.testing.assert_allclose(out["rating"], expected, rtol=1e-5)
    assert out["features"].shape == (4, 16) and ((out["rating"] >= 0) & (out["rating"] <= 1)).all()
    ev(parts.params, make_batch(np.random.default_rng(8)))
    assert ev.compiled.num_traces == 1


def test_concat_batches_pads_to_the_longest():
  rng = np.random.default_rng(9)
  a, b = make_batch(rng, b=2, length=4), make_batch(rng, b=3, length=6)
  joint = ce_objective.concat_batches([a, b])
  assert joint["input_ids"].shape == (5, 6) and joint["label"].shape == (5,)
  np.testing.assert_array_equal(joint["attention_mask"][:2, 4:], 0)
  np.testing.assert_array_equal(joint["input_ids"][2:], b["input_ids"])


# ---------------------------------------------------------------------------- DANN on a toy pair

class ToyRecommender(nnx.Module):
  """Same interface as the real recommender: a linear+tanh encoder over 4-d inputs."""

  def __init__(self, reverse: bool, rngs: nnx.Rngs):
    self.encoder = nnx.Linear(4, 8, rngs=rngs)
    self.rating_head = heads.RatingHead(8, (), output="regression", rngs=rngs)
    self.discriminator = heads.DomainDiscriminator(8, (16,), reverse=reverse, rngs=rngs)

  def __call__(self, batch, lam, *, deterministic=True):
    h = jnp.tanh(self.encoder(batch["x"]))
    return {"features": h, "rating": self.rating_head(h, deterministic=deterministic),
            "domain_logit": self.discriminator(h, lam, deterministic=deterministic)}


def blobs(rng, shift, n=64):
  """Two Gaussian blobs separated along x0 (Bayes accuracy ~0.98); the rating depends on x1."""
  x = rng.normal(size=(n, 4)).astype(np.float32)
  x[:, 0] += shift
  return {"x": x, "label": (1 / (1 + np.exp(-x[:, 1]))).astype(np.float32),
          "label_mask": np.ones(n, np.float32), "valid": np.ones(n, np.float32)}


def run_toy_dann(reverse: bool, steps: int = 600, seed: int = 0) -> np.ndarray:
  model = ToyRecommender(reverse, nnx.Rngs(seed))
  parts = state_lib.split_model(model)
  # Decoupled weight decay on the encoder settles the adversarial game (without it Adam keeps
  # the encoder and discriminator oscillating around the equilibrium).
  groups = {"encoder": {"lr": 1e-2, "weight_decay": 1.0},
            "rating_head": {"lr": 1e-2, "weight_decay": 0.0},
            "discriminator": {"lr": 1e-2, "weight_decay": 0.0}}
  opt = optim.make_optimizer(optim.label_params(parts.params), groups)
  state = state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(seed), parts.rest)
  fn = step_lib.make_train_step(
      parts.graphdef, parts.rng_state, opt,
      weights={"source": optax.constant_schedule(1.0), "target": optax.constant_schedule(0.0),
               "domain": optax.constant_schedule(1.0)},
      lam=schedules.dann_lambda(steps), alignment=losses.make_alignment("dann"),
      objective=ce_objective.objective(losses.make_alignment("dann"), "regression"))
  rng = np.random.default_rng(seed)
  accs = []
  for _ in range(steps):
    state, m = fn(state, blobs(rng, 2.0), blobs(rng, -2.0))
    accs.append(float(m["domain_acc"]))
  assert fn.num_traces == 1
  return np.asarray(accs)


def test_discriminator_accuracy_rises_without_grl_and_falls_to_chance_with_it():
  plain = run_toy_dann(reverse=False)
  dann = run_toy_dann(reverse=True)
  # Without reversal the encoder helps the discriminator: accuracy climbs to the Bayes rate.
  assert plain[-100:].mean() > 0.95 and plain[-100:].mean() > plain[:100].mean()
  # With reversal the encoder removes the domain direction: accuracy falls towards 0.5.
  assert dann[-100:].mean() < 0.6 and dann[-100:].mean() < dann[:100].mean()


# ---------------------------------------------------------------------------- accumulation

def _sgd_step(model, accum, **kw):
  parts = state_lib.split_model(model)
  opt = optim.Optimizer(optax.sgd(1.0), {})  # update = -grads: compares the gradients
  state = state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(0), parts.rest)
  alignment = losses.make_alignment("dann")
  fn = step_lib.make_train_step(
      parts.graphdef, parts.rng_state, opt,
      weights={k: schedules.loss_weight_schedule(v)
               for k, v in {"source": 1.0, "target": 0.5, "domain": 0.3}.items()},
      lam=schedules.dann_lambda(10), alignment=alignment,
      objective=ce_objective.objective(alignment, model.rating_output), donate=False,
      grad_accum_steps=accum, **kw)
  return state, fn


def test_accumulated_micro_batches_equal_one_big_batch_step():
  rng = np.random.default_rng(11)
  src, tgt = make_batch(rng, b=8), make_batch(rng, b=8)
  results = {}
  for accum in (1, 2, 4):  # k micro-batches of 8 / k rows (each as many labelled rows)
    state, fn = _sgd_step(tiny_model(), accum)
    for _ in range(2):
      state, m = fn(state, src, tgt)
    results[accum] = (jax.device_get(state.params), float(m["loss"]), float(m["grad_norm"]))
    assert fn.num_traces == 1
  ref_params, ref_loss, ref_norm = results[1]
  for accum in (2, 4):
    params, loss, norm = results[accum]
    assert loss == pytest.approx(ref_loss, rel=1e-5) and norm == pytest.approx(ref_norm, rel=1e-4)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)):
      np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # The updates are real: the parameters moved.
  start = jax.tree.leaves(state_lib.split_model(tiny_model()).params)
  assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(ref_params), start))


def test_accumulation_needs_per_row_batches():
  rng = np.random.default_rng(12)
  src, tgt = make_batch(rng), make_batch(rng)
  state, fn = _sgd_step(tiny_model(), 2)
  with pytest.raises(ValueError, match="grad_accum_steps=2 splits every array"):
    fn(state, {**src, "item_rows": np.arange(3, dtype=np.int32)}, tgt)
  with pytest.raises(ValueError, match="grad_accum_steps must be a positive int"):
    _sgd_step(tiny_model(), 0)
  with pytest.raises(ValueError, match="does not split"):
    _sgd_step(tiny_model(), 3)[1](state, src, tgt)
