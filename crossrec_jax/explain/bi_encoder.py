"""Explanations of a bi-encoder: each history item's contribution to the user vector and score.

The user tower pools the history (attention + mean, then an MLP), so an entry's effect is not a
term of a sum: it is measured by removal. For candidate v and user vector u (`user_vectors`):

    contribution to the score of entry k = u . v - u_{-k} . v   (leave-one-out, `removal.py`)
    contribution to the user vector      = u - u_{-k}            ('user_delta' [B, K, D])

Batch (numpy): 'hist_item' [B, K] catalogue rows (-1 pad), 'hist_rating' [B, K] in [0, 1],
'hist_mask' [B, K], 'item' [B] the candidate's catalogue row.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.explain import edits
from crossrec_jax.explain import removal

__all__ = ["BiEncoderExplainer"]

_USER_KEYS = ("hist_item", "hist_rating", "hist_mask")


class BiEncoderExplainer:
  """Score function and removal explanations of a BiEncoderRecommender (module docstring)."""

  def __init__(self, model: Any, *, chunk: int = 64):
    self.chunk = int(chunk)
    graphdef, state = nnx.split(model)

    @jax.jit
    def vectors(state, batch, item):
      m = nnx.merge(graphdef, state)
      return m.user_vectors(batch), m.item_vectors(item)

    self._vectors, self._state = vectors, state

  def vectors(self, batch: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(user vectors [B, D], candidate vectors [B, D])."""
    u, v = self._vectors(self._state, {k: jnp.asarray(batch[k]) for k in _USER_KEYS},
                         jnp.asarray(batch["item"]))
    return np.asarray(u, np.float64), np.asarray(v, np.float64)

  def score_fn(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[B] ranking score u . v (the `removal.ScoreFn` of this model)."""
    u, v = self.vectors(batch)
    return np.sum(u * v, axis=-1)

  def explain(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """'score' [B]; 'history' [B, K] score contributions; 'user_delta' [B, K, D] and its norm
    'user_change' [B, K] (NaN / 0 beyond a row's entries)."""
    loo = removal.leave_one_out(self.score_fn, batch, chunk=self.chunk)
    counts = edits.entry_counts(batch)
    b, k = loo["delta"].shape
    u, _ = self.vectors(batch)
    deltas = np.zeros((b, k, u.shape[1]))
    rows = np.repeat(np.arange(b), counts)
    ks = np.concatenate([np.arange(c) for c in counts]) if len(rows) else rows
    for lo in range(0, len(rows), self.chunk):
      r, kk = rows[lo:lo + self.chunk], ks[lo:lo + self.chunk]
      drop = np.zeros((len(r), k), bool)
      drop[np.arange(len(r)), kk] = True
      edited = edits.drop_entries(edits.take_rows(batch, r), drop)
      deltas[r, kk] = u[r] - self.vectors(edited)[0]
    change = np.linalg.norm(deltas, axis=-1)
    change[np.isnan(loo["delta"])] = np.nan
    return {"score": loo["score"], "history": loo["delta"], "user_delta": deltas,
            "user_change": change}
