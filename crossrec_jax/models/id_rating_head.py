"""The cross-encoder's rating head with ID terms beside the text vector (issue 13, item 2).

The text-only head reads the user effect only from the few history entries and the profile the
example's text shows (README, "Learning benchmark"). This head adds what a bias model / MF learns
from IDs, beside the pooled text vector h:

    z = mu + mu_d + keep_u * b_u + keep_i * b_i + MLP([h, keep_u * e_u, keep_i * e_i])

  mu, mu_d    the shared mean and per-domain offsets (domain 0 = source: mu_0 = 0)
  b_u, b_i    user and item ID biases (`biases`), one table over both domains (a domain's IDs
              are offset by the other's counts, as `models/hybrid.py`)
  e_u, e_i    optional ID embeddings (`dim` > 0), concatenated to h as the MLP's input
  keep_*      ID dropout: one keep mask per example for its user and one for its item (bias and
              embedding drop together), so users and items without ratings fall back to text;
              evaluation never drops

'regression' rating = z on [0, 1], linear (not a sigmoid: the ID biases then mean what a bias
model's mean, so the ridge fit can start them, `set_biases`), clipped to [0, 1] at evaluation only,
as the hybrid model's; 'logit' rating = z (a logit, for BCE). The MLP's output layer starts at
zero, so the untrained head predicts mu + mu_d + b_u + b_i exactly (the bias model, when started
from its fit) and the text learns the residual. All of it is the optimiser group `rating_head`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.models import heads as heads_lib

__all__ = ["IdRatingHead", "global_ids"]


def global_ids(ids: jax.Array, domain: jax.Array, offsets: tuple[int, int]) -> jax.Array:
  """Per-domain ids -> rows of a table over both domains (source rows first)."""
  return jnp.where(domain > 0, ids + offsets[1], ids + offsets[0])


class IdRatingHead(nnx.Module):
  """MLP([h, e_u, e_i]) + mu + mu_d + b_u + b_i -> one rating per example (module docstring)."""

  reads_ids = True  # the recommender passes the batch (user, item, domain) to this head

  def __init__(self, in_features: int, hidden: Sequence[int], *, output: str,
               num_users: tuple[int, int], num_items: tuple[int, int], biases: bool = True,
               dim: int = 0, dropout: float = 0.0, id_dropout: float = 0.0,
               init_scale: float = 0.01, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
    if output not in heads_lib.RATING_OUTPUTS:
      raise ValueError(f"model.rating_head.output must be one of {heads_lib.RATING_OUTPUTS}, "
                       f"got {output!r}")
    if not biases and dim <= 0:
      raise ValueError("IdRatingHead without ID biases or embeddings: use heads.RatingHead")
    self.output, self.biases, self.dim = output, bool(biases), int(dim)
    self.user_offset = (0, int(num_users[0]))
    self.item_offset = (0, int(num_items[0]))
    users, items = int(sum(num_users)), int(sum(num_items))
    self.mu = nnx.Param(jnp.asarray(0.5 if output == "regression" else 0.0, jnp.float32))
    self.domain_offset = nnx.Param(jnp.zeros((2,), jnp.float32))
    if self.biases:
      self.user_bias = nnx.Param(jnp.zeros((users,), jnp.float32))
      self.item_bias = nnx.Param(jnp.zeros((items,), jnp.float32))
    if self.dim > 0:
      init = jax.nn.initializers.normal(init_scale)
      self.user_embedding = nnx.Param(init(rngs.params(), (users, self.dim), jnp.float32))
      self.item_embedding = nnx.Param(init(rngs.params(), (items, self.dim), jnp.float32))
    self.mlp = heads_lib.MLP(in_features + 2 * max(self.dim, 0), hidden, 1, dropout=dropout,
                             dtype=dtype, rngs=rngs)
    # The text's residual starts at 0: the untrained head is the ID bias model.
    self.mlp.out.kernel[...] = jnp.zeros_like(self.mlp.out.kernel[...])
    self.id_dropout = nnx.Dropout(id_dropout, rngs=rngs)

  def set_biases(self, mu: float | None = None, domain_offset: np.ndarray | None = None,
                 user_bias: np.ndarray | None = None, item_bias: np.ndarray | None = None
                 ) -> None:
    """Starts mu, the domain offsets and the ID biases at given values (the bias model's ridge
    fit: `tasks/cross_encoder.CrossEncoderTask.initial_id_biases`); None keeps one."""
    if mu is not None:
      self.mu[...] = jnp.asarray(mu, jnp.float32)
    if domain_offset is not None:
      self.domain_offset[...] = jnp.asarray(domain_offset, jnp.float32)
    for name, value in (("user_bias", user_bias), ("item_bias", item_bias)):
      if value is None:
        continue
      if not self.biases:
        raise ValueError(f"{name} given to a head without ID biases")
      table = getattr(self, name)
      if np.shape(value) != table[...].shape:
        raise ValueError(f"{name} of shape {np.shape(value)} for a table of {table[...].shape}")
      table[...] = jnp.asarray(value, jnp.float32)

  def __call__(self, h: jax.Array, batch: Mapping[str, jax.Array], *,
               deterministic: bool = True) -> jax.Array:
    """h: [B, in_features]; batch: 'user', 'item', 'domain' [B] -> [B] float32."""
    for key in ("user", "item", "domain"):
      if key not in batch:
        raise KeyError(f"the rating head's ID terms read batch[{key!r}]; this batch has "
                       f"{sorted(batch)}")
    domain = batch["domain"].astype(jnp.int32)
    user = global_ids(batch["user"].astype(jnp.int32), domain, self.user_offset)
    item = global_ids(batch["item"].astype(jnp.int32), domain, self.item_offset)
    ones = jnp.ones((domain.shape[0], 2), jnp.float32)
    keep = (self.id_dropout(ones, deterministic=deterministic) > 0).astype(jnp.float32)
    keep_u, keep_i = keep[:, 0], keep[:, 1]
    x = h
    if self.dim > 0:
      x = jnp.concatenate([h.astype(jnp.float32),
                           keep_u[:, None] * self.user_embedding[...][user],
                           keep_i[:, None] * self.item_embedding[...][item]], -1).astype(h.dtype)
    z = self.mlp(x, deterministic=deterministic)[..., 0].astype(jnp.float32)
    z = z + self.mu[...] + self.domain_offset[...][domain]
    if self.biases:
      z = z + keep_u * self.user_bias[...][user] + keep_i * self.item_bias[...][item]
    if self.output == "regression" and deterministic:  # training sees the unclipped value
      z = jnp.clip(z, 0.0, 1.0)
    return z
