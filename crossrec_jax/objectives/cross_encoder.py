"""The cross-encoder's objective of one step: rating losses on both domains plus the alignment.

    L = w_s(t) * L_rate(src) + w_t(t) * L_rate(tgt) + w_d(t) * L_align(src, tgt)

L_rate is a masked MSE on ratings scaled to [0, 1] (or a BCE for 'logit' heads) over labelled rows
only (`label_mask * valid`); L_align is DANN's domain BCE over the valid rows of src and tgt
through the discriminator behind GRL_lam, or a feature penalty (MMD, CORAL) on the pooled
features. Unlabelled target rows (label_mask 0) still feed L_align. The sides a phase skips are
not in `batches` and are not encoded.

Batches are dicts of arrays: 'input_ids', 'attention_mask', 'token_type_ids', 'label' (float in
[0, 1]), 'label_mask', 'valid' (0 for padding rows of a short final batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.objectives import losses

__all__ = ["rating_loss", "concat_batches", "objective"]

Batch = Mapping[str, jax.Array]


def rating_loss(pred: jax.Array, label: jax.Array, mask: jax.Array,
                rating_output: str) -> jax.Array:
  """MSE on [0, 1] ratings for 'regression' heads, BCE for 'logit' heads; masked mean."""
  if rating_output == "logit":
    return losses.masked_bce_with_logits(pred, label, mask)
  return losses.masked_mse(pred, label, mask)


def concat_batches(batches: list[Batch]) -> dict[str, jax.Array]:
  """Concatenates batches along axis 0, zero-padding the other axes to the largest size.

  Zero is the padding of every model input (token id 0 = [PAD], attention mask 0), so a source
  batch of length 32 and a target batch of length 64 become one [Bs + Bt, 64] batch. Only keys
  present in every batch are kept.
  """
  if len(batches) == 1:
    return dict(batches[0])
  keys = [k for k in batches[0] if all(k in b for b in batches[1:])]
  out = {}
  for k in keys:
    arrays = [jnp.asarray(b[k]) for b in batches]
    shape = np.max([a.shape for a in arrays], axis=0)
    arrays = [jnp.pad(a, [(0, 0)] + [(0, int(n) - d) for n, d in zip(shape[1:], a.shape[1:])])
              for a in arrays]
    out[k] = jnp.concatenate(arrays, axis=0)
  return out


def _labelled(batch: Batch) -> jax.Array:
  return batch["label_mask"].astype(jnp.float32) * batch["valid"].astype(jnp.float32)


def objective(alignment: losses.Alignment, rating_output: str) -> Callable[..., Any]:
  """`fn(model, batches, lam, weights, *, deterministic) -> (loss, aux)` of a phase.

  `batches`: 'source' and/or 'target' -> batch (the sides the phase uses); `weights`: 'source',
  'target', 'domain' -> scalar. aux: loss_<side>, rmse_<side> (batch RMSE on the [0, 1] scale over
  labelled rows), n_labelled_<side>, and loss_domain (+ domain_acc for discriminator alignments).
  """

  def fn(model: Any, batches: Mapping[str, Batch], lam: jax.Array,
         weights: Mapping[str, jax.Array], *, deterministic: bool = False):
    sides = tuple(batches)
    # One forward over src ++ tgt: one encoder graph to compile, bigger matmuls.
    joint = concat_batches([batches[side] for side in sides])
    out = model(joint, lam, deterministic=deterministic)
    offsets = np.cumsum([0] + [batches[side]["valid"].shape[0] for side in sides])
    outs = {side: jax.tree.map(lambda x, a=a, b=b: x[a:b], out)
            for side, a, b in zip(sides, offsets[:-1], offsets[1:])}
    aux = {}
    total = jnp.zeros((), jnp.float32)
    for side in sides:
      batch, o = batches[side], outs[side]
      mask = _labelled(batch)
      l_rate = rating_loss(o["rating"], batch["label"], mask, rating_output)
      pred = recommender_lib.predict_rating(o, rating_output)
      aux[f"loss_{side}"] = l_rate
      aux[f"rmse_{side}"] = jnp.sqrt(losses.masked_mse(pred, batch["label"], mask))
      aux[f"n_labelled_{side}"] = jnp.sum(mask)
      total = total + weights[side] * l_rate
    if alignment.kind != "none":
      s, g = outs["source"], outs["target"]
      valid_s = batches["source"]["valid"].astype(jnp.float32)
      valid_t = batches["target"]["valid"].astype(jnp.float32)
      if alignment.uses_discriminator:
        logits = jnp.concatenate([s["domain_logit"], g["domain_logit"]])
        labels = jnp.concatenate([jnp.zeros_like(valid_s), jnp.ones_like(valid_t)])
        mask = jnp.concatenate([valid_s, valid_t])
        l_dom = losses.domain_bce(logits, labels, mask)
        aux["domain_acc"] = losses.binary_accuracy(logits, labels, mask)
      else:
        l_dom = alignment.penalty(s["features"], g["features"], valid_s, valid_t)
      aux["loss_domain"] = l_dom
      total = total + weights["domain"] * l_dom
    return total, aux

  return fn
