"""BERT encoder as Flax NNX modules, numerically matching Hugging Face `BertModel`.

Post-LN transformer (as in the original BERT): embeddings (word + absolute position +
token type) -> LayerNorm -> dropout -> N x [self-attention -> add & LayerNorm -> FFN (exact erf
GELU) -> add & LayerNorm] -> pooler (dense + tanh on the [CLS] position). `model_type='roberta'`
is the same network with RoBERTa's position ids (matching `transformers.RobertaModel`).
Projections may carry LoRA adapters (`models/lora.py`); `domain` is passed down to them.

Module names follow HF so that the checkpoint mapping (`hf_import.py`) reads line by line and
sharding rules are natural regexes over parameter paths, e.g.
`encoder/layer/3/attention/query/kernel`, `encoder/layer/3/intermediate/kernel`,
`embeddings/word_embeddings/embedding`, `pooler/kernel`. HF's `attention.self.*` and
`attention.output.dense` are flattened into `attention.{query,key,value,output}`.

Sharding: under `jax.set_mesh(mesh)` the residual stream, q/k/v and the MLP intermediate are
pinned with `models/partitioning.constrain` (batch over data+fsdp, heads and the MLP width over
tensor); without a mesh the calls are no-ops.

Mixed precision: parameters are kept in `param_dtype` (float32); matmuls run in `dtype`
(float32 or bfloat16). Attention softmax and LayerNorm statistics are computed in float32
either way, which costs little and keeps bfloat16 close to float32 (see tests/test_hf_import.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.models.lora import project
from crossrec_jax.models.partitioning import constrain

# HF `ACT2FN` names -> JAX. HF "gelu" is the exact erf form, not the tanh approximation.
ACTIVATIONS = {
  "gelu": functools.partial(jax.nn.gelu, approximate=False),
  "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
  "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
  "relu": jax.nn.relu,
}
_COMPUTE_DTYPES = (np.dtype(jnp.float32), np.dtype(jnp.bfloat16))
# Checkpoint families this module computes exactly: RoBERTa is BERT with position ids counted
# from pad_token_id + 1 over the non-padding tokens (HF `create_position_ids_from_input_ids`).
MODEL_TYPES = ("bert", "roberta")
# How attention is computed (BertConfig.attention). 'einsum' is the reference (HF's math, with
# attention-probability dropout); the others call `jax.nn.dot_product_attention`: 'xla' its XLA
# path, 'cudnn' cuDNN's fused flash kernel (GPU, bfloat16, right-padded masks). Neither of those
# can drop attention probabilities, so they need attention_probs_dropout_prob=0.
ATTENTION_IMPLS = ("einsum", "xla", "cudnn")
# Fields read from an HF config.json; everything else there is ignored (HF writes many extras).
_HF_FIELDS = (
  "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
  "hidden_act", "hidden_dropout_prob", "attention_probs_dropout_prob",
  "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "pad_token_id",
)


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """Architecture (HF `BertConfig` fields and defaults) plus how to compute it.

  `dtype` is the compute dtype (float32 or bfloat16), `param_dtype` the storage dtype of the
  parameters (float32: master weights for mixed precision), `remat` recomputes each layer's
  activations in the backward pass (`nnx.remat`) to trade compute for memory. `model_type`
  'roberta' numbers positions as RoBERTa does (from pad_token_id + 1, padding at pad_token_id).
  """
  model_type: str = "bert"
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  hidden_dropout_prob: float = 0.1
  attention_probs_dropout_prob: float = 0.1
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  attention: str = "einsum"

  def __post_init__(self):
    if self.model_type not in MODEL_TYPES:
      raise ValueError(f"unsupported model_type {self.model_type!r}: supported {MODEL_TYPES}")
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"BertConfig.{name} must be a positive int, got {value!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"BertConfig.hidden_size={self.hidden_size} is not divisible by "
                       f"num_attention_heads={self.num_attention_heads}")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"BertConfig.hidden_act={self.hidden_act!r} is not supported; "
                       f"supported: {sorted(ACTIVATIONS)}")
    for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ValueError(f"BertConfig.{name} must be in [0, 1), got {getattr(self, name)!r}")
    if self.attention not in ATTENTION_IMPLS:
      raise ValueError(f"BertConfig.attention={self.attention!r}; choose one of {ATTENTION_IMPLS}")
    if self.attention != "einsum" and self.attention_probs_dropout_prob:
      raise ValueError(f"BertConfig.attention={self.attention!r} cannot drop attention "
                       f"probabilities: set attention_probs_dropout_prob=0 (got "
                       f"{self.attention_probs_dropout_prob}) or use attention='einsum'")
    if not self.layer_norm_eps > 0:
      raise ValueError(f"BertConfig.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}")
    # Normalise dtypes ("bfloat16", jnp.bfloat16, np.dtype(...)) so configs compare equal.
    object.__setattr__(self, "dtype", np.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", np.dtype(self.param_dtype))
    if self.dtype not in _COMPUTE_DTYPES:
      raise ValueError(f"BertConfig.dtype must be float32 or bfloat16, got {self.dtype}")
    if self.param_dtype != np.dtype(jnp.float32):
      raise ValueError(f"BertConfig.param_dtype must be float32 (master weights), "
                       f"got {self.param_dtype}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> BertConfig:
    """Builds a config from an HF `config.json` dict; `overrides` set any field (e.g. dtype).

    Unknown keys are ignored (HF writes many, including its own `dtype`, which is not our
    compute dtype). An override wins over the same field of `d` (e.g. hidden_dropout_prob=0.0
    for a checkpoint whose config.json says 0.1). Raises ValueError for a model_type other than
    those of MODEL_TYPES, a non-absolute position embedding, a decoder config, or an unsupported
    `hidden_act`.
    """
    model_type = d.get("model_type", "bert")
    if model_type not in MODEL_TYPES:
      raise ValueError(f"unsupported model_type {model_type!r}: supported {MODEL_TYPES}")
    pos_type = d.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ValueError(f"unsupported position_embedding_type {pos_type!r}: only 'absolute'")
    if d.get("is_decoder") or d.get("add_cross_attention"):
      raise ValueError("decoder / cross-attention BERT configs are not supported")
    return cls(**{**{k: d[k] for k in _HF_FIELDS if k in d}, **overrides})

  def to_hf_dict(self) -> dict[str, Any]:
    """The HF `config.json` of this architecture (transformers' BertModel / RobertaModel)."""
    arch = {"bert": "BertModel", "roberta": "RobertaModel"}[self.model_type]
    d = {k: getattr(self, k) for k in _HF_FIELDS}
    return {**d, "architectures": [arch], "position_embedding_type": "absolute",
            "initializer_range": 0.02, "torch_dtype": "float32"}


class BertOutput(NamedTuple):
  last_hidden_state: jax.Array  # [B, L, H], compute dtype.
  pooler_output: jax.Array  # [B, H], tanh(dense(last_hidden_state[:, 0])).


def _dense(config: BertConfig, d_in: int, d_out: int, rngs: nnx.Rngs) -> nnx.Linear:
  return nnx.Linear(d_in, d_out, dtype=config.dtype, param_dtype=config.param_dtype,
                    kernel_init=nnx.initializers.normal(0.02), rngs=rngs)  # HF init_range.


def _layer_norm(config: BertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Flax computes the statistics in float32 even for bfloat16 inputs; output is `dtype`.
  return nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, dtype=config.dtype,
                       param_dtype=config.param_dtype, rngs=rngs)


class BertEmbeddings(nnx.Module):
  """Word + absolute position + token-type embeddings, LayerNorm, dropout."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    # Lookups stay in param_dtype: the three-way sum is cheap and more accurate in float32.
    embed = functools.partial(nnx.Embed, features=config.hidden_size,
                              dtype=config.param_dtype, param_dtype=config.param_dtype,
                              embedding_init=nnx.initializers.normal(0.02), rngs=rngs)
    self.word_embeddings = embed(config.vocab_size)
    self.position_embeddings = embed(config.max_position_embeddings)
    self.token_type_embeddings = embed(config.type_vocab_size)
    self.layer_norm = _layer_norm(config, rngs)
    self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
    self.model_type, self.pad_token_id = config.model_type, config.pad_token_id

  def __call__(self, input_ids, token_type_ids, *, deterministic: bool,
               inputs_embeds=None) -> jax.Array:
    positions = jnp.arange(input_ids.shape[1])[None, :]
    if self.model_type == "roberta":  # Counted over non-pad ids (not the mask), as HF does.
      real = (input_ids != self.pad_token_id).astype(jnp.int32)
      positions = jnp.cumsum(real, axis=1) * real + self.pad_token_id
    # `inputs_embeds` [B, L, H] replaces the word-embedding lookup (integrated gradients
    # differentiate with respect to it, crossrec_jax/explain/); positions still come from ids.
    words = self.word_embeddings(input_ids) if inputs_embeds is None else inputs_embeds
    x = (words + self.position_embeddings(positions)
         + self.token_type_embeddings(token_type_ids))
    return self.dropout(self.layer_norm(x), deterministic=deterministic)


class BertAttention(nnx.Module):
  """Multi-head self-attention + output projection + residual + LayerNorm (post-LN)."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    h = config.hidden_size
    self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
    self.impl = config.attention
    self.query, self.key, self.value = (_dense(config, h, h, rngs) for _ in range(3))
    self.output = _dense(config, h, h, rngs)
    self.layer_norm = _layer_norm(config, rngs)
    self.attention_dropout = nnx.Dropout(config.attention_probs_dropout_prob, rngs=rngs)
    self.output_dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

  def __call__(self, x, mask_bias, *, deterministic: bool, domain=None) -> jax.Array:
    b, l, _ = x.shape
    heads = lambda t: t.reshape(b, l, self.num_heads, self.head_dim)
    # Pinned head-split (tensor parallelism) and batch-split (data/fsdp) under a mesh.
    q, k, v = (constrain(heads(t), "batch", "length", "heads", "head_dim")
               for t in (project(m, x, domain) for m in (self.query, self.key, self.value)))
    if self.impl == "einsum":
      scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(self.head_dim)
      # Softmax in float32: bf16 exp/sum loses ~3 digits; [B, h, L, L] in f32 is affordable.
      probs = jax.nn.softmax(scores.astype(jnp.float32) + mask_bias, axis=-1).astype(x.dtype)
      probs = self.attention_dropout(probs, deterministic=deterministic)
      context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, -1)
    else:
      context = _fused_attention(q, k, v, mask_bias, self.impl).reshape(b, l, -1)
    out = self.output_dropout(project(self.output, context, domain), deterministic=deterministic)
    return self.layer_norm(out + x)


