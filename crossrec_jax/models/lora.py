"""LoRA adapters on an encoder's projections, optionally one adapter set per domain.

`apply_lora(encoder, LoraConfig(rank=8, alpha=16, targets=...))` swaps, in place, every targeted
`nnx.Linear` of the layer stack for a `LoRALinear`: the same kernel and bias Variables (so their
parameter paths, checkpoint names and sharding rules do not change) plus a low-rank update

    y = x W + b + (alpha / rank) * (x A_d) B_d        A_d: [in, rank], B_d: [rank, out]

stored under the `lora` segment of the path (`encoder/layer/3/attention/query/lora/a`), which is
what `train.optim.label_params` keys the 'lora' optimiser group on. B starts at zero, so an
adapted model computes exactly the base model's outputs until it is trained.

Per-domain adapters (`num_domains=2`): one (A, B) pair per domain on the shared base; each row
uses the pair of its domain (the batch's 'domain' column: 0 source, 1 target), passed down as
`encoder(..., domain=batch['domain'])`. `merge_lora(encoder, domain=d)` folds the adapter of
domain d into the base kernels and returns a plain encoder (for `hf_import.export_pretrained`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["DEFAULT_TARGETS", "LoraConfig", "LoRALinear", "project", "apply_lora", "merge_lora",
           "from_config", "lora_param_count"]

# Per model_type, the path suffixes of every projection in a layer (the default targets):
# BERT/RoBERTa ('output' matches both the attention output and the FFN output) and ModernBERT
# (Wqkv; Wo matches the attention and the MLP output; Wi).
_BERT_TARGETS = ("query", "key", "value", "output", "intermediate")
DEFAULT_TARGETS = {"bert": _BERT_TARGETS, "roberta": _BERT_TARGETS,
                   "modernbert": ("Wqkv", "Wo", "Wi")}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """rank: of A and B (0 = no LoRA); alpha: the update is scaled by alpha / rank; targets: path
  suffixes ('query', 'attention/output', ...) of the Linear layers to adapt inside the layer
  stack, () = every projection of the family (DEFAULT_TARGETS); num_domains: adapter sets (1 = shared, 2 = one per domain)."""
  rank: int = 8
  alpha: float = 16.0
  targets: tuple[str, ...] = ()
  num_domains: int = 1

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    if not isinstance(self.rank, int) or isinstance(self.rank, bool) or self.rank < 1:
      raise ValueError(f"model.encoder.lora.rank must be a positive int, got {self.rank!r}")
    if not self.alpha > 0:
      raise ValueError(f"model.encoder.lora.alpha must be > 0, got {self.alpha!r}")
    if not all(isinstance(t, str) and t for t in self.targets):
      raise ValueError(f"model.encoder.lora.targets must be names, got {self.targets!r}")
    if self.num_domains not in (1, 2):
      raise ValueError(f"model.encoder.lora.num_domains must be 1 or 2, got {self.num_domains!r}")

  @property
  def scale(self) -> float:
    return self.alpha / self.rank


class LoRAWeights(nnx.Module):
  """A: [domains, in, rank] (He-uniform), B: [domains, rank, out] (zeros)."""

  def __init__(self, d_in: int, d_out: int, cfg: LoraConfig, param_dtype: Any, rngs: nnx.Rngs):
    init_a = jax.nn.initializers.he_uniform(in_axis=-2, out_axis=-1, batch_axis=(0,))
    self.a = nnx.LoRAParam(init_a(rngs.params(), (cfg.num_domains, d_in, cfg.rank), param_dtype))
    self.b = nnx.LoRAParam(jnp.zeros((cfg.num_domains, cfg.rank, d_out), param_dtype))


class LoRALinear(nnx.Linear):
  """An `nnx.Linear` (same kernel/bias Variables as `base`) plus a LoRA update."""

  def __init__(self, base: nnx.Linear, cfg: LoraConfig, *, rngs: nnx.Rngs):
    d_in, d_out = base.in_features, base.out_features
    zeros = nnx.initializers.zeros
    super().__init__(d_in, d_out, use_bias=base.use_bias, dtype=base.dtype,
                     param_dtype=base.param_dtype, precision=base.precision, kernel_init=zeros,
                     bias_init=zeros, rngs=nnx.Rngs(0))
    self.kernel, self.bias = base.kernel, base.bias  # Shared, not copied: the frozen base.
    self.lora = LoRAWeights(d_in, d_out, cfg, base.param_dtype, rngs)
    self.scale, self.num_domains = cfg.scale, cfg.num_domains

  def __call__(self, x: jax.Array, domain: jax.Array | None = None) -> jax.Array:
    y = super().__call__(x)
    a, b = self.lora.a[...].astype(y.dtype), self.lora.b[...].astype(y.dtype)
    if self.num_domains == 1:
      delta = (x.astype(y.dtype) @ a[0]) @ b[0]
    else:
      if domain is None:
        raise ValueError("per-domain LoRA adapters need the batch's 'domain' column "
                         "(encoder(..., domain=batch['domain']))")
      a, b = a[domain], b[domain]  # [B, in, r], [B, r, out]: each row its domain's adapter.
      delta = jnp.einsum("b...r,bro->b...o", jnp.einsum("b...i,bir->b...r", x.astype(y.dtype), a), b)
    return y + self.scale * delta

  def merged_kernel(self, domain: int = 0) -> jax.Array:
    """W + scale * A_d B_d (float32), the kernel of the equivalent plain Linear."""
    a, b = self.lora.a[...][domain], self.lora.b[...][domain]
    return self.kernel[...] + self.scale * (a @ b)


def project(layer: nnx.Module, x: jax.Array, domain: jax.Array | None) -> jax.Array:
  """`layer(x)`, passing the rows' domains to a LoRALinear (plain layers do not take them)."""
  return layer(x, domain) if isinstance(layer, LoRALinear) else layer(x)


