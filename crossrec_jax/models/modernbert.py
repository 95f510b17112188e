"""ModernBERT encoder as Flax NNX modules, numerically matching Hugging Face `ModernBertModel`.

Pre-LN transformer: token embeddings -> LayerNorm -> N x [x + attn(LN(x)); x + GeGLU-MLP(LN(x))]
-> final LayerNorm. Attention uses rotary position embeddings (no position table, no token types)
and alternates global layers with local ones that see only tokens within `local_attention // 2`
positions (HF `layer_types`: 'full_attention' | 'sliding_attention', each with its RoPE theta).
The first layer has no attention LayerNorm (HF uses Identity there); biases and LayerNorm biases
are optional (`attention_bias`, `mlp_bias`, `norm_bias`; all off in released checkpoints).

Module names follow HF (`layers/2/attn/Wqkv/kernel`, `layers/2/mlp/Wi/kernel`, `final_norm/scale`),
so the checkpoint names in `hf_names.py` read line by line. The call and output match `BertModel`
(`model(input_ids, attention_mask, token_type_ids=None, *, deterministic, domain)` ->
`BertOutput`), so a recommender takes either. ModernBERT has no pooler: `pooler_output` is the
final hidden state of the first token ([CLS]). Dropout: `hidden_dropout_prob` is HF's
embedding_dropout and mlp_dropout, `attention_probs_dropout_prob` its attention_dropout.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.models.bert import ACTIVATIONS, BertOutput
from crossrec_jax.models.lora import project
from crossrec_jax.models.partitioning import constrain

LAYER_TYPES = ("full_attention", "sliding_attention")


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
  """Architecture (HF `ModernBertConfig` fields and defaults) plus how to compute it."""
  vocab_size: int = 50368
  hidden_size: int = 768
  intermediate_size: int = 1152
  num_hidden_layers: int = 22
  num_attention_heads: int = 12
  hidden_act: str = "gelu"
  max_position_embeddings: int = 8192
  norm_eps: float = 1e-5
  norm_bias: bool = False
  attention_bias: bool = False
  mlp_bias: bool = False
  local_attention: int = 128
  layer_types: tuple[str, ...] = ()  # () = every 3rd layer global, from layer 0 (HF default).
  global_rope_theta: float = 160000.0
  local_rope_theta: float = 10000.0
  pad_token_id: int = 50283
  hidden_dropout_prob: float = 0.0
  attention_probs_dropout_prob: float = 0.0
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat: bool = False
  model_type: str = "modernbert"

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                 "num_attention_heads", "max_position_embeddings", "local_attention"):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"ModernBertConfig.{name} must be a positive int, got {value!r}")
    if self.hidden_size % self.num_attention_heads or self.head_dim % 2:
      raise ValueError(f"ModernBertConfig.hidden_size={self.hidden_size} must split into "
                       f"{self.num_attention_heads} heads of even size")
    if self.hidden_act not in ACTIVATIONS:
      raise ValueError(f"ModernBertConfig.hidden_act={self.hidden_act!r} is not supported; "
                       f"supported: {sorted(ACTIVATIONS)}")
    types = tuple(self.layer_types) or tuple(
        "sliding_attention" if i % 3 else "full_attention" for i in range(self.num_hidden_layers))
    if len(types) != self.num_hidden_layers or set(types) - set(LAYER_TYPES):
      raise ValueError(f"ModernBertConfig.layer_types must be {self.num_hidden_layers} of "
                       f"{LAYER_TYPES}, got {list(types)}")
    object.__setattr__(self, "layer_types", types)
    object.__setattr__(self, "dtype", np.dtype(self.dtype))
    object.__setattr__(self, "param_dtype", np.dtype(self.param_dtype))
    if self.dtype not in (np.dtype(jnp.float32), np.dtype(jnp.bfloat16)):
      raise ValueError(f"ModernBertConfig.dtype must be float32 or bfloat16, got {self.dtype}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_hf_dict(cls, d: dict[str, Any], **overrides: Any) -> ModernBertConfig:
    """From an HF ModernBERT `config.json` dict (v5 `rope_parameters` or v4 `*_rope_theta`)."""
    if d.get("model_type", "modernbert") != "modernbert":
      raise ValueError(f"model_type {d.get('model_type')!r} is not 'modernbert'")
    rope = d.get("rope_parameters") or {}
    kw = {k: d[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "max_position_embeddings", "norm_eps",
                            "norm_bias", "attention_bias", "mlp_bias", "local_attention",
                            "pad_token_id") if k in d}
    kw["hidden_act"] = d.get("hidden_activation", "gelu")
    n = kw.get("num_hidden_layers", cls.num_hidden_layers)
    every = d.get("global_attn_every_n_layers", 3)
    kw["layer_types"] = tuple(d.get("layer_types") or (
        "sliding_attention" if i % every else "full_attention" for i in range(n)))
    kw["global_rope_theta"] = float((rope.get("full_attention") or {}).get(
        "rope_theta", d.get("global_rope_theta", cls.global_rope_theta)))
    kw["local_rope_theta"] = float((rope.get("sliding_attention") or {}).get(
        "rope_theta", d.get("local_rope_theta", cls.local_rope_theta)))
    kw["hidden_dropout_prob"] = float(d.get("mlp_dropout", 0.0))
    kw["attention_probs_dropout_prob"] = float(d.get("attention_dropout", 0.0))
    return cls(**{**kw, **overrides})

  def to_hf_dict(self) -> dict[str, Any]:
    """The HF `config.json` of this architecture (transformers' ModernBertModel)."""
    d = {k: getattr(self, k) for k in ("vocab_size", "hidden_size", "intermediate_size",
                                       "num_hidden_layers", "num_attention_heads",
                                       "max_position_embeddings", "norm_eps", "norm_bias",
                                       "attention_bias", "mlp_bias", "local_attention",
                                       "pad_token_id", "model_type")}
    return {**d, "architectures": ["ModernBertModel"], "hidden_activation": self.hidden_act,
            "layer_types": list(self.layer_types), "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": self.global_rope_theta},
                "sliding_attention": {"rope_type": "default", "rope_theta": self.local_rope_theta}},
            "embedding_dropout": self.hidden_dropout_prob, "mlp_dropout": self.hidden_dropout_prob,
            "attention_dropout": self.attention_probs_dropout_prob, "torch_dtype": "float32"}


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """RoPE on [B, L, heads, d] in float32, halves rotated (HF `rotate_half`, not interleaved)."""
  d = x.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, d, 2, dtype=jnp.float32) / d))
  freqs = positions[:, None].astype(jnp.float32) * inv_freq[None, :]
  emb = jnp.concatenate([freqs, freqs], axis=-1)[None, :, None, :]
  xf = x.astype(jnp.float32)
  half = jnp.concatenate([-xf[..., d // 2:], xf[..., :d // 2]], axis=-1)
  return (xf * jnp.cos(emb) + half * jnp.sin(emb)).astype(x.dtype)


class ModernBertAttention(nnx.Module):
  """Fused-QKV self-attention with RoPE; global or sliding-window by layer type."""

  def __init__(self, config: ModernBertConfig, layer_type: str, *, rngs: nnx.Rngs):
    h = config.hidden_size
    lin = dict(use_bias=config.attention_bias, dtype=config.dtype,
               param_dtype=config.param_dtype, rngs=rngs)
    self.Wqkv = nnx.Linear(h, 3 * h, **lin)
    self.Wo = nnx.Linear(h, h, **lin)
    self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
    self.window = config.local_attention // 2 if layer_type == "sliding_attention" else None
    self.theta = (config.local_rope_theta if layer_type == "sliding_attention"
                  else config.global_rope_theta)
    self.attention_dropout = nnx.Dropout(config.attention_probs_dropout_prob, rngs=rngs)
    self.out_drop = nnx.Dropout(config.attention_probs_dropout_prob, rngs=rngs)

  def __call__(self, x, mask_bias, *, deterministic: bool, domain=None) -> jax.Array:
    b, l, _ = x.shape
    qkv = project(self.Wqkv, x, domain).reshape(b, l, 3, self.num_heads, self.head_dim)
    positions = jnp.arange(l)
    q, k = (rotary(qkv[:, :, i], positions, self.theta) for i in (0, 1))
    q, k, v = (constrain(t, "batch", "length", "heads", "head_dim") for t in (q, k, qkv[:, :, 2]))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k).astype(jnp.float32) * self.head_dim ** -0.5
    bias = mask_bias
    if self.window is not None:  # |q - k| <= window, as HF's bidirectional sliding mask.
      near = jnp.abs(positions[:, None] - positions[None, :]) <= self.window
      bias = jnp.where(near[None, None], mask_bias, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores + bias, axis=-1).astype(x.dtype)
    probs = self.attention_dropout(probs, deterministic=deterministic)
    context = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, l, -1)
    return self.out_drop(project(self.Wo, context, domain), deterministic=deterministic)


class ModernBertMLP(nnx.Module):
  """GeGLU: Wi -> (input, gate) -> act(input) * gate -> dropout -> Wo."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    lin = dict(use_bias=config.mlp_bias, dtype=config.dtype, param_dtype=config.param_dtype,
               rngs=rngs)
    self.Wi = nnx.Linear(config.hidden_size, 2 * config.intermediate_size, **lin)
    self.Wo = nnx.Linear(config.intermediate_size, config.hidden_size, **lin)
    self.drop = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)
    self.hidden_act = config.hidden_act

  def __call__(self, x, *, deterministic: bool, domain=None) -> jax.Array:
    inp, gate = jnp.split(project(self.Wi, x, domain), 2, axis=-1)
    h = constrain(ACTIVATIONS[self.hidden_act](inp) * gate, "batch", "length", "mlp")
    return project(self.Wo, self.drop(h, deterministic=deterministic), domain)


def _norm(config: ModernBertConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
  return nnx.LayerNorm(config.hidden_size, epsilon=config.norm_eps, use_bias=config.norm_bias,
                       dtype=config.dtype, param_dtype=config.param_dtype, rngs=rngs)


class ModernBertLayer(nnx.Module):
  """x + attn(attn_norm(x)), then x + mlp(mlp_norm(x)); layer 0 has no attn_norm."""

  def __init__(self, config: ModernBertConfig, index: int, *, rngs: nnx.Rngs):
    self.attn_norm = _norm(config, rngs) if index else None
    self.attn = ModernBertAttention(config, config.layer_types[index], rngs=rngs)
    self.mlp_norm = _norm(config, rngs)
    self.mlp = ModernBertMLP(config, rngs=rngs)

  def __call__(self, x, mask_bias, *, deterministic: bool, domain=None) -> jax.Array:
    h = self.attn_norm(x) if self.attn_norm is not None else x
    x = x + self.attn(h, mask_bias, deterministic=deterministic, domain=domain)
    return x + self.mlp(self.mlp_norm(x), deterministic=deterministic, domain=domain)


class ModernBertEmbeddings(nnx.Module):
  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.tok_embeddings = nnx.Embed(config.vocab_size, config.hidden_size,
                                    dtype=config.param_dtype, param_dtype=config.param_dtype,
                                    rngs=rngs)
    self.norm = _norm(config, rngs)
    self.drop = nnx.Dropout(config.hidden_dropout_prob, rngs=rngs)

  def __call__(self, input_ids, *, deterministic: bool) -> jax.Array:
    return self.drop(self.norm(self.tok_embeddings(input_ids)), deterministic=deterministic)


class ModernBertModel(nnx.Module):
  """ModernBERT encoder; the NNX counterpart of `transformers.ModernBertModel`."""

  def __init__(self, config: ModernBertConfig, *, rngs: nnx.Rngs):
    self.config = config
    self.embeddings = ModernBertEmbeddings(config, rngs=rngs)
    self.layers = nnx.List([ModernBertLayer(config, i, rngs=rngs)
                            for i in range(config.num_hidden_layers)])
    self.final_norm = _norm(config, rngs)

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               token_type_ids: jax.Array | None = None, *, deterministic: bool = True,
               domain: jax.Array | None = None) -> BertOutput:
    """As `BertModel.__call__`; `token_type_ids` must be None or all zero (no segment table)."""
    del token_type_ids  # ModernBERT has no token types; the tokenizer's are all 0.
    if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
      raise ValueError(f"input_ids must be [B, L] and attention_mask the same shape; got "
                       f"{input_ids.shape} and {attention_mask.shape}")
    neg = jnp.finfo(jnp.float32).min
    mask_bias = jnp.where(attention_mask[:, None, None, :] > 0, 0.0, neg).astype(jnp.float32)
    x = self.embeddings(input_ids, deterministic=deterministic)
    run = lambda layer, h, m, d: layer(h, m, deterministic=deterministic, domain=d)
    if self.config.remat:
      run = nnx.remat(run, graph=False)  # Tree mode: see bert.BertEncoder.
    for layer in self.layers:
      x = constrain(run(layer, x, mask_bias, domain), "batch", "length", "embed")
    x = self.final_norm(x)
    return BertOutput(last_hidden_state=x, pooler_output=x[:, 0])