def _fused_attention(q, k, v, mask_bias, impl: str) -> jax.Array:
  """`jax.nn.dot_product_attention` on [B, L, h, d]; `mask_bias` is the [B, 1, 1, L] additive mask.

  cuDNN takes padding as key lengths (the count of unmasked keys: exact for right-padded rows,
  which is what `data/pipeline.collate` produces); XLA takes the additive bias as it is.
  """
  if impl == "cudnn":
    lengths = jnp.sum(mask_bias[:, 0, 0, :] == 0, axis=-1).astype(jnp.int32)
    return jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                        implementation="cudnn")
  return jax.nn.dot_product_attention(q, k, v, bias=mask_bias.astype(q.dtype),
                                      implementation="xla")


class BertLayer(nnx.Module):
  """One transformer block: attention, then FFN with residual + LayerNorm."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.attention = BertAttention(config, rngs=rngs)
    self.intermediate = _dense(config, config.hidden_size, config.intermediate_size, rngs)
    self.output = _dense(config, config.intermediate_size, config.hidden_size, rngs)
    self.output_layer_norm = _layer_norm(config, rngs)
    self.dropout = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
    self.hidden_act = config.hidden_act

  def __call__(self, x, mask_bias, *, deterministic: bool, domain=None) -> jax.Array:
    x = self.attention(x, mask_bias, deterministic=deterministic, domain=domain)
    h = ACTIVATIONS[self.hidden_act](project(self.intermediate, x, domain))
    h = constrain(h, "batch", "length", "mlp")
    h = self.dropout(project(self.output, h, domain), deterministic=deterministic)
    return self.output_layer_norm(h + x)


class BertEncoder(nnx.Module):
  """The stack of `num_hidden_layers` BertLayers, optionally rematerialised per layer."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.layer = nnx.List([BertLayer(config, rngs=rngs) for _ in range(config.num_hidden_layers)])
    self.remat = config.remat

  def __call__(self, x, mask_bias, *, deterministic: bool, domain=None) -> jax.Array:
    run = lambda layer, h, m, d: layer(h, m, deterministic=deterministic, domain=d)
    if self.remat:
      # Tree mode: graph mode writes every Variable back after the checkpoint, which raises
      # TraceContextError for RngCount under jax.grad even when dropout is off (flax 0.12.8).
      run = nnx.remat(run, graph=False)
    for layer in self.layer:
      # Residual stream split over the batch only: without the pin GSPMD may keep a layout
      # that replicates it over 'fsdp' after the all-gathered weights' matmuls.
      x = constrain(run(layer, x, mask_bias, domain), "batch", "length", "embed")
    return x


