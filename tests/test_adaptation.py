"""Does adaptation adapt at the demo's settings? (issue 13, item 3)

The demo (`transfer_study:cpu`) trains a 1-layer cut of the packaged MiniLM for 60 steps per
phase. These tests build that exact model and phase from the study's run config and check the
three links DANN needs: (a) the discriminator learns to tell a fixed source/target pair apart
when the encoder is frozen; (b) the reversed gradient of the domain loss reaches the encoder;
(c) the lambda ramp and the phase's domain weight are not inert.

Measured (why (a) failed before the fix): with [CLS] pooling the first layers of MiniLM give a
nearly constant vector (per-dimension std 6e-4 across ML examples against a norm of 8; 0.2 at all
6 layers), so the discriminator (and the rating head) read no signal in 60 steps: domain_acc
stayed at 0.49-0.54 for the whole demo phase. Mean pooling, MiniLM's own recipe, gives a 100x
larger spread.
"""

import math
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax.data import tokenize as tokenize_lib
from crossrec_jax.models import recommender
from crossrec_jax.objectives import cross_encoder as ce_objective
from crossrec_jax.objectives import losses
from crossrec_jax.study import grid
from crossrec_jax.train import optim
from crossrec_jax.train import phases as phases_lib
from crossrec_jax.train import schedules
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib

# Two fixed domains written as the default template writes examples (history, then candidate).
MOVIES = [
    "history: Toy Story (1995), Animation|Comedy, rated 5. candidate: Heat (1995), Action|Crime",
    "history: Casino (1995), Crime|Drama, rated 4. candidate: Babe (1995), Children's|Comedy",
    "history: Fargo (1996), Crime|Thriller, rated 5. candidate: Alien (1979), Horror|Sci-Fi",
    "history: Jumanji (1995), Adventure|Fantasy, rated 3. candidate: Clueless (1995), Comedy",
    "history: Braveheart (1995), Action|War, rated 4. candidate: Apollo 13 (1995), Drama",
    "history: Get Shorty (1995), Comedy|Crime, rated 2. candidate: Copycat (1995), Thriller",
    "history: Twister (1996), Action|Disaster, rated 3. candidate: Sabrina (1995), Romance",
    "history: Ransom (1996), Drama|Thriller, rated 4. candidate: Nixon (1995), Drama",
]
BOOKS = [
    "history: Clara Callan by Richard Bruce Wright, HarperFlamingo Canada, rated 8. candidate: "
    "Decision in Normandy by Carlo D'Este",
    "history: Flu by Gina Bari Kolata, Farrar Straus Giroux, rated 6. candidate: The Mummies of "
    "Urumchi by E. J. W. Barber",
    "history: Classical Mythology by Mark P. O. Morford, Oxford University Press, rated 9. "
    "candidate: The Kitchen God's Wife by Amy Tan",
    "history: Where You'll Find Me by Ann Beattie, Scribner, rated 5. candidate: Nights Below "
    "Station Street by David Adams Richards",
    "history: Hitler's Secret Bankers by Adam Lebor, Citadel Press, rated 7. candidate: The Middle "
    "Stories by Sheila Heti",
    "history: Jane Doe by R. J. Kaiser, Mira Books, rated 10. candidate: A Second Chicken Soup "
    "for the Woman's Soul by Jack Canfield",
    "history: The Witchfinder by Loren D. Estleman, Mysterious Press, rated 4. candidate: More "
    "Cunning Than Man by Robert Hendrickson",
    "history: Goodbye to the Buttermilk Sky by Julia Oliver, River City Pub, rated 6. candidate: "
    "Tell Me This Isn't Happening by Robynn Clairday",
]


@pytest.fixture(scope="module")
def demo_dann_config(tmp_path_factory):
  """The trainer config the demo runs for 'dann' (study overrides applied)."""
  from crossrec_jax.eval import study as study_api  # pylint: disable=g-import-not-at-top
  study = study_api.load_experiment("transfer_study", "cpu")
  return grid.run_config(study, "dann", 0.0, 0, pathlib.Path(tmp_path_factory.mktemp("run")))


@pytest.fixture(scope="module")
def pair(demo_dann_config):
  """A fixed (source, target) pair of batches, tokenised like the pipeline ([CLS] .. [SEP])."""
  tok = tokenize_lib.load_tokenizer()
  cls, sep = tokenize_lib.special_ids(tok)
  length = int(demo_dann_config.data.max_len)

  def batch(texts):
    ids = np.zeros((len(texts), length), np.int32)
    for i, row in enumerate(tokenize_lib.encode_batch(tok, texts)):
      row = np.concatenate([[cls], row[:length - 2], [sep]])
      ids[i, :len(row)] = row
    n = len(texts)
    return {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int32),
            "token_type_ids": np.zeros_like(ids), "label": np.full(n, 0.5, np.float32),
            "label_mask": np.ones(n, np.float32), "valid": np.ones(n, np.float32)}

  return batch(MOVIES), batch(BOOKS)


def _model(config, reverse=True):
  cfg = config.model.copy_and_resolve_references()
  cfg.discriminator.reverse_gradient = reverse
  return recommender.build_recommender(cfg, rngs=nnx.Rngs(int(config.seed)))


