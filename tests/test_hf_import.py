"""Tests for crossrec_jax/models/hf_import.py: real-weight parity with PyTorch transformers,
exact round trips of written checkpoints, and the errors for bad checkpoints."""

import json
import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from crossrec_jax.models import hf_import
from crossrec_jax.models.bert import BertModel, bert_param_count
from crossrec_jax.models.hf_import import CheckpointImportError

# Real, different-length texts: the padding mask matters for all but the longest.
TEXTS = [
    "Toy Story (1995)",
    "Heat",
    "The Lord of the Rings: The Fellowship of the Ring. A hobbit inherits a ring that must be "
    "destroyed in the fires of Mount Doom before the dark lord Sauron finds it.",
    "Harry Potter and the Sorcerer's Stone by J. K. Rowling (Scholastic, 1998); Fantasy",
    "User rated: Fargo 5/5, Alien 4/5, Clueless 2/5. Candidate: Pulp Fiction (Crime, Drama)",
]
# HF per-layer names -> our attribute path, written out here independently of hf_import.
LAYER_PATHS = {
    "attention.self.query": "attention.query", "attention.self.key": "attention.key",
    "attention.self.value": "attention.value", "attention.output.dense": "attention.output",
    "attention.output.LayerNorm": "attention.layer_norm", "intermediate.dense": "intermediate",
    "output.dense": "output", "output.LayerNorm": "output_layer_norm",
}
TINY_HF = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": 50,
           "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 24, "max_position_embeddings": 20, "type_vocab_size": 2}


def hf_tensors(c, seed=0, prefix=""):
  """Random tensors named and shaped like an HF BertModel state dict for config dict `c`."""
  h, i = c["hidden_size"], c["intermediate_size"]
  shapes = {"embeddings.word_embeddings.weight": (c["vocab_size"], h),
            "embeddings.position_embeddings.weight": (c["max_position_embeddings"], h),
            "embeddings.token_type_embeddings.weight": (c["type_vocab_size"], h),
            "embeddings.LayerNorm.weight": (h,), "embeddings.LayerNorm.bias": (h,),
            "pooler.dense.weight": (h, h), "pooler.dense.bias": (h,)}
  for l in range(c["num_hidden_layers"]):
    for name in LAYER_PATHS:
      if "LayerNorm" in name:
        weight = (h,)
      else:  # torch Linear: (out, in).
        weight = {"intermediate.dense": (i, h), "output.dense": (h, i)}.get(name, (h, h))
      shapes[f"encoder.layer.{l}.{name}.weight"] = weight
      shapes[f"encoder.layer.{l}.{name}.bias"] = weight[:1]
  rng = np.random.default_rng(seed)
  tensors = {prefix + k: rng.standard_normal(s, dtype=np.float32) for k, s in shapes.items()}
  tensors[prefix + "embeddings.position_ids"] = np.arange(c["max_position_embeddings"])[None]
  return tensors


def write_checkpoint(directory, config, tensors):
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(config))
  save_file(tensors, str(directory / "model.safetensors"))
  return directory


def model_param(model, hf_name):
  """Our parameter for an HF tensor name, found via LAYER_PATHS (not via hf_import)."""
  parts = hf_name.removeprefix("bert.").split(".")
  leaf = {"weight": "kernel", "bias": "bias"}[parts[-1]]
  if parts[0] == "embeddings":
    if parts[1] == "LayerNorm":
      return model.embeddings.layer_norm, {"weight": "scale", "bias": "bias"}[parts[-1]]
    return getattr(model.embeddings, parts[1]), "embedding"
  if parts[0] == "pooler":
    return model.pooler, leaf
  obj = model.encoder.layer[int(parts[2])]
  sub = ".".join(parts[3:-1])
  for attr in LAYER_PATHS[sub].split("."):
    obj = getattr(obj, attr)
  return obj, ({"weight": "scale", "bias": "bias"}[parts[-1]] if "LayerNorm" in sub else leaf)


# ----------------------------------------------------------------- packaged encoder vs torch


@pytest.fixture(scope="module")
def encoded():
  tok = hf_import.load_tokenizer()
  return dict(tok(TEXTS, padding=True, truncation=True, max_length=128, return_tensors="np"))