class BertModel(nnx.Module):
  """BERT encoder with pooler; the NNX counterpart of `transformers.BertModel`."""

  def __init__(self, config: BertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = BertEmbeddings(config, rngs=rngs)
    self.encoder = BertEncoder(config, rngs=rngs)
    self.pooler = _dense(config, config.hidden_size, config.hidden_size, rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               token_type_ids: jax.Array | None = None, *,
               deterministic: bool = True, domain: jax.Array | None = None,
               inputs_embeds: jax.Array | None = None) -> BertOutput:
    """Encodes a batch.

    Args:
      input_ids: int [B, L] token ids, L <= max_position_embeddings.
      attention_mask: [B, L], 1 (or True) for real tokens and 0 for padding.
      token_type_ids: int [B, L] segment ids; zeros when None.
      deterministic: when False, dropout is applied using the rngs' 'dropout' stream.
      domain: int [B] domain of each row (0 source, 1 target); read only by per-domain LoRA
        adapters (`models/lora.py`), ignored otherwise.
      inputs_embeds: float [B, L, H] word embeddings used instead of looking up `input_ids`
        (which still give the positions); None: the lookup.

    Returns:
      BertOutput in the compute dtype. Hidden states at padded positions are computed but
      meaningless; a fully padded row gives finite (not NaN) outputs.
    """
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(f"input_ids must be [B, L] and attention_mask the same shape; got "
                       f"{input_ids.shape} and {attention_mask.shape}")
    # RoBERTa's positions start after pad_token_id (514 position rows hold 512 tokens).
    offset = self.config.pad_token_id + 1 if self.config.model_type == "roberta" else 0
    if input_ids.shape[1] + offset > self.config.max_position_embeddings:
      raise ValueError(f"sequence length {input_ids.shape[1]} exceeds max_position_embeddings="
                       f"{self.config.max_position_embeddings}"
                       f"{f' - {offset} (RoBERTa position offset)' if offset else ''}")
    if token_type_ids is None:
      token_type_ids = jnp.zeros_like(input_ids)
    # Additive mask: the compute dtype's most negative finite value. Adding small logits to it
    # rounds back to it (no -inf), so even an all-padding row softmaxes to uniform, not NaN.
    neg = jnp.finfo(self.config.dtype).min
    mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, neg).astype(jnp.float32)
    x = self.embeddings(input_ids, token_type_ids, deterministic=deterministic,
                        inputs_embeds=inputs_embeds)
    x = self.encoder(x, mask_bias, deterministic=deterministic, domain=domain)
    pooled = jnp.tanh(self.pooler(x[:, 0]))
    return BertOutput(last_hidden_state=x, pooler_output=pooled)


def bert_param_count(config: BertConfig) -> int:
  """Number of trainable parameters (analytic; equals the model's nnx.Param state size)."""
  h, i = config.hidden_size, config.intermediate_size
  embeddings = (config.vocab_size + config.max_position_embeddings + config.type_vocab_size) * h
  embeddings += 2 * h  # LayerNorm scale + bias.
  attention = 4 * (h * h + h) + 2 * h
  ffn = (h * i + i) + (i * h + h) + 2 * h
  pooler = h * h + h
  return embeddings + config.num_hidden_layers * (attention + ffn) + pooler