def _phase_step(config, phase, model):
  """The trainer's compiled step for `phase` on `model` (its optimiser, weights and ramp)."""
  parts = state_lib.split_model(model)
  labels = optim.label_params(parts.params)
  opt = phases_lib.phase_optimizer(config, phase, labels, "phases[0]")
  state = state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(0), parts.rest)
  alignment = phases_lib.phase_alignment(phase)
  fn = step_lib.make_train_step(
      parts.graphdef, parts.rng_state, opt,
      weights={k: schedules.loss_weight_schedule(phase.weights[k]) for k in ("source", "target", "domain")},
      lam=schedules.dann_lambda(phase.steps, phase.gamma, phase.lambda_max),
      alignment=alignment, objective=ce_objective.objective(alignment, model.rating_output),
      use_source=True, use_target=True, donate=False)
  return state, fn


# ---------------------------------------------------------------------------- (a) it learns

@pytest.mark.slow
def test_discriminator_learns_a_fixed_pair_with_the_encoder_frozen(demo_dann_config, pair):
  config = demo_dann_config
  phase = config.phases[0].copy_and_resolve_references()
  phase.frozen = ("encoder",)
  phase.weights.source = 0.0  # the domain loss alone: does the discriminator learn?
  state, fn = _phase_step(config, phase, _model(config))
  src, tgt = pair
  start = state.params["encoder"]
  accs, dom = [], []
  for _ in range(int(phase.steps)):
    state, m = fn(state, src, tgt)
    accs.append(float(m["domain_acc"]))
    dom.append(float(m["loss_domain"]))
  jax.tree.map(np.testing.assert_array_equal, start, state.params["encoder"])  # truly frozen
  # Within the demo's phase length the 16 fixed examples become separable.
  assert np.mean(dom[-5:]) < 0.5 * math.log(2.0), dom
  assert np.mean(accs[-5:]) >= 0.9, accs


# ---------------------------------------------------------------------------- (b) it reaches

def _encoder_domain_grad(config, batches, reverse):
  model = _model(config, reverse=reverse)
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  objective = ce_objective.objective(losses.make_alignment("dann"), model.rating_output)

  def loss(p):
    m = nnx.merge(graphdef, p, rest)
    zero = jnp.zeros((), jnp.float32)
    total, _ = objective(m, batches, jnp.float32(1.0),
                         {"source": zero, "target": zero, "domain": jnp.float32(1.0)},
                         deterministic=True)
    return total

  return jax.grad(loss)(params)["encoder"]


def test_reversed_domain_gradient_reaches_the_encoder_with_opposite_sign(demo_dann_config, pair):
  batches = {"source": pair[0], "target": pair[1]}
  g_rev = _encoder_domain_grad(demo_dann_config, batches, reverse=True)
  g_plain = _encoder_domain_grad(demo_dann_config, batches, reverse=False)
  norm = float(jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(g_plain))))
  assert norm > 1e-6
  for a, b in zip(jax.tree.leaves(g_rev), jax.tree.leaves(g_plain)):
    np.testing.assert_allclose(a, -b, rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------- (c) not inert

@pytest.mark.parametrize("method", ["dann", "joint_dann"])
def test_demo_phase_has_a_live_domain_weight_and_ramp(method, tmp_path):
  from crossrec_jax.eval import study as study_api  # pylint: disable=g-import-not-at-top
  study = study_api.load_experiment("transfer_study", "cpu")
  config = grid.run_config(study, method, 1.0 if method == "joint_dann" else 0.0, 0, tmp_path)
  (phase,) = config.phases
  assert phases_lib.phase_alignment(phase).kind == "dann"
  steps = np.arange(int(phase.steps))
  w = schedules.loss_weight_schedule(phase.weights.domain)
  assert min(float(w(t)) for t in steps) > 0.0
  lam = np.asarray(jax.vmap(schedules.dann_lambda(phase.steps, phase.gamma,
                                                  phase.lambda_max))(steps))
  p = steps / phase.steps
  np.testing.assert_allclose(lam, phase.lambda_max * (2 / (1 + np.exp(-phase.gamma * p)) - 1),
                             rtol=1e-5, atol=1e-6)
  # Not ~0 for most of the phase: past the optimiser's warmup lam is already well above 0.
  warmup = int(config.optimizer.discriminator.warmup_steps)
  assert lam[warmup] > 0.5 and np.mean(lam) > 0.8


def test_domain_weight_zero_and_positive_give_different_parameters(demo_dann_config, pair):
  config = demo_dann_config
  after = {}
  for w_dom in (0.0, float(config.phases[0].weights.domain)):
    phase = config.phases[0].copy_and_resolve_references()
    phase.weights.domain = w_dom
    phase.steps = 12  # the optimiser needs decay_steps > warmup; 3 of them are run
    state, fn = _phase_step(config, phase, _model(config))
    for _ in range(3):
      state, _ = fn(state, *pair)
    after[w_dom] = state.params
  zero, live = after.values()
  for group in ("encoder", "discriminator"):
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for a, b in zip(jax.tree.leaves(zero[group]), jax.tree.leaves(live[group])))
    assert diff > 0.0, group
