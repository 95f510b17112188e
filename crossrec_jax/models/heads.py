"""Prediction heads on top of the pooled encoder vector h: the rating head and the domain discriminator.

Both are small MLPs (`MLP`): dropout on the input, then `Linear -> activation -> dropout` per
hidden width, then one output unit. Parameters are kept in `param_dtype` (float32); `dtype` is the
compute dtype (e.g. bfloat16 on accelerators). Outputs are always float32 so the losses are
computed in full precision.

Parameter paths (what `train.optim.label_params` sees under the attribute that holds the head):
`mlp/hidden/<i>/kernel|bias` and `mlp/out/kernel|bias`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from crossrec_jax.models.grl import gradient_reversal

__all__ = ["MLP", "RatingHead", "DomainDiscriminator", "RATING_OUTPUTS"]

RATING_OUTPUTS = ("regression", "logit")


class MLP(nnx.Module):
  """Dropout -> [Linear -> activation -> Dropout] * len(hidden) -> Linear(out_features)."""

  def __init__(self, in_features: int, hidden: Sequence[int], out_features: int, *,
               dropout: float = 0.0, activation: Callable[[jax.Array], jax.Array] = nnx.relu,
               dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
               rngs: nnx.Rngs):
    if not 0.0 <= dropout < 1.0:
      raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    widths = [in_features, *hidden]
    if any(int(w) <= 0 for w in widths) or out_features <= 0:
      raise ValueError(f"layer widths must be positive, got in={in_features} hidden={list(hidden)} "
                       f"out={out_features}")
    self.hidden = nnx.List([
        nnx.Linear(a, b, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        for a, b in zip(widths[:-1], widths[1:])
    ])
    self.out = nnx.Linear(widths[-1], out_features, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.activation = activation

  def __call__(self, x: jax.Array, *, deterministic: bool = True) -> jax.Array:
    x = self.dropout(x, deterministic=deterministic)
    for layer in self.hidden:
      x = self.dropout(self.activation(layer(x)), deterministic=deterministic)
    return self.out(x)


class RatingHead(nnx.Module):
  """MLP(h) -> one rating per example.

  `output='regression'` returns `sigmoid(z)` in [0, 1]: ratings are scaled per domain to [0, 1]
  (1-5 stars and 1-10 points alike), so the head can never predict outside the valid range and
  its untrained output (bias 0 -> 0.5) sits mid-scale; train with `losses.masked_mse`.
  `output='logit'` returns the raw logit z for binary like/dislike or implicit clicks; train with
  `losses.masked_bce_with_logits`.
  """

  def __init__(self, in_features: int, hidden: Sequence[int], *, output: str, dropout: float = 0.0,
               activation: Callable[[jax.Array], jax.Array] = nnx.relu,
               dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
               rngs: nnx.Rngs):
    if output not in RATING_OUTPUTS:
      raise ValueError(f"RatingHead output must be one of {RATING_OUTPUTS}, got {output!r}")
    self.output = output
    self.mlp = MLP(in_features, hidden, 1, dropout=dropout, activation=activation, dtype=dtype,
                   param_dtype=param_dtype, rngs=rngs)

  def __call__(self, h: jax.Array, *, deterministic: bool = True) -> jax.Array:
    """h: [B, in_features] -> [B] float32 (rating in [0, 1] or logit)."""
    z = self.mlp(h, deterministic=deterministic)[..., 0].astype(jnp.float32)
    return jax.nn.sigmoid(z) if self.output == "regression" else z


class DomainDiscriminator(nnx.Module):
  """MLP(GRL_lam(h)) -> domain logit (convention: 0 = source, 1 = target).

  With `reverse=True` (DANN) the features pass through `gradient_reversal(h, lam)`: the
  discriminator's own parameters get the ordinary gradient of the domain loss, the encoder gets it
  times `-lam`. With `reverse=False` `lam` is ignored and the encoder gets the ordinary gradient,
  i.e. it is trained to *help* the discriminator (the control experiment in which domain accuracy
  rises instead of falling towards chance).
  """

  def __init__(self, in_features: int, hidden: Sequence[int], *, dropout: float = 0.0,
               reverse: bool = True, activation: Callable[[jax.Array], jax.Array] = nnx.relu,
               dtype: jnp.dtype = jnp.float32, param_dtype: jnp.dtype = jnp.float32,
               rngs: nnx.Rngs):
    self.reverse = reverse
    self.mlp = MLP(in_features, hidden, 1, dropout=dropout, activation=activation, dtype=dtype,
                   param_dtype=param_dtype, rngs=rngs)

  def __call__(self, h: jax.Array, lam: jax.typing.ArrayLike, *,
               deterministic: bool = True) -> jax.Array:
    """h: [B, in_features], lam: scalar reversal strength (may be traced) -> [B] float32 logits."""
    if self.reverse:
      h = gradient_reversal(h, lam)
    return self.mlp(h, deterministic=deterministic)[..., 0].astype(jnp.float32)
