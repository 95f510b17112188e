"""Retrieval losses of the bi-encoder: sampled softmax (in-batch + extra negatives, log-Q), BPR.

Pure functions on arrays. A batch holds B users, each with up to P positive items (P = 1 for one
interaction per row; P > 1 for user-level batches), and an optional shared set of C extra
candidate items (sampled negatives, or the whole catalogue for an exact softmax).

Scores are `s(u, v) / temperature` (dot products, or cosines when the caller normalised the
vectors). For positive (b, p) the softmax runs over
    {v_bp}  U  {extra candidates c}  U  {in-batch positives v_b'p' of the other rows}
minus *accidental hits*: any candidate whose item id is one of row b's own positives is masked
(so a popular item that is two users' positive is never the other's negative, and with the whole
catalogue as candidates each positive competes only with the user's non-positives).

Log-Q correction (Yi et al., RecSys 2019; Bengio & Senecal 2008): candidates drawn with
probability q are scored `s - log q`, which makes the sampled softmax an unbiased estimate of the
full one. In-batch negatives are drawn in proportion to item frequency, so their log q is the log
of the item's training frequency (`pos_logq`); uniform extra negatives have log q = -log(I). With
in-batch negatives the positive's own logit is corrected too (Yi et al.: it is one of the batch's
candidates); without them `pos_logq` is ignored. Pass None to switch the correction off, e.g. for
an exact softmax over the whole catalogue.

Item ids are non-negative ints; -1 marks padding (never a positive, never a candidate).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from crossrec_jax.objectives import losses as losses_lib

__all__ = ["NEG_INF", "accidental_hits", "sampled_softmax_loss", "bpr_loss", "table_logits",
           "table_softmax_loss", "RETRIEVAL_LOSSES", "retrieval_loss"]

NEG_INF = -1e30  # finite, so a fully masked row still has finite gradients


def accidental_hits(row_items: jax.Array, cand_items: jax.Array,
                    num_items: int | None = None) -> jax.Array:
  """[B, C] bool: candidate c's item equals one of row b's items. row_items [B, P], cand [C].

  With `num_items` (ids < num_items) a [B, num_items] scatter replaces the [B, P, C] comparison:
  far cheaper for user-level batches (P ~ 100) against a whole catalogue.
  """
  row_items = jnp.asarray(row_items)
  cand_items = jnp.asarray(cand_items)
  if num_items is None:
    eq = row_items[:, :, None] == cand_items[None, None, :]
    return jnp.any(eq & (row_items[:, :, None] >= 0), axis=1)
  b = row_items.shape[0]
  # Padding (-1) goes to index num_items, which mode="drop" discards.
  idx = jnp.where(row_items >= 0, row_items, num_items)
  hits = jnp.zeros((b, num_items), bool).at[jnp.arange(b)[:, None], idx].set(True, mode="drop")
  return jnp.take(hits, jnp.clip(cand_items, 0, num_items - 1), axis=1) & (cand_items >= 0)[None, :]


def _as_bpd(pos: jax.Array) -> jax.Array:
  return pos[:, None, :] if pos.ndim == 2 else pos


def _as_bp(x: jax.Array | None, shape, fill=0.0) -> jax.Array:
  if x is None:
    return jnp.full(shape, fill, jnp.float32)
  x = jnp.asarray(x, jnp.float32)
  return x[:, None] if x.ndim == 1 and len(shape) == 2 and shape[1] == 1 else x


def _logits(user, pos, cand, pos_items, cand_items, pos_logq, cand_logq, temperature, in_batch,
            num_items=None):
  """Positive logits [B, P] and negative logits [B, N] (masked to NEG_INF), N = C (+ B*P)."""
  user = jnp.asarray(user, jnp.float32)
  pos = _as_bpd(jnp.asarray(pos, jnp.float32))
  b, p, _ = pos.shape
  pos_items = jnp.asarray(pos_items).reshape(b, p)
  # The positive's own correction belongs to in-batch sampling (it is one of the batch's
  # candidates there); against extra candidates only, it would just penalise popular positives.
  pos_logq = _as_bp(pos_logq if in_batch else None, (b, p))
  inv_t = 1.0 / temperature
  pos_logit = jnp.einsum("bd,bpd->bp", user, pos) * inv_t - pos_logq
  negs, neg_items, neg_logq = [], [], []
  if cand is not None:
    negs.append(jnp.asarray(cand, jnp.float32))
    neg_items.append(jnp.asarray(cand_items))
    neg_logq.append(jnp.zeros(cand.shape[:1], jnp.float32) if cand_logq is None
                    else jnp.asarray(cand_logq, jnp.float32))
  if in_batch:
    negs.append(pos.reshape(b * p, -1))
    neg_items.append(pos_items.reshape(-1))
    neg_logq.append(pos_logq.reshape(-1))
  if not negs:
    raise ValueError("a softmax needs negatives: give extra candidates or in_batch=True")
  neg = jnp.concatenate(negs)
  items = jnp.concatenate(neg_items)
  neg_logit = (user @ neg.T) * inv_t - jnp.concatenate(neg_logq)[None, :]
  masked = accidental_hits(pos_items, items, num_items) | (items < 0)[None, :]
  return pos_logit, jnp.where(masked, NEG_INF, neg_logit), pos_items


def sampled_softmax_loss(user: jax.Array, pos: jax.Array | None, pos_items: jax.Array,
                         cand: jax.Array | None = None, cand_items: jax.Array | None = None, *,
                         pos_mask: jax.Array | None = None, pos_logq: jax.Array | None = None,
                         cand_logq: jax.Array | None = None, in_batch: bool = True,
                         temperature: float = 1.0, num_items: int | None = None,
                         logits: tuple[jax.Array, jax.Array] | None = None) -> jax.Array:
  """Mean over valid positives of -log softmax(positive | its negatives); see the module docstring.

  Args:
    user: [B, D] user vectors. pos: [B, D] or [B, P, D] positive item vectors.
    pos_items: [B] or [B, P] item ids of the positives (-1 = padding).
    cand, cand_items: [C, D] extra candidate vectors and their [C] ids (None: none).
    pos_mask: [B] or [B, P] weights of the positives (0 for padding rows / slots); default: ids >= 0.
    pos_logq, cand_logq: log sampling probabilities for the log-Q correction (None: 0).
    in_batch: use the other rows' positives as negatives.
    temperature: logits are scores / temperature.
    num_items: static bound on item ids: enables the cheap accidental-hit test.
    logits: precomputed (pos_logit, neg_logit), e.g. `table_logits` for an exact softmax over a
      whole item table; then pos, cand and the log-Q arguments are not used.
  Returns:
    Scalar float32; 0 when no positive is valid.
  """
  if logits is not None:
    (pos_logit, neg_logit), pos_items = logits, jnp.asarray(pos_items).reshape(logits[0].shape)
  else:
    pos_logit, neg_logit, pos_items = _logits(user, pos, cand, pos_items, cand_items, pos_logq,
                                              cand_logq, temperature, in_batch, num_items)
  lse_neg = jax.nn.logsumexp(neg_logit, axis=-1, keepdims=True)  # [B, 1]
  nll = jnp.logaddexp(pos_logit, lse_neg) - pos_logit  # -log softmax over {pos} U negatives
  mask = (pos_items >= 0).astype(jnp.float32) if pos_mask is None else _as_bp(pos_mask, pos_items.shape)
  return losses_lib.masked_mean(nll.reshape(-1), (mask * (pos_items >= 0)).reshape(-1))


def bpr_loss(user: jax.Array, pos: jax.Array | None, pos_items: jax.Array,
             cand: jax.Array | None = None, cand_items: jax.Array | None = None, *,
             pos_mask: jax.Array | None = None, in_batch: bool = False,
             temperature: float = 1.0, num_items: int | None = None,
             logits: tuple[jax.Array, jax.Array] | None = None, **unused) -> jax.Array:
  """Bayesian personalised ranking: mean over (valid positive, valid negative) pairs of
  -log sigmoid(s_pos - s_neg). Negatives as in `sampled_softmax_loss` (no log-Q: BPR is a
  pairwise loss, not an estimate of a softmax); `logits` as there."""
  del unused
  if logits is not None:
    (pos_logit, neg_logit), pos_items = logits, jnp.asarray(pos_items).reshape(logits[0].shape)
  else:
    pos_logit, neg_logit, pos_items = _logits(user, pos, cand, pos_items, cand_items, None, None,
                                              temperature, in_batch, num_items)
  valid_neg = (neg_logit > NEG_INF / 2).astype(jnp.float32)  # [B, N]
  diff = pos_logit[:, :, None] - jnp.where(valid_neg > 0, neg_logit, 0.0)[:, None, :]
  pair_loss = -jax.nn.log_sigmoid(diff)  # [B, P, N]
  mask = (pos_items >= 0).astype(jnp.float32) if pos_mask is None else _as_bp(pos_mask, pos_items.shape)
  mask = mask * (pos_items >= 0)
  w = mask[:, :, None] * valid_neg[:, None, :]
  return losses_lib.masked_mean(pair_loss.reshape(-1), w.reshape(-1))


def _table_scores(user, table, temperature, extra_logits):
  logits = (jnp.asarray(user, jnp.float32) @ jnp.asarray(table, jnp.float32).T) / temperature
  return logits if extra_logits is None else logits + jnp.asarray(extra_logits, jnp.float32)


def table_logits(user: jax.Array, table: jax.Array, pos_items: jax.Array, *,
                 temperature: float = 1.0,
                 extra_logits: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """Logits when every item of `table` [I, D] is a candidate (an exact softmax).

  Returns (pos_logit [B, P], neg_logit [B, I]) for `sampled_softmax_loss` / `bpr_loss`'s
  `logits=` argument: one [B, I] product, the positives' logits gathered from it (cheaper than
  gathering their vectors: the backward pass scatters B x P scalars, not B x P x D), each row's own
  positives masked out of its negatives. pos_items index `table` (-1 = padding). `extra_logits`
  [B, I]: scores of another path (e.g. the item-item path), added after the temperature.
  """
  logits = _table_scores(user, table, temperature, extra_logits)
  pos_items = jnp.asarray(pos_items)
  pos_items = pos_items[:, None] if pos_items.ndim == 1 else pos_items
  n = table.shape[0]
  pos_logit = jnp.take_along_axis(logits, jnp.clip(pos_items, 0, n - 1), axis=1)
  hits = accidental_hits(pos_items, jnp.arange(n), n)
  return pos_logit, jnp.where(hits, NEG_INF, logits)


def table_softmax_loss(user: jax.Array, table: jax.Array, pos_items: jax.Array, *,
                       pos_mask: jax.Array | None = None, temperature: float = 1.0,
                       exclusive: bool = True, extra_logits: jax.Array | None = None) -> jax.Array:
  """Exact softmax over a whole item table [I, D]; mean over valid positives.

  exclusive=True: each positive competes with the row's non-positives only (as
  `sampled_softmax_loss` with the table as candidates). exclusive=False: the multinomial
  likelihood of Mult-VAE / Mult-DAE (Liang et al. 2018): -log softmax over *all* items, so a
  row's positives also compete with each other. `extra_logits` as in `table_logits`.
  """
  pos_items = jnp.asarray(pos_items)
  pos_items = pos_items[:, None] if pos_items.ndim == 1 else pos_items
  if exclusive:
    return sampled_softmax_loss(user, None, pos_items, pos_mask=pos_mask,
                                logits=table_logits(user, table, pos_items,
                                                    temperature=temperature,
                                                    extra_logits=extra_logits))
  logits = _table_scores(user, table, temperature, extra_logits)
  pos_logit = jnp.take_along_axis(logits, jnp.clip(pos_items, 0, table.shape[0] - 1), axis=1)
  nll = jax.nn.logsumexp(logits, axis=-1, keepdims=True) - pos_logit
  mask = jnp.ones(pos_items.shape, jnp.float32) if pos_mask is None else _as_bp(pos_mask, pos_items.shape)
  return losses_lib.masked_mean(nll.reshape(-1), (mask * (pos_items >= 0)).reshape(-1))


RETRIEVAL_LOSSES = {"softmax": sampled_softmax_loss, "bpr": bpr_loss}


def retrieval_loss(kind: str):
  """The loss function by config name ('softmax' | 'bpr')."""
  if kind not in RETRIEVAL_LOSSES:
    raise ValueError(f"bi_encoder.loss must be one of {sorted(RETRIEVAL_LOSSES)}, got {kind!r}")
  return RETRIEVAL_LOSSES[kind]