@pytest.fixture(scope="module")
def torch_reference(encoded):
  torch = pytest.importorskip("torch", reason="torch is the numerical reference (tests only)")
  transformers = pytest.importorskip("transformers")
  model = transformers.BertModel.from_pretrained(
      str(hf_import.default_encoder_dir()), local_files_only=True, attn_implementation="eager")
  model.eval()
  with torch.inference_mode():
    out = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}, output_hidden_states=True)
    pooled_after_2 = model.pooler(out.hidden_states[2]).numpy()
  return {"last": out.last_hidden_state.numpy(), "pooled": out.pooler_output.numpy(),
          "after_2": out.hidden_states[2].numpy(), "pooled_after_2": pooled_after_2}


def _max_diffs(out, last, pooled, mask):
  real = mask.astype(bool)
  hidden = np.asarray(out.last_hidden_state, np.float32)
  return (float(np.abs(hidden - last)[real].max()),
          float(np.abs(np.asarray(out.pooler_output, np.float32) - pooled).max()))


def _forward(model, enc):
  return model(jnp.asarray(enc["input_ids"]), jnp.asarray(enc["attention_mask"]),
               jnp.asarray(enc["token_type_ids"]))


def test_tokenizer_has_no_hidden_padding_or_truncation(encoded):
  tok = hf_import.load_tokenizer()
  lengths = encoded["attention_mask"].sum(1)
  assert len(set(lengths.tolist())) == len(TEXTS)  # Truly different lengths, padded batch.
  assert encoded["input_ids"].shape[1] == lengths.max() < 128
  assert tok.unk_token_id not in encoded["input_ids"][encoded["attention_mask"] == 1]
  long_text = " ".join(["movie"] * 200)
  assert len(tok(long_text)["input_ids"]) == 202  # Not cut to tokenizer.json's 128.
  assert len(tok("Heat")["input_ids"]) == 3  # Not padded to 128.
  fixed = tok([long_text, "Heat"], padding="max_length", truncation=True, max_length=16,
              return_tensors="np")
  assert fixed["input_ids"].shape == (2, 16) and isinstance(fixed["input_ids"], np.ndarray)


def test_float32_parity_with_torch(encoded, torch_reference):
  model = hf_import.load_pretrained()
  d_hidden, d_pooled = _max_diffs(_forward(model, encoded), torch_reference["last"],
                                  torch_reference["pooled"], encoded["attention_mask"])
  assert d_hidden <= 1e-4 and d_pooled <= 1e-4, (d_hidden, d_pooled)


def test_bfloat16_parity_with_torch(encoded, torch_reference):
  model = hf_import.load_pretrained(dtype=jnp.bfloat16)
  out = _forward(model, encoded)
  assert out.last_hidden_state.dtype == jnp.bfloat16
  d_hidden, d_pooled = _max_diffs(out, torch_reference["last"], torch_reference["pooled"],
                                  encoded["attention_mask"])
  # Measured on this batch (2-core CPU, jax 0.10.2): hidden 0.039, pooler 0.0029, for hidden
  # values up to |5.9|; bounds have 2.5x / 3.4x margin. Catches gross errors (no padding mask:
  # 1.9 / 0.19); subtle ones (tanh GELU: 0.0034) are the float32 test's job.
  assert d_hidden <= 0.1 and d_pooled <= 0.01, (d_hidden, d_pooled)


def test_layer_truncation_matches_torch_intermediate_layer(encoded, torch_reference):
  model = hf_import.load_pretrained(num_layers=2)
  assert model.config.num_hidden_layers == 2 and len(model.encoder.layer) == 2
  d_hidden, d_pooled = _max_diffs(_forward(model, encoded), torch_reference["after_2"],
                                  torch_reference["pooled_after_2"], encoded["attention_mask"])
  assert d_hidden <= 1e-4 and d_pooled <= 1e-4, (d_hidden, d_pooled)


@pytest.mark.parametrize("num_layers", [0, 7])
def test_layer_truncation_out_of_range(num_layers):
  with pytest.raises(CheckpointImportError, match=rf"num_layers={num_layers} must be in \[1, 6\]"):
    hf_import.load_config(num_layers=num_layers)


