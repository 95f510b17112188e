"""The bi-encoder's objective of one step: a retrieval loss per domain (+ rating head) plus alignment.

    L = w_s * (L_rank(src) + a * L_rate(src)) + w_t * (L_rank(tgt) + a * L_rate(tgt)) + w_d * L_align

with L_rank the configured retrieval loss (`objectives/retrieval.py`; over a whole item table, the
item-item path's scores `item_logits` are added to the towers'), L_rate the rating head's
masked MSE (or BCE for 'logit' heads) on the positives' ratings, a = `rating_weight`, and L_align
DANN's domain BCE on the user and item vectors of both domains (through GRL_lam) or an MMD / CORAL
penalty on them. The towers' vectors come from `BiEncoderRecommender.side` (models/bi_encoder.py,
which documents the batch keys); everything here is the loss on top of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.objectives import losses as losses_lib
from crossrec_jax.objectives import retrieval

__all__ = ["RankLoss", "side_loss", "objective"]

Batch = Mapping[str, jax.Array]


@dataclasses.dataclass(frozen=True)
class RankLoss:
  """The retrieval loss's settings (`config.model.bi_encoder`: loss, temperature, in_batch,
  exclusive_positives, rating_weight)."""
  loss: str = "softmax"
  temperature: float = 1.0
  in_batch: bool = True
  exclusive_positives: bool = True
  rating_weight: float = 0.0

  def __post_init__(self):
    retrieval.retrieval_loss(self.loss)  # validates the name
    if self.temperature <= 0:
      raise ValueError(f"bi_encoder.temperature must be > 0, got {self.temperature}")

  @classmethod
  def from_config(cls, bi: Any) -> "RankLoss":
    return cls(loss=bi.loss, temperature=float(bi.temperature), in_batch=bool(bi.in_batch),
               exclusive_positives=bool(bi.exclusive_positives),
               rating_weight=float(bi.rating_weight))


def side_loss(model: Any, batch: Batch, o: Mapping[str, jax.Array], rank: RankLoss, *,
              deterministic: bool) -> tuple[jax.Array, dict[str, jax.Array]]:
  """L_rank + rating_weight * L_rate of one domain's batch (`o` = `model.side(batch)`), and its
  metrics."""
  valid = jnp.asarray(batch["valid"], jnp.float32)
  pos_items = jnp.asarray(batch["pos_item"])
  pos_mask = jnp.asarray(batch["pos_mask"], jnp.float32) * valid[:, None]
  if "table" in o and rank.loss == "softmax":
    l_rank = retrieval.table_softmax_loss(o["user"], o["table"], pos_items, pos_mask=pos_mask,
                                          temperature=rank.temperature,
                                          exclusive=rank.exclusive_positives,
                                          extra_logits=o.get("item_logits"))
  else:
    logits = None
    if "table" in o:
      logits = retrieval.table_logits(o["user"], o["table"], pos_items,
                                      temperature=rank.temperature,
                                      extra_logits=o.get("item_logits"))
    l_rank = retrieval.retrieval_loss(rank.loss)(
        o["user"], o["pos"], pos_items, o.get("cand"), batch.get("cand_item"),
        pos_mask=pos_mask, pos_logq=batch.get("pos_logq"), cand_logq=batch.get("cand_logq"),
        in_batch=rank.in_batch, temperature=rank.temperature, num_items=o["num_ids"],
        logits=logits)
  aux = {"rank_loss": l_rank, "n_positives": jnp.sum(pos_mask * (pos_items >= 0))}
  total = l_rank
  if rank.rating_weight > 0:
    p = pos_items.shape[1]
    users = jnp.broadcast_to(o["user"][:, None], o["pos"].shape)
    h = model.interaction(users, o["pos"]).reshape(-1, 3 * o["user"].shape[-1])
    pred = model.rating_head(h, deterministic=deterministic).reshape(-1, p)
    label = jnp.asarray(batch["pos_rating"], jnp.float32)
    mask = (pos_mask * jnp.asarray(batch["rating_mask"], jnp.float32)).reshape(-1)
    if model.rating_output == "logit":
      l_rate = losses_lib.masked_bce_with_logits(pred.reshape(-1), label.reshape(-1), mask)
    else:
      l_rate = losses_lib.masked_mse(pred.reshape(-1), label.reshape(-1), mask)
    prob = recommender_lib.predict_rating({"rating": pred.reshape(-1)}, model.rating_output)
    aux["rating_loss"] = l_rate
    aux["rmse"] = jnp.sqrt(losses_lib.masked_mse(prob, label.reshape(-1), mask))
    aux["n_labelled"] = jnp.sum(mask)
    total = total + rank.rating_weight * l_rate
  return total, aux


def objective(alignment: losses_lib.Alignment, rank: RankLoss) -> Callable[..., Any]:
  """`fn(model, batches, lam, weights, *, deterministic) -> (loss, aux)` of a phase (module
  docstring). `batches`: 'source' and/or 'target' batches (the sides the phase uses); `weights`:
  'source', 'target', 'domain' scalars."""

  def fn(model: Any, batches: Mapping[str, Batch], lam: jax.typing.ArrayLike,
         weights: Mapping[str, jax.Array], *, deterministic: bool = False):
    outs, aux = {}, {}
    total = jnp.zeros((), jnp.float32)
    for side, batch in batches.items():
      outs[side] = model.side(batch, deterministic=deterministic)
      l_side, a = side_loss(model, batch, outs[side], rank, deterministic=deterministic)
      aux[f"loss_{side}"] = l_side
      aux.update({f"{k}_{side}": v for k, v in a.items()})
      total = total + weights[side] * l_side
    if alignment.kind != "none":
      if not {"source", "target"} <= set(outs):
        raise ValueError(f"alignment {alignment.kind!r} needs both the source and the target batch")
      s, t = outs["source"], outs["target"]
      vs = jnp.asarray(batches["source"]["valid"], jnp.float32)
      vt = jnp.asarray(batches["target"]["valid"], jnp.float32)
      # Items: each row's first positive (every valid row has one).
      feats_s = jnp.concatenate([s["user"], s["pos"][:, 0]])
      feats_t = jnp.concatenate([t["user"], t["pos"][:, 0]])
      ms, mt = jnp.concatenate([vs, vs]), jnp.concatenate([vt, vt])
      if alignment.uses_discriminator:
        logits = model.discriminator(jnp.concatenate([feats_s, feats_t]), lam,
                                     deterministic=deterministic)
        labels = jnp.concatenate([jnp.zeros_like(ms), jnp.ones_like(mt)])
        mask = jnp.concatenate([ms, mt])
        l_dom = losses_lib.domain_bce(logits, labels, mask)
        aux["domain_acc"] = losses_lib.binary_accuracy(logits, labels, mask)
      else:
        l_dom = (alignment.penalty(s["user"], t["user"], vs, vt)
                 + alignment.penalty(s["pos"][:, 0], t["pos"][:, 0], vs, vt))
      aux["loss_domain"] = l_dom
      total = total + weights["domain"] * l_dom
    return total, aux

  return fn
