"""Explanations of a trained cross-encoder: its score function, IG and leave-one-out per example.

    ex = CrossEncoderExplainer(model, keep_ids=(cls_id, sep_id), baseline_id=pad_id)
    got = ex.explain(batch, method='ig')   # batch: `units.collate_tokens` rows
    got['history'][b, k]                   # entry k's attribution (k = 0 newest)

Every method returns the same dict: 'score' [B] (the predicted rating in [0, 1]), 'history'
[B, K] (per-entry attribution, NaN beyond a row's entries), and for IG also 'tokens' [B, L],
'profile', 'candidate', 'template' [B] and the completeness 'gap' / 'complete' [B].
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.explain import gradients
from crossrec_jax.explain import removal
from crossrec_jax.explain import units
from crossrec_jax.models import recommender as recommender_lib

__all__ = ["METHODS", "CrossEncoderExplainer"]

METHODS = ("ig", "loo")


class CrossEncoderExplainer:
  """Score function (jitted, no dropout) plus IG and leave-one-out of a CrossEncoderRecommender."""

  def __init__(self, model: Any, *, steps: int = 32, baseline_id: int = 0,
               keep_ids: Sequence[int] = (), chunk: int = 32,
               tolerance: float = gradients.TOLERANCE):
    self.chunk = int(chunk)
    graphdef, state = nnx.split(model)
    rating_output = model.rating_output

    @jax.jit
    def score(state, batch):
      out = nnx.merge(graphdef, state)(batch, 0.0, deterministic=True)
      return recommender_lib.predict_rating(out, rating_output)

    self._score, self._state = score, state
    self.ig = gradients.IntegratedGradients(model, steps=steps, baseline_id=baseline_id,
                                            keep_ids=keep_ids, tolerance=tolerance)

  def score_fn(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """[B] predicted rating in [0, 1] (the `removal.ScoreFn` of this model)."""
    # Every column but the segments: a model may read more than tokens (an ID history).
    return np.asarray(self._score(self._state, {k: jnp.asarray(v) for k, v in batch.items()
                                                if k != "segments"}))

  def explain(self, batch: Mapping[str, np.ndarray], method: str = "ig") -> dict[str, np.ndarray]:
    """The module docstring's dict for every row of `batch`, `chunk` rows per compiled call."""
    if method == "loo":
      got = removal.leave_one_out(self.score_fn, batch, chunk=self.chunk)
      return {"score": got["score"], "history": got["delta"]}
    if method != "ig":
      raise ValueError(f"explanation method {method!r}: choose one of {METHODS}")
    n = len(batch["input_ids"])
    parts = []
    for lo in range(0, n, self.chunk):
      rows = np.arange(lo, min(lo + self.chunk, n))
      padded = np.concatenate([rows, np.full(self.chunk - len(rows), rows[0])])
      got = self.ig({k: np.asarray(v)[padded] for k, v in batch.items()})
      parts.append({k: v[:len(rows)] for k, v in got.items()})
    got = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    sums = units.unit_sums(got["attributions"], batch["segments"])
    return {"score": got["score"], "baseline_score": got["baseline_score"], "gap": got["gap"],
            "complete": got["complete"], "tokens": got["attributions"], **sums}
