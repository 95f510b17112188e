"""Checkpoint families: HF tensor names <-> our NNX parameter paths, per `model_type`.

Each `Family` says which config and model class a `config.json` builds, which architectures
it accepts, the base-model prefix of task checkpoints (`bert.`, `roberta.`, `model.`), the head
tensors to skip, and `names(config)`: HF tensor name (without prefix) -> (NNX path,
transpose?) for every parameter. torch Linear weights are (out, in): transposed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from crossrec_jax.models import bert, modernbert

NameMap = dict[str, tuple[tuple[str | int, ...], bool]]

# HF per-layer module -> our path below encoder/layer/<i> (BERT and RoBERTa).
_BERT_LINEARS = {
  "attention.self.query": ("attention", "query"), "attention.self.key": ("attention", "key"),
  "attention.self.value": ("attention", "value"),
  "attention.output.dense": ("attention", "output"),
  "intermediate.dense": ("intermediate",), "output.dense": ("output",),
}
_BERT_NORMS = {"attention.output.LayerNorm": ("attention", "layer_norm"),
               "output.LayerNorm": ("output_layer_norm",)}


class Family(NamedTuple):
  config_cls: Any  # .from_hf_dict(d, **overrides), .to_hf_dict()
  model_cls: Any
  names: Callable[[Any], NameMap]
  prefix: str  # Base-model prefix in task checkpoints (stripped when present).
  architectures: frozenset[str]
  head_prefixes: tuple[str, ...]  # Task-head tensors, skipped (logged).
  buffers: tuple[str, ...]  # Non-parameter tensors, skipped silently.
  layer_re: re.Pattern  # Matches a layer tensor; group 1 is its index.


class _Names:
  """Builds a NameMap: linear / norm / embedding entries."""

  def __init__(self):
    self.map: NameMap = {}

  def linear(self, hf: str, path: tuple, bias: bool = True) -> None:
    self.map[f"{hf}.weight"] = (path + ("kernel",), True)
    if bias:
      self.map[f"{hf}.bias"] = (path + ("bias",), False)

  def norm(self, hf: str, path: tuple, bias: bool = True) -> None:
    self.map[f"{hf}.weight"] = (path + ("scale",), False)
    if bias:
      self.map[f"{hf}.bias"] = (path + ("bias",), False)

  def embed(self, hf: str, path: tuple) -> None:
    self.map[f"{hf}.weight"] = (path + ("embedding",), False)


def bert_names(config: bert.BertConfig) -> NameMap:
  n = _Names()
  for kind in ("word", "position", "token_type"):
    n.embed(f"embeddings.{kind}_embeddings", ("embeddings", f"{kind}_embeddings"))
  n.norm("embeddings.LayerNorm", ("embeddings", "layer_norm"))
  for i in range(config.num_hidden_layers):
    for hf, path in _BERT_LINEARS.items():
      n.linear(f"encoder.layer.{i}.{hf}", ("encoder", "layer", i) + path)
    for hf, path in _BERT_NORMS.items():
      n.norm(f"encoder.layer.{i}.{hf}", ("encoder", "layer", i) + path)
  n.linear("pooler.dense", ("pooler",))
  return n.map


def modernbert_names(config: modernbert.ModernBertConfig) -> NameMap:
  n, nb = _Names(), config.norm_bias
  n.embed("embeddings.tok_embeddings", ("embeddings", "tok_embeddings"))
  n.norm("embeddings.norm", ("embeddings", "norm"), nb)
  for i in range(config.num_hidden_layers):
    p = ("layers", i)
    if i:  # Layer 0's attention norm is an Identity in HF.
      n.norm(f"layers.{i}.attn_norm", p + ("attn_norm",), nb)
    n.linear(f"layers.{i}.attn.Wqkv", p + ("attn", "Wqkv"), config.attention_bias)
    n.linear(f"layers.{i}.attn.Wo", p + ("attn", "Wo"), config.attention_bias)
    n.norm(f"layers.{i}.mlp_norm", p + ("mlp_norm",), nb)
    n.linear(f"layers.{i}.mlp.Wi", p + ("mlp", "Wi"), config.mlp_bias)
    n.linear(f"layers.{i}.mlp.Wo", p + ("mlp", "Wo"), config.mlp_bias)
  n.norm("final_norm", ("final_norm",), nb)
  return n.map


def _tasks(base: str) -> frozenset[str]:
  return frozenset({f"{base}Model", f"{base}ForMaskedLM", f"{base}ForSequenceClassification",
                    f"{base}ForTokenClassification", f"{base}ForQuestionAnswering",
                    f"{base}ForMultipleChoice"})


_BERT_LAYER = re.compile(r"^(?:bert\.|roberta\.)?encoder\.layer\.(\d+)\.")
FAMILIES: dict[str, Family] = {
  "bert": Family(bert.BertConfig, bert.BertModel, bert_names, "bert.",
                 _tasks("Bert") | {"BertForPreTraining", "BertForNextSentencePrediction"},
                 ("cls.", "classifier.", "qa_outputs."), ("embeddings.position_ids",), _BERT_LAYER),
  "roberta": Family(bert.BertConfig, bert.BertModel, bert_names, "roberta.", _tasks("Roberta"),
                    ("lm_head.", "classifier.", "qa_outputs."),
                    ("embeddings.position_ids", "embeddings.token_type_ids"), _BERT_LAYER),
  "modernbert": Family(modernbert.ModernBertConfig, modernbert.ModernBertModel, modernbert_names,
                       "model.", _tasks("ModernBert"),
                       ("head.", "decoder.", "classifier.", "qa_outputs."), (),
                       re.compile(r"^(?:model\.)?layers\.(\d+)\.")),
}


def family_of(config_or_type: Any) -> Family:
  """The Family of a model_type string or of one of our config objects."""
  model_type = getattr(config_or_type, "model_type", config_or_type)
  if model_type not in FAMILIES:
    raise ValueError(f"unsupported model_type {model_type!r}: supported {sorted(FAMILIES)}")
  return FAMILIES[model_type]
