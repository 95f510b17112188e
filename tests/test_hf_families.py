"""Checkpoint families and export (models/hf_import.py, hf_names.py, modernbert.py): forward
parity with transformers' PyTorch models on random weights built here, and exact round trips
load -> export -> load. torch is the reference (tests only)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from crossrec_jax.models import bert, hf_import, lora, modernbert

torch = pytest.importorskip("torch", reason="torch is the numerical reference (tests only)")
transformers = pytest.importorskip("transformers")

B, L = 3, 16


def _batch(vocab, pad, seed=0, lengths=(16, 9, 4)):
  """Random ids (never `pad` at real positions), padded with `pad` to L; mask 1 on real ids."""
  rng = np.random.default_rng(seed)
  ids = rng.integers(pad + 1, vocab, size=(B, L)).astype(np.int64)
  mask = (np.arange(L)[None] < np.array(lengths)[:, None]).astype(np.int64)
  return np.where(mask == 1, ids, pad), mask


def _perturb(model, seed=0):
  """Adds noise to every torch parameter (LayerNorm weights and zero biases included), so a
  wrong name mapping cannot hide behind default values."""
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for p in model.parameters():
      p.add_(0.05 * torch.randn(p.shape, generator=gen))
  return model.eval()


def _torch_out(model, ids, mask):
  with torch.inference_mode():
    out = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
  pooled = getattr(out, "pooler_output", None)
  return out.last_hidden_state.numpy(), None if pooled is None else pooled.numpy()


def _ours(model, ids, mask):
  out = model(jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))
  return np.asarray(out.last_hidden_state), np.asarray(out.pooler_output)


def _max_real_diff(a, b, mask):
  return float(np.abs(a - b)[mask.astype(bool)].max())


def _params(model):
  return {"/".join(map(str, p)): np.asarray(v[...]) for p, v in nnx.iter_graph(model)
          if isinstance(v, nnx.Param)}


def _assert_round_trip(model, tmp_path, ids, mask):
  """export -> transformers loads it with the same outputs; export -> load equals exactly."""
  out_dir = hf_import.export_pretrained(model, tmp_path / "exported")
  assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
  ref = transformers.AutoModel.from_pretrained(str(out_dir), attn_implementation="eager").eval()
  hidden, pooled = _torch_out(ref, ids, mask)
  ours_hidden, ours_pooled = _ours(model, ids, mask)
  assert _max_real_diff(ours_hidden, hidden, mask) < 1e-5
  if pooled is not None:
    np.testing.assert_allclose(ours_pooled, pooled, atol=1e-5)
  back = hf_import.load_pretrained(out_dir)
  assert type(back) is type(model) and back.config == model.config
  a, b = _params(model), _params(back)
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_bert_export_loads_in_transformers_with_same_outputs(tmp_path):
  cfg = bert.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=24)
  model = bert.BertModel(cfg, rngs=nnx.Rngs(3))
  model.embeddings.layer_norm.scale[...] = jax.random.uniform(jax.random.key(1), (32,)) + 0.5
  ids, mask = _batch(50, 0)
  _assert_round_trip(model, tmp_path, ids, mask)
  written = json.loads((tmp_path / "exported" / "config.json").read_text())
  assert written["model_type"] == "bert" and written["architectures"] == ["BertModel"]


def test_roberta_parity_and_round_trip(tmp_path):
  hf_cfg = transformers.RobertaConfig(
      vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      intermediate_size=48, max_position_embeddings=L + 2, type_vocab_size=1, pad_token_id=1,
      layer_norm_eps=1e-5)
  torch.manual_seed(0)
  ref = _perturb(transformers.RobertaModel(hf_cfg))
  ref.save_pretrained(tmp_path / "roberta")
  model = hf_import.load_pretrained(tmp_path / "roberta")
  assert isinstance(model, bert.BertModel) and model.config.model_type == "roberta"
  assert model.config.layer_norm_eps == 1e-5 and model.config.type_vocab_size == 1
  ids, mask = _batch(60, 1)
  hidden, pooled = _torch_out(ref, ids, mask)
  ours_hidden, ours_pooled = _ours(model, ids, mask)
  assert _max_real_diff(ours_hidden, hidden, mask) < 1e-5
  np.testing.assert_allclose(ours_pooled, pooled, atol=1e-5)
  # The offset matters: BERT-style positions 0.. give other outputs.
  as_bert = bert.BertModel(dataclasses.replace(model.config, model_type="bert"), rngs=nnx.Rngs(0))
  nnx.update(as_bert, nnx.state(model, nnx.Param))
  assert _max_real_diff(_ours(as_bert, ids, mask)[0], hidden, mask) > 1e-3
  _assert_round_trip(model, tmp_path, ids, mask)
  with pytest.raises(ValueError, match="RoBERTa position offset"):
    model(jnp.ones((1, L + 1), jnp.int32), jnp.ones((1, L + 1), jnp.int32))


@pytest.mark.parametrize("biases", [False, True])
def test_modernbert_parity_and_round_trip(tmp_path, biases):
  hf_cfg = transformers.ModernBertConfig(
      vocab_size=60, hidden_size=32, intermediate_size=40, num_hidden_layers=4,
      num_attention_heads=4, max_position_embeddings=64, local_attention=6, pad_token_id=0,
      global_attn_every_n_layers=3, norm_bias=biases, attention_bias=biases, mlp_bias=biases,
      global_rope_theta=160000.0, local_rope_theta=10000.0)
  torch.manual_seed(1)
  ref = _perturb(transformers.ModernBertModel(hf_cfg), seed=1)
  ref.config._attn_implementation = "eager"  # pylint: disable=protected-access
  ref.save_pretrained(tmp_path / "modernbert")
  model = hf_import.load_pretrained(tmp_path / "modernbert")
  assert isinstance(model, modernbert.ModernBertModel)
  assert model.config.layer_types == ("full_attention", "sliding_attention", "sliding_attention",
                                      "full_attention")
  ids, mask = _batch(60, 0, seed=2)
  hidden, _ = _torch_out(ref, ids, mask)
  ours_hidden, ours_pooled = _ours(model, ids, mask)
  assert _max_real_diff(ours_hidden, hidden, mask) < 1e-5
  np.testing.assert_array_equal(ours_pooled, ours_hidden[:, 0])  # No pooler: [CLS] state.
  _assert_round_trip(model, tmp_path, ids, mask)
  two = hf_import.load_pretrained(tmp_path / "modernbert", num_layers=2)
  assert two.config.layer_types == ("full_attention", "sliding_attention")


def test_modernbert_sliding_window_is_used():
  cfg = modernbert.ModernBertConfig(vocab_size=40, hidden_size=16, intermediate_size=24,
                                    num_hidden_layers=2, num_attention_heads=2, local_attention=4,
                                    layer_types=("sliding_attention", "sliding_attention"),
                                    pad_token_id=0)
  model = modernbert.ModernBertModel(cfg, rngs=nnx.Rngs(0))
  ids, mask = _batch(40, 0)
  base = _ours(model, ids, mask)[0]
  changed = ids.copy()
  changed[0, 15] = 1 + (ids[0, 15] % 38)  # Far from position 0: outside both layers' windows.
  assert np.allclose(_ours(model, changed, mask)[0][0, 0], base[0, 0], atol=1e-6)
  assert not np.allclose(_ours(model, changed, mask)[0][0, 14], base[0, 14], atol=1e-6)


def test_export_refuses_unmerged_lora(tmp_path):
  model = bert.BertModel(bert.BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=24,
                                         max_position_embeddings=16), rngs=nnx.Rngs(0))
  lora.apply_lora(model, lora.LoraConfig(rank=2), rngs=nnx.Rngs(1))
  with pytest.raises(hf_import.CheckpointImportError, match="merge_lora"):
    hf_import.export_pretrained(model, tmp_path / "x")


def test_unknown_model_type_names_the_file(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
  with pytest.raises(hf_import.CheckpointImportError, match=r"config.json.*'deberta-v2'"):
    hf_import.load_config(tmp_path)


def test_config_model_encoder_selects_the_family_from_a_checkpoint_dir(tmp_path):
  """`model.encoder.init='pretrained'` + `path` builds the directory's family, LoRA included,
  and the recommender runs on it unchanged."""
  from crossrec_jax import config_base  # pylint: disable=g-import-not-at-top
  from crossrec_jax.models import recommender  # pylint: disable=g-import-not-at-top
  hf_cfg = transformers.ModernBertConfig(
      vocab_size=60, hidden_size=32, intermediate_size=40, num_hidden_layers=3,
      num_attention_heads=4, local_attention=6, pad_token_id=0)
  transformers.ModernBertModel(hf_cfg).save_pretrained(tmp_path / "mb")
  c = config_base.base_config("tiny")
  c.model.encoder.update(dict(init="pretrained", path=str(tmp_path / "mb"), num_layers=2))
  c.model.encoder.lora.update(dict(rank=2, per_domain=True))
  model = recommender.build_recommender(c.model, rngs=nnx.Rngs(0))
  assert isinstance(model.encoder, modernbert.ModernBertModel)
  assert model.encoder.config.num_hidden_layers == 2 and lora.lora_param_count(model) > 0
  ids, mask = _batch(60, 0)
  out = model({"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.asarray(mask),
               "domain": jnp.asarray([0, 1, 1], jnp.int32)})
  assert out["rating"].shape == (B,) and out["features"].shape == (B, 32)