def test_load_pretrained_accepts_config_overrides():
  # The packaged config.json sets both dropout rates to 0.1; overrides replace them.
  model = hf_import.load_pretrained(num_layers=1, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.2, remat=True)
  assert model.config.hidden_dropout_prob == 0.0 and model.config.remat
  assert model.config.attention_probs_dropout_prob == 0.2
  layer = model.encoder.layer[0]
  assert layer.dropout.rate == 0.0 and layer.attention.attention_dropout.rate == 0.2
  assert model.embeddings.dropout.rate == 0.0


def test_param_count_equals_packaged_checkpoint():
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  tensors = load_file(hf_import.default_encoder_dir() / "model.safetensors")
  n = sum(v.size for k, v in tensors.items() if k != "embeddings.position_ids")
  assert bert_param_count(hf_import.load_config()) == n == 22_713_216


# ------------------------------------------------------------ written checkpoints round-trip


@pytest.fixture(scope="module")
def base_shaped():
  """bert-base shapes (hidden 768, 12 heads, ffn 3072, vocab 30522), 2 layers to stay fast."""
  config = {"architectures": ["BertForMaskedLM"], "model_type": "bert", "vocab_size": 30522,
            "hidden_size": 768, "num_hidden_layers": 2, "num_attention_heads": 12,
            "intermediate_size": 3072, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            "max_position_embeddings": 512, "type_vocab_size": 2, "dtype": "float32"}
  return config, hf_tensors(config)


