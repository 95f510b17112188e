"""Tests for crossrec_jax/models/bert.py on tiny random models (parity on real weights lives in
tests/test_hf_import.py)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax.models.bert import ACTIVATIONS, BertConfig, BertModel, bert_param_count

TINY = BertConfig(vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=48, max_position_embeddings=24, type_vocab_size=3)


def _batch(seed=0, b=3, l=10):
  rng = np.random.default_rng(seed)
  ids = rng.integers(1, TINY.vocab_size, size=(b, l))
  lengths = np.array([l, l - 4, 2])[:b]
  mask = (np.arange(l)[None] < lengths[:, None]).astype(np.int32)
  return jnp.asarray(ids * mask), jnp.asarray(mask)


def _params(model):
  return nnx.state(model, nnx.Param)


def test_config_from_hf_dict_ignores_extras_and_normalises_dtype():
  d = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4, "dtype": "bfloat16",
       "architectures": ["BertModel"], "gradient_checkpointing": False, "vocab_size": 50}
  cfg = BertConfig.from_hf_dict(d)
  # HF's own "dtype" key is storage metadata, not our compute dtype.
  assert cfg.dtype == np.dtype(np.float32)
  assert (cfg.hidden_size, cfg.vocab_size, cfg.num_hidden_layers) == (64, 50, 12)
  assert BertConfig.from_hf_dict(d, dtype="bfloat16").dtype == jnp.bfloat16
  assert BertConfig(dtype=jnp.bfloat16) == BertConfig(dtype="bfloat16")


def test_config_from_hf_dict_overrides_win_over_the_dict():
  # config.json always carries the dropout rates: overriding them must not collide.
  d = {"model_type": "bert", "hidden_size": 64, "num_attention_heads": 4,
       "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1}
  cfg = BertConfig.from_hf_dict(d, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.25)
  assert (cfg.hidden_dropout_prob, cfg.attention_probs_dropout_prob) == (0.0, 0.25)
  assert BertConfig.from_hf_dict(d, hidden_size=32).hidden_size == 32


@pytest.mark.parametrize("d, match", [
    ({"model_type": "distilbert"}, "model_type 'distilbert'"),
    ({"hidden_act": "swish"}, "hidden_act='swish'"),
    ({"position_embedding_type": "relative_key"}, "relative_key"),
    ({"is_decoder": True}, "decoder"),
    ({"hidden_size": 100, "num_attention_heads": 12}, "not divisible"),
    ({"num_hidden_layers": 0}, "num_hidden_layers"),
])
def test_config_rejects_unsupported(d, match):
  with pytest.raises(ValueError, match=match):
    BertConfig.from_hf_dict(d)


def test_config_rejects_bad_dtypes():
  with pytest.raises(ValueError, match="float32 or bfloat16"):
    BertConfig(dtype=jnp.float16)
  with pytest.raises(ValueError, match="param_dtype"):
    BertConfig(param_dtype=jnp.bfloat16)


@pytest.mark.parametrize("cfg", [
    TINY,
    BertConfig(),  # bert-base
    BertConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=6),  # MiniLM-L6
])
def test_param_count_matches_state(cfg):
  abstract = nnx.eval_shape(lambda: BertModel(cfg, rngs=nnx.Rngs(0)))
  n = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(_params(abstract)))
  assert bert_param_count(cfg) == n
  if cfg == BertConfig():
    assert n == 109_482_240  # Published size of bert-base-uncased's BertModel.


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_output_shapes_and_dtype(dtype):
  model = BertModel(dataclasses.replace(TINY, dtype=dtype), rngs=nnx.Rngs(0))
  ids, mask = _batch()
  out = model(ids, mask)
  assert out.last_hidden_state.shape == (3, 10, 32) and out.pooler_output.shape == (3, 32)
  assert out.last_hidden_state.dtype == dtype and out.pooler_output.dtype == dtype
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(_params(model)))


def test_padding_does_not_change_real_positions():
  model = BertModel(TINY, rngs=nnx.Rngs(0))
  ids, mask = _batch(l=10)
  short = model(ids, mask)
  # Append 6 more pad tokens, with garbage ids, to test the mask rather than the pad id.
  junk = jnp.full((3, 6), 7)
  long = model(jnp.concatenate([ids, junk], 1), jnp.concatenate([mask, jnp.zeros_like(junk)], 1))
  m = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(long.last_hidden_state)[:, :10][m],
                             np.asarray(short.last_hidden_state)[m], atol=1e-5)
  np.testing.assert_allclose(long.pooler_output, short.pooler_output, atol=1e-5)
  # ...while changing a real token does change the outputs (the check above can fail).
  changed = model(ids.at[0, 1].set(5), mask)
  assert not np.allclose(changed.last_hidden_state[0, 0], short.last_hidden_state[0, 0])


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_fully_padded_row_is_finite(dtype):
  model = BertModel(dataclasses.replace(TINY, dtype=dtype), rngs=nnx.Rngs(0))
  ids, mask = _batch()
  out = model(ids, mask.at[2].set(0))
  assert np.isfinite(np.asarray(out.last_hidden_state, np.float32)).all()
  assert np.isfinite(np.asarray(out.pooler_output, np.float32)).all()


def test_rejects_bad_shapes():
  model = BertModel(TINY, rngs=nnx.Rngs(0))
  ids, mask = _batch()
  with pytest.raises(ValueError, match="attention_mask the same shape"):
    model(ids, mask[:, :5])
  long_ids = jnp.ones((1, TINY.max_position_embeddings + 1), jnp.int32)
  with pytest.raises(ValueError, match="exceeds max_position_embeddings=24"):
    model(long_ids, jnp.ones_like(long_ids))


def test_token_type_ids_are_used():
  model = BertModel(TINY, rngs=nnx.Rngs(0))
  ids, mask = _batch()
  a = model(ids, mask)
  b = model(ids, mask, jnp.zeros_like(ids))
  c = model(ids, mask, jnp.ones_like(ids))
  np.testing.assert_array_equal(a.pooler_output, b.pooler_output)
  assert not np.allclose(a.pooler_output, c.pooler_output)


def test_jitted_functional_forward_compiles_once():
  model = BertModel(TINY, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  traces = []

  @jax.jit
  def forward(state, ids, mask):
    traces.append(1)  # Runs only while tracing.
    return nnx.merge(graphdef, state)(ids, mask).pooler_output

  ids1, mask1 = _batch(seed=1)
  ids2, mask2 = _batch(seed=2)
  out1 = forward(state, ids1, mask1)
  out2 = forward(state, ids2, mask2)
  assert len(traces) == 1
  assert not np.allclose(out1, out2)
  np.testing.assert_allclose(out1, model(ids1, mask1).pooler_output, atol=1e-6)
  forward(state, *_batch(seed=3, l=12))  # A new shape is a new trace, as expected.
  assert len(traces) == 2


def test_dropout_only_when_not_deterministic():
  model = BertModel(TINY, rngs=nnx.Rngs(params=0, dropout=1))
  ids, mask = _batch()
  det1 = model(ids, mask).last_hidden_state
  det2 = model(ids, mask, deterministic=True).last_hidden_state
  np.testing.assert_array_equal(det1, det2)
  drop1 = model(ids, mask, deterministic=False).last_hidden_state
  drop2 = model(ids, mask, deterministic=False).last_hidden_state
  assert not np.allclose(drop1, det1)
  assert not np.allclose(drop1, drop2)  # The dropout stream advances between calls.
  # Same seed -> same masks: dropout is reproducible from the Rngs.
  again = BertModel(TINY, rngs=nnx.Rngs(params=0, dropout=1))
  np.testing.assert_array_equal(again(ids, mask, deterministic=False).last_hidden_state, drop1)


def _loss_and_grads(cfg, ids, mask, deterministic):
  """The functional pattern a train step uses: grads w.r.t. params of a merged model.

  `copy=True`: under jax.grad, merging the outer Variables and then advancing the dropout
  RngCount raises TraceContextError in flax 0.12.8; fresh copies are owned by this trace.
  """
  graphdef, params, rest = nnx.split(BertModel(cfg, rngs=nnx.Rngs(0)), nnx.Param, ...)

  def loss(params, rest):
    model = nnx.merge(graphdef, params, rest, copy=True)
    out = model(ids, mask, deterministic=deterministic)
    value = jnp.sum(out.pooler_output.astype(jnp.float32) ** 2)
    return value + jnp.mean(out.last_hidden_state.astype(jnp.float32) ** 2), nnx.state(model)

  step = jax.jit(jax.value_and_grad(loss, has_aux=True))
  (l1, state), grads = step(params, rest)
  (l2, _), _ = step(params, nnx.split(nnx.merge(graphdef, state), nnx.Param, ...)[2])
  return l1, l2, grads


def test_remat_matches_plain_forward_and_gradients():
  ids, mask = _batch()
  # With dropout on: the harder case (RNG state inside the rematerialised layers).
  l0, l0_next, g0 = _loss_and_grads(TINY, ids, mask, deterministic=False)
  l1, _, g1 = _loss_and_grads(dataclasses.replace(TINY, remat=True), ids, mask, False)
  # Same seeds -> same dropout masks, with or without remat.
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), g0, g1)
  assert float(jnp.abs(g0["encoder"]["layer"][0]["attention"]["query"]["kernel"][...]).max()) > 0
  # The returned RNG state advances, so the next step draws new dropout masks.
  assert l0 != l0_next


def test_activations_match_torch():
  torch = pytest.importorskip("torch", reason="torch is only the numerical reference")
  from transformers.activations import ACT2FN  # pylint: disable=g-import-not-at-top
  x = np.linspace(-6, 6, 101, dtype=np.float32)
  for name, fn in ACTIVATIONS.items():
    want = ACT2FN[name](torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(np.asarray(fn(jnp.asarray(x))), want, atol=1e-6, err_msg=name)
