"""Load local Hugging Face checkpoints (config.json + safetensors) into our NNX encoders, and
export them back.

Families (`hf_names.FAMILIES`, chosen by config.json's `model_type`): BERT and RoBERTa (both
`bert.BertModel`; RoBERTa numbers positions from pad_token_id + 1) and ModernBERT
(`modernbert.ModernBertModel`). Every encoder has the same call and output, so the recommender
takes any of them.

No torch and no network: weights are read with `safetensors.numpy` (`pytorch_model.bin` only as
a fallback when torch happens to be installed). Any local HF directory of these families loads
the same way (bert-base-uncased, MiniLM, roberta-base, ModernBERT-base...);
`default_encoder_dir()` is the packaged all-MiniLM-L6-v2.

The import is strict: every model parameter must come from the checkpoint with the exact shape,
and every checkpoint tensor must be used, except buffers (`embeddings.position_ids`) and the task
heads of the family (MLM/NSP/classifier heads), which are skipped and logged.

`export_pretrained(model, DIR)` writes `config.json` + `model.safetensors` that transformers'
`BertModel` / `RobertaModel` / `ModernBertModel.from_pretrained(DIR)` loads with the same outputs
(merge LoRA adapters first: `lora.merge_lora`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import re
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax import hf_files
from crossrec_jax.hf_files import CheckpointImportError, default_encoder_dir, load_tokenizer
from crossrec_jax.models import hf_names

__all__ = ["CheckpointImportError", "default_encoder_dir", "load_tokenizer", "load_config",
           "load_state_dict_into", "load_pretrained", "export_pretrained"]

KNOWN_HEAD_PREFIXES = hf_names.FAMILIES["bert"].head_prefixes
SUPPORTED_ARCHITECTURES = frozenset().union(*(f.architectures for f in hf_names.FAMILIES.values()))
_log = logging.getLogger(__name__)
_resolve_dir = hf_files.resolve_dir


def _read_config(directory: pathlib.Path) -> tuple[pathlib.Path, dict[str, Any]]:
  config_file = directory / "config.json"
  if not config_file.is_file():
    raise CheckpointImportError(f"missing config file: {config_file}")
  try:
    return config_file, json.loads(config_file.read_text())
  except json.JSONDecodeError as e:
    raise CheckpointImportError(f"{config_file}: invalid JSON ({e})") from e


def load_config(path: str | pathlib.Path | None = None, *, num_layers: int | None = None,
                dtype: Any = jnp.float32, **overrides: Any) -> Any:
  """Reads `config.json` of an HF directory (None: packaged MiniLM) into its family's config.

  A BertConfig for model_type 'bert' / 'roberta', a ModernBertConfig for 'modernbert'.
  `num_layers` keeps only the first N encoder layers; `overrides` set other config fields
  (e.g. remat=True, hidden_dropout_prob=0.0).
  """
  config_file, d = _read_config(_resolve_dir(path))
  try:
    family = hf_names.family_of(d.get("model_type", "bert"))
  except ValueError as e:
    raise CheckpointImportError(f"{config_file}: {e}") from e
  unsupported = [a for a in d.get("architectures") or [] if a not in family.architectures]
  if unsupported:
    raise CheckpointImportError(f"{config_file}: unsupported architecture(s) {unsupported}; "
                                f"supported: {sorted(family.architectures)}")
  try:
    config = family.config_cls.from_hf_dict(d, dtype=dtype, **overrides)
  except (ValueError, TypeError) as e:
    raise CheckpointImportError(f"{config_file}: {e}") from e
  if num_layers is not None:
    if not 1 <= num_layers <= config.num_hidden_layers:
      raise CheckpointImportError(f"num_layers={num_layers} must be in [1, "
                                  f"{config.num_hidden_layers}] for {config_file}")
    extra = {"layer_types": config.layer_types[:num_layers]} if hasattr(config, "layer_types") else {}
    config = dataclasses.replace(config, num_hidden_layers=num_layers, **extra)
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


def _name_map(config: Any) -> hf_names.NameMap:
  """HF tensor name (no base-model prefix) -> (NNX param path, transpose?) for every param."""
  return hf_names.family_of(config).names(config)


def _normalise_names(tensors: dict[str, np.ndarray],
                     family: hf_names.Family) -> dict[str, np.ndarray]:
  """Strips the base prefix, maps old `gamma`/`beta` names, drops buffers and heads (logged)."""
  out, heads = {}, []
  for name, array in tensors.items():
    if name.startswith(family.head_prefixes):
      heads.append(name)
      continue
    key = name.removeprefix(family.prefix)
    key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", re.sub(r"LayerNorm\.beta$",
                                                                   "LayerNorm.bias", key))
    if key in family.buffers:
      continue
    if key in out:
      raise CheckpointImportError(f"checkpoint holds {key!r} twice (with and without "
                                  f"{family.prefix!r})")
    out[key] = array
  if heads:
    _log.info("ignored %d non-encoder head tensors: %s", len(heads), sorted(heads))
  return out


def _params(model: nnx.Module) -> dict[tuple, nnx.Param]:
  params = {p: v for p, v in nnx.iter_graph(model) if isinstance(v, nnx.Param)}
  lora = sorted("/".join(map(str, p)) for p, v in params.items() if isinstance(v, nnx.LoRAParam))
  if lora:
    raise CheckpointImportError(f"the model holds LoRA adapters ({lora[0]}, ...): fold them in "
                                "with models.lora.merge_lora(model, domain) first")
  return params


def load_state_dict_into(model: nnx.Module, tensors: dict[str, np.ndarray], config: Any) -> None:
  """Copies HF-named `tensors` into `model` in place, after checking all of them first.

  Raises CheckpointImportError listing every unexpected tensor, missing tensor and shape
  mismatch (name, checkpoint shape, model shape); on error the model is left untouched.
  """
  family = hf_names.family_of(config)
  tensors = _normalise_names(tensors, family)
  names = family.names(config)
  params = _params(model)
  unmapped = sorted(set(params) - {path for path, _ in names.values()})
  if unmapped:  # The mapping no longer matches the model: a bug here, not in the checkpoint.
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
    raise CheckpointImportError(f"checkpoint does not fit the {config.model_type} config:\n  "
                                + "\n  ".join(problems))
  for name, (path, transpose) in names.items():
    array = tensors[name].T if transpose else tensors[name]
    params[path][...] = jnp.asarray(array, dtype=params[path].dtype)


def load_pretrained(path: str | pathlib.Path | None = None, *, num_layers: int | None = None,
                    dtype: Any = jnp.float32, rngs: nnx.Rngs | None = None,
                    **overrides: Any) -> nnx.Module:
  """The encoder of an HF directory (None: the packaged MiniLM), with its weights.

  A BertModel for BERT / RoBERTa, a ModernBertModel for ModernBERT (config.json's model_type).
  `num_layers` keeps the first N layers (the rest of the checkpoint is skipped on purpose);
  `rngs` seeds dropout (default nnx.Rngs(0)); `overrides` as in `load_config`.
  """
  directory = _resolve_dir(path)
  config = load_config(directory, num_layers=num_layers, dtype=dtype, **overrides)
  family = hf_names.family_of(config)
  tensors = _read_tensors(directory)
  if num_layers is not None:
    dropped = {k for k in tensors if (m := family.layer_re.match(k)) and int(m[1]) >= num_layers}
    tensors = {k: v for k, v in tensors.items() if k not in dropped}
    _log.info("num_layers=%d: skipped %d tensors of later layers", num_layers, len(dropped))
  model = family.model_cls(config, rngs=rngs if rngs is not None else nnx.Rngs(0))
  try:
    load_state_dict_into(model, tensors, config)
  except CheckpointImportError as e:
    raise CheckpointImportError(f"{directory}: {e}") from e
  return model


def export_pretrained(model: nnx.Module, directory: str | pathlib.Path) -> pathlib.Path:
  """Writes `config.json` + `model.safetensors` (float32) of `model` for transformers.

  `transformers.AutoModel.from_pretrained(directory)` (BertModel, RobertaModel or
  ModernBertModel by model_type) computes the same outputs; `load_pretrained(directory)` gives
  back the same parameters exactly. A tokenizer is not written: copy the checkpoint's own
  tokenizer files beside it. Raises CheckpointImportError for a model with LoRA adapters.
  """
  from safetensors.numpy import save_file  # pylint: disable=g-import-not-at-top
  config = model.config
  names = _name_map(config)
  params = _params(model)
  unmapped = sorted(set(params) - {path for path, _ in names.values()})
  if unmapped:
    raise CheckpointImportError(f"model parameters without a checkpoint name: {unmapped}")
  directory = pathlib.Path(directory).expanduser()
  directory.mkdir(parents=True, exist_ok=True)
  tensors = {}
  for name, (path, transpose) in names.items():
    array = np.asarray(params[path][...], np.float32)
    tensors[name] = np.ascontiguousarray(array.T if transpose else array)
  # transformers refuses safetensors files without format metadata.
  save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
  (directory / "config.json").write_text(json.dumps(config.to_hf_dict(), indent=2, sort_keys=True))
  return directory