@pytest.mark.parametrize("prefix", ["", "bert."])
def test_bert_base_shaped_round_trip_is_exact(tmp_path, caplog, base_shaped, prefix):
  config, tensors = base_shaped
  named = {prefix + k: v for k, v in tensors.items()}
  if prefix:  # MLM checkpoints carry a head: skipped on purpose, and reported.
    named["cls.predictions.bias"] = np.zeros(config["vocab_size"], np.float32)
  write_checkpoint(tmp_path / "ckpt", config, named)
  caplog.set_level(logging.INFO, logger=hf_import.__name__)
  model = hf_import.load_pretrained(tmp_path / "ckpt")
  assert ("cls.predictions.bias" in caplog.text) == bool(prefix)
  checked = 0
  for name, array in tensors.items():
    if name == "embeddings.position_ids":
      continue
    module, leaf = model_param(model, name)
    want = array.T if leaf == "kernel" else array
    np.testing.assert_array_equal(np.asarray(getattr(module, leaf)[...]), want, err_msg=name)
    checked += 1
  assert checked == len(jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_sharded_safetensors_and_pytorch_bin(tmp_path):
  tensors = hf_tensors(TINY_HF, seed=3)
  names = sorted(tensors)
  directory = tmp_path / "sharded"
  directory.mkdir()
  (directory / "config.json").write_text(json.dumps(TINY_HF))
  weight_map = {}
  for shard, part in (("a.safetensors", names[::2]), ("b.safetensors", names[1::2])):
    save_file({k: tensors[k] for k in part}, str(directory / shard))
    weight_map.update({k: shard for k in part})
  (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  model = hf_import.load_pretrained(directory)
  np.testing.assert_array_equal(model.pooler.kernel[...], tensors["pooler.dense.weight"].T)

  torch = pytest.importorskip("torch", reason="pytorch_model.bin is read only with torch")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  (bin_dir / "config.json").write_text(json.dumps(TINY_HF))
  torch.save({k: torch.from_numpy(v) for k, v in tensors.items()}, bin_dir / "pytorch_model.bin")
  model = hf_import.load_pretrained(bin_dir)
  np.testing.assert_array_equal(model.encoder.layer[1].intermediate.kernel[...],
                                tensors["encoder.layer.1.intermediate.dense.weight"].T)


# ------------------------------------------------------------------------------ bad inputs


def test_missing_directory_and_files(tmp_path):
  with pytest.raises(CheckpointImportError, match="checkpoint directory not found: .*nowhere"):
    hf_import.load_pretrained(tmp_path / "nowhere")
  (tmp_path / "empty").mkdir()
  with pytest.raises(CheckpointImportError, match=r"missing config file: .*empty.config\.json"):
    hf_import.load_config(tmp_path / "empty")
  (tmp_path / "empty" / "config.json").write_text(json.dumps(TINY_HF))
  with pytest.raises(CheckpointImportError, match=r"no weights in .*empty: expected"):
    hf_import.load_pretrained(tmp_path / "empty")
  with pytest.raises(CheckpointImportError, match="no tokenizer.json or vocab.txt"):
    hf_import.load_tokenizer(tmp_path / "empty")


def test_shape_mismatch_names_param_and_both_shapes(tmp_path):
  tensors = hf_tensors(TINY_HF, prefix="bert.")
  tensors["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((30, 16), np.float32)
  write_checkpoint(tmp_path / "c", TINY_HF, tensors)
  with pytest.raises(CheckpointImportError) as e:
    hf_import.load_pretrained(tmp_path / "c")
  msg = str(e.value)
  assert "encoder.layer.1.intermediate.dense.weight" in msg
  assert "checkpoint (30, 16)" in msg and "model expects (16, 24)" in msg


def test_unexpected_and_missing_weights_are_listed(tmp_path):
  tensors = hf_tensors(TINY_HF)
  del tensors["pooler.dense.weight"], tensors["encoder.layer.0.output.LayerNorm.bias"]
  tensors["encoder.layer.0.attention.self.rotary.weight"] = np.zeros((2,), np.float32)
  tensors["lm_head.weight"] = np.zeros((2,), np.float32)  # Not a known head: must not pass.
  write_checkpoint(tmp_path / "c", TINY_HF, tensors)
  with pytest.raises(CheckpointImportError) as e:
    hf_import.load_pretrained(tmp_path / "c")
  msg = str(e.value)
  assert ("unexpected weights (2): ['encoder.layer.0.attention.self.rotary.weight', "
          "'lm_head.weight']") in msg
  assert ("missing weights (2): ['encoder.layer.0.output.LayerNorm.bias', "
          "'pooler.dense.weight']") in msg


def test_failed_load_leaves_model_untouched():
  config = hf_import.load_config(None, num_layers=1)
  model = BertModel(config, rngs=nnx.Rngs(0))
  before = np.asarray(model.embeddings.word_embeddings.embedding[...]).copy()
  tensors = {k: np.zeros_like(v) for k, v in hf_tensors(
      {**TINY_HF, "vocab_size": 30522, "hidden_size": 384, "intermediate_size": 1536,
       "num_hidden_layers": 1, "max_position_embeddings": 512}).items()}
  tensors["pooler.dense.weight"] = np.zeros((3, 3), np.float32)
  with pytest.raises(CheckpointImportError, match="pooler.dense.weight"):
    hf_import.load_state_dict_into(model, tensors, config)
  np.testing.assert_array_equal(model.embeddings.word_embeddings.embedding[...], before)


@pytest.mark.parametrize("change, match", [
    ({"architectures": ["RobertaModel"]}, r"unsupported architecture\(s\) \['RobertaModel'\]"),
    ({"model_type": "distilbert", "architectures": None}, "model_type 'distilbert'"),
    ({"hidden_act": "silu"}, "hidden_act='silu'"),
])
def test_unsupported_config(tmp_path, change, match):
  write_checkpoint(tmp_path / "c", {**TINY_HF, **change}, hf_tensors(TINY_HF))
  with pytest.raises(CheckpointImportError, match=match) as e:
    hf_import.load_pretrained(tmp_path / "c")
  assert "config.json" in str(e.value)


def test_tokenizer_loading_is_a_leaf_that_data_uses_without_models():
  """data/tokenize.py loads tokenizers through crossrec_jax/hf_files.py, which imports nothing
  from crossrec_jax: preparing text pulls in neither models/ nor jax."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  code = ("import sys; from crossrec_jax.data import tokenize; tok = tokenize.load_tokenizer(); "
          "assert tok('heat')['input_ids'][1:-1]; "
          "bad = sorted(m for m in sys.modules if m.startswith(('crossrec_jax.models', 'jax', "
          "'flax'))); print(bad); assert not bad, bad")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-2000:]
  assert hf_import.load_tokenizer is hf_import.hf_files.load_tokenizer  # README's entry point