def _linears(encoder: nnx.Module) -> list[tuple[tuple[Any, ...], nnx.Linear]]:
  return [(p, n) for p, n in nnx.iter_graph(encoder) if isinstance(n, nnx.Linear)]


def _matches(path: Sequence[Any], target: str) -> bool:
  suffix = tuple(target.strip("/").split("/"))
  return tuple(str(k) for k in path[-len(suffix):]) == suffix


def _set(root: nnx.Module, path: Sequence[Any], value: nnx.Module) -> None:
  parent = root
  for key in path[:-1]:
    parent = parent[key] if isinstance(key, int) else getattr(parent, key)
  setattr(parent, path[-1], value)


def apply_lora(encoder: nnx.Module, cfg: LoraConfig, *, rngs: nnx.Rngs) -> nnx.Module:
  """Adds LoRA to the targeted Linear layers of `encoder` (in place; returns it).

  Only layers inside the transformer stack (paths with a layer index) are candidates, so the
  pooler is never adapted. Raises ValueError naming `model.encoder.lora.targets` for a target
  that matches no layer (a typo would otherwise train nothing).
  """
  stack = [(p, n) for p, n in _linears(encoder) if any(isinstance(k, int) for k in p)]
  targets = cfg.targets or DEFAULT_TARGETS[encoder.config.model_type]
  for target in targets:
    if not any(_matches(p, target) for p, _ in stack):
      names = sorted({"/".join(map(str, p[-2:])) for p, _ in stack})
      raise ValueError(f"model.encoder.lora.targets: {target!r} matches no projection of the "
                       f"encoder; its projections end in {names}")
  for path, linear in stack:
    if isinstance(linear, LoRALinear) or not any(_matches(path, t) for t in targets):
      continue
    _set(encoder, path, LoRALinear(linear, cfg, rngs=rngs))
  return encoder


def merge_lora(encoder: nnx.Module, domain: int = 0) -> nnx.Module:
  """A copy of `encoder` with domain `domain`'s adapters folded into plain Linear layers."""
  merged = nnx.clone(encoder)
  for path, layer in _linears(merged):
    if not isinstance(layer, LoRALinear):
      continue
    if not 0 <= domain < layer.num_domains:
      raise ValueError(f"merge_lora: domain {domain} not in [0, {layer.num_domains})")
    d_in, d_out = layer.in_features, layer.out_features
    plain = nnx.Linear(d_in, d_out, use_bias=layer.use_bias, dtype=layer.dtype,
                       param_dtype=layer.param_dtype, precision=layer.precision, rngs=nnx.Rngs(0))
    plain.kernel[...] = layer.merged_kernel(domain)
    if layer.use_bias:
      plain.bias = layer.bias
    _set(merged, path, plain)
  return merged


CONFIG_KEYS = ("rank", "alpha", "targets", "per_domain")


def from_config(cfg: Any) -> LoraConfig | None:
  """`config.model.encoder.lora` (a ConfigDict or mapping) -> LoraConfig; None when rank is 0."""
  if cfg is None:
    return None
  d = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  unknown, missing = sorted(set(d) - set(CONFIG_KEYS)), sorted(set(CONFIG_KEYS) - set(d))
  if unknown or missing:
    raise ValueError(f"model.encoder.lora: unknown key(s) {unknown}, missing key(s) {missing}; "
                     f"keys: {list(CONFIG_KEYS)}")
  if d["rank"] == 0:
    return None
  if not isinstance(d["per_domain"], bool):
    raise ValueError(f"model.encoder.lora.per_domain must be a bool, got {d['per_domain']!r}")
  return LoraConfig(rank=d["rank"], alpha=float(d["alpha"]), targets=tuple(d["targets"]),
                    num_domains=2 if d["per_domain"] else 1)


def lora_param_count(model: nnx.Module) -> int:
  """Number of LoRA parameters (the 'lora' optimiser group's size)."""
  return sum(int(v.size) for v in jax.tree.leaves(nnx.state(model, nnx.LoRAParam)))
