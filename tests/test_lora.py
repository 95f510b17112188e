"""LoRA adapters (models/lora.py), their optimiser group (train/optim.py) and their config keys."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax.models import bert, hf_import, lora, modernbert, recommender
from crossrec_jax.train import optim

B, L = 3, 12


def _bert(seed=0):
  return bert.BertModel(bert.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                                        num_attention_heads=2, intermediate_size=24,
                                        max_position_embeddings=L), rngs=nnx.Rngs(seed))


def _modernbert(seed=0):
  return modernbert.ModernBertModel(modernbert.ModernBertConfig(
      vocab_size=40, hidden_size=16, intermediate_size=24, num_hidden_layers=3,
      num_attention_heads=2, local_attention=4, pad_token_id=0), rngs=nnx.Rngs(seed))


def _inputs(seed=0):
  rng = np.random.default_rng(seed)
  ids = jnp.asarray(rng.integers(1, 40, (B, L)), jnp.int32)
  mask = jnp.asarray(np.arange(L)[None] < np.array([[L], [7], [3]]), jnp.int32)
  return ids, mask, jnp.asarray([0, 1, 1], jnp.int32)


def _randomise_b(model, seed=1):
  """Non-zero B matrices (as after training), so the adapters change the output."""
  keys = iter(jax.random.split(jax.random.key(seed), 1000))
  for _, node in nnx.iter_graph(model):
    if isinstance(node, lora.LoRALinear):
      node.lora.b[...] = 0.1 * jax.random.normal(next(keys), node.lora.b.shape)


def _params(model, kind=nnx.Param):
  return {"/".join(map(str, p)): np.asarray(v) for p, v in nnx.to_flat_state(nnx.state(model, kind))}


@pytest.mark.parametrize("build", [_bert, _modernbert])
@pytest.mark.parametrize("per_domain", [False, True])
def test_lora_at_init_is_exactly_the_base_model(build, per_domain):
  ids, mask, domain = _inputs()
  base = build()
  expected = base(ids, mask)
  adapted = lora.apply_lora(build(), lora.LoraConfig(rank=4, num_domains=2 if per_domain else 1),
                            rngs=nnx.Rngs(5))
  got = adapted(ids, mask, domain=domain)
  np.testing.assert_array_equal(got.last_hidden_state, expected.last_hidden_state)
  np.testing.assert_array_equal(got.pooler_output, expected.pooler_output)
  # Every projection of the layer stack is adapted by default, the pooler is not.
  n_layers = base.config.num_hidden_layers
  n_adapted = sum(isinstance(n, lora.LoRALinear) for _, n in nnx.iter_graph(adapted))
  assert n_adapted == (6 if build is _bert else 4) * n_layers
  if build is _bert:
    assert not isinstance(adapted.pooler, lora.LoRALinear)
    assert adapted.encoder.layer[0].attention.query.kernel is not None
  # The base parameters keep their paths (checkpoint names, sharding rules).
  assert set(_params(base)) < set(_params(adapted))


def test_rank_alpha_and_targets_are_applied():
  model = lora.apply_lora(_bert(), lora.LoraConfig(rank=3, alpha=6.0, targets=("query", "value")),
                          rngs=nnx.Rngs(0))
  layer = model.encoder.layer[1]
  assert isinstance(layer.attention.query, lora.LoRALinear)
  assert isinstance(layer.attention.value, lora.LoRALinear)
  assert not isinstance(layer.attention.key, lora.LoRALinear)
  assert not isinstance(layer.intermediate, lora.LoRALinear)
  assert layer.attention.query.lora.a.shape == (1, 16, 3)
  assert layer.attention.query.lora.b.shape == (1, 3, 16) and layer.attention.query.scale == 2.0
  assert lora.lora_param_count(model) == 2 * 2 * (16 * 3 + 3 * 16)
  with pytest.raises(ValueError, match=r"model.encoder.lora.targets: 'qeury' matches no"):
    lora.apply_lora(_bert(), lora.LoraConfig(rank=2, targets=("qeury",)), rngs=nnx.Rngs(0))


def test_per_domain_adapters_differ_per_domain_and_merge_per_domain(tmp_path):
  ids, mask, _ = _inputs()
  model = lora.apply_lora(_bert(), lora.LoraConfig(rank=4, num_domains=2), rngs=nnx.Rngs(2))
  _randomise_b(model)
  zeros, ones = jnp.zeros((B,), jnp.int32), jnp.ones((B,), jnp.int32)
  h0 = np.asarray(model(ids, mask, domain=zeros).last_hidden_state)
  h1 = np.asarray(model(ids, mask, domain=ones).last_hidden_state)
  assert np.abs(h0 - h1).max() > 1e-3
  mixed = np.asarray(model(ids, mask, domain=jnp.asarray([0, 1, 0])).last_hidden_state)
  np.testing.assert_allclose(mixed[[0, 2]], h0[[0, 2]], atol=1e-6)
  np.testing.assert_allclose(mixed[1], h1[1], atol=1e-6)
  for d, h in ((0, h0), (1, h1)):
    merged = lora.merge_lora(model, domain=d)
    assert not any(isinstance(n, lora.LoRALinear) for _, n in nnx.iter_graph(merged))
    np.testing.assert_allclose(merged(ids, mask).last_hidden_state, h, atol=1e-5)
  with pytest.raises(ValueError, match="'domain' column"):
    model(ids, mask)


def test_merged_model_exports_and_transformers_agrees(tmp_path):
  torch = pytest.importorskip("torch", reason="torch is the numerical reference (tests only)")
  transformers = pytest.importorskip("transformers")
  ids, mask, _ = _inputs()
  model = lora.apply_lora(_bert(), lora.LoraConfig(rank=4), rngs=nnx.Rngs(2))
  _randomise_b(model)
  want = np.asarray(model(ids, mask).last_hidden_state)
  merged = lora.merge_lora(model)
  np.testing.assert_allclose(merged(ids, mask).last_hidden_state, want, atol=1e-5)
  assert np.abs(want - np.asarray(_bert()(ids, mask).last_hidden_state)).max() > 1e-3
  out_dir = hf_import.export_pretrained(merged, tmp_path / "merged")
  ref = transformers.BertModel.from_pretrained(str(out_dir), attn_implementation="eager").eval()
  with torch.inference_mode():
    got = ref(input_ids=torch.from_numpy(np.asarray(ids, np.int64)),
              attention_mask=torch.from_numpy(np.asarray(mask, np.int64))).last_hidden_state
  real = np.asarray(mask, bool)
  assert np.abs(got.numpy() - want)[real].max() < 1e-5


def _tiny_model_config(**lora_keys):
  c = config_base.base_config("tiny")
  c.model.encoder.lora.update(lora_keys)
  return c


def test_only_lora_params_change_with_the_base_frozen():
  c = _tiny_model_config(rank=4, per_domain=True)
  model = recommender.build_recommender(c.model, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  labels = optim.label_params(params, {g: g for g in config_base.GROUPS})
  flat = dict(nnx.to_flat_state(labels))
  lora_paths = {p for p, g in flat.items() if g == "lora"}
  assert lora_paths and all("lora" in p for p in lora_paths)
  assert all(flat[p] == "encoder" for p in flat if p[0] == "encoder" and p not in lora_paths)
  opt = optim.make_optimizer(labels, {
      "encoder": optim.GroupConfig(frozen=True), "lora": optim.GroupConfig(lr=1e-2),
      "rating_head": optim.GroupConfig(lr=1e-2), "discriminator": optim.GroupConfig(lr=1e-2)})
  state = opt.tx.init(params)
  # The frozen encoder keeps no Adam state: memory is the point of LoRA.
  n_adam = sum(x.size for x in jax.tree.leaves(state) if hasattr(x, "size") and x.ndim > 0)
  n_lora = sum(int(np.prod(v.shape)) for p, v in nnx.to_flat_state(params) if p in lora_paths)
  n_heads = sum(int(np.prod(v.shape)) for p, v in nnx.to_flat_state(params)
                if p[0] in ("rating_head", "discriminator"))
  assert n_adam == 2 * (n_lora + n_heads)
  rng = np.random.default_rng(0)
  batch = {"input_ids": jnp.asarray(rng.integers(1, 1000, (4, 16)), jnp.int32),
           "attention_mask": jnp.ones((4, 16), jnp.int32),
           "domain": jnp.asarray([0, 0, 1, 1], jnp.int32)}

  def loss(p):
    return jnp.mean(nnx.merge(graphdef, p, rest)(batch)["rating"] ** 2)

  before = {p: np.asarray(v) for p, v in nnx.to_flat_state(params)}
  for _ in range(2):  # B is 0 at first: A gets no gradient until B moved once.
    updates, state = opt.tx.update(jax.grad(loss)(params), state, params)
    params = optax.apply_updates(params, updates)
  after = {p: np.asarray(v) for p, v in nnx.to_flat_state(params)}
  for p in before:
    changed = not np.array_equal(before[p], after[p])
    if p in lora_paths or p[0] == "rating_head":
      assert changed, p
    elif p[0] == "encoder":
      assert not changed, p
  # Both domains' adapters were trained (each row used its own).
  b = after[("encoder", "encoder", "layer", 0, "attention", "query", "lora", "b")]
  assert np.abs(b[0]).max() > 0 and np.abs(b[1]).max() > 0


def test_config_keys_validated():
  assert lora.from_config(config_base.base_config("tiny").model.encoder.lora) is None  # rank 0
  cfg = lora.from_config(dict(rank=4, alpha=8.0, targets=("query",), per_domain=True))
  assert cfg == lora.LoraConfig(rank=4, alpha=8.0, targets=("query",), num_domains=2)
  with pytest.raises(ValueError, match=r"unknown key\(s\) \['rnak'\]"):
    lora.from_config(dict(rnak=4, rank=4, alpha=8.0, targets=(), per_domain=False))
  with pytest.raises(ValueError, match="model.encoder.lora.rank must be a positive int"):
    lora.from_config(dict(rank=-2, alpha=8.0, targets=(), per_domain=False))
  with pytest.raises(ValueError, match="model.encoder.lora.alpha must be > 0"):
    lora.from_config(dict(rank=2, alpha=0.0, targets=(), per_domain=False))
  with pytest.raises(ValueError, match="model.encoder.lora.per_domain must be a bool"):
    lora.from_config(dict(rank=2, alpha=1.0, targets=(), per_domain=2))
  c = _tiny_model_config(rank=2, targets=("query", "nope"))
  with pytest.raises(ValueError, match="model.encoder.lora.targets: 'nope'"):
    recommender.build_recommender(c.model, rngs=nnx.Rngs(0))


def test_remat_with_per_domain_lora_gives_the_same_gradients():
  ids, mask, domain = _inputs()

  def grads(remat):
    model = bert.BertModel(bert.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2,
                                           num_attention_heads=2, intermediate_size=24,
                                           max_position_embeddings=L, remat=remat),
                           rngs=nnx.Rngs(0))
    lora.apply_lora(model, lora.LoraConfig(rank=2, num_domains=2), rngs=nnx.Rngs(1))
    _randomise_b(model)
    graphdef, lp, rest = nnx.split(model, nnx.LoRAParam, ...)
    f = lambda p: jnp.sum(nnx.merge(graphdef, p, rest)(ids, mask, domain=domain).pooler_output)
    return jax.tree.leaves(jax.grad(f)(lp))

  for a, b in zip(grads(False), grads(True)):
    np.testing.assert_allclose(a, b, atol=1e-6)
