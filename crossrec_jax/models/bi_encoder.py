"""The bi-encoder recommender: an item tower over item text, a user tower over history item vectors.

    item text --BERT (shared `encoder`)--> pooled t  [H]    (or the cached t: `item_text` table)
    t --item_tower (standardise -> MLP -> + optional item-id embedding)--> v  [D]
    history (v_1..v_K [+ history-id embeddings], ratings, positions) --user_tower (transformer
    layers, attention + mean pooling, residual MLP) [+ optional user-id embedding]--> u  [D]
    score(u, v) = u . v  ('dot')   or   cos(u, v)  ('cosine'; the loss divides by a temperature)
                  [+ item_item(history, item): optional linear item-item path, `bi_ids.ItemItem`]
    rating = rating_head([u, v, u * v])        domain_logit = discriminator(GRL_lam(u or v))

The cross-encoder's attribute names where they mean the same (`encoder`, `rating_head`,
`discriminator`); the new optimiser groups are `item_tower` and `user_tower` (`OPTIMIZER_PREFIXES`).

SVD++-like hybrid: each ID term (item, history-entry, user embeddings; zero init) is dropped whole
with probability `id_dropout` at train time (`bi_ids.IdDropout`), so cold rows fall back to text;
without them (and the item-item path) the model is text only: no parameter indexed by an id.

Items are rows of one global catalogue (`bi_pipeline.ItemCatalogue`: one row per item text). The
frozen-tower fast path keeps the pooled text vector of every row in `item_text` (an `ItemTextTable`
variable in the train state's `rest`, set from `item_cache`); the step then runs no BERT at all, and
the model may be built without an encoder (`encoder=None`). With a trainable tower the batch
carries the token ids of its positives/candidates ('pos_input_ids', 'cand_input_ids'), which the
step encodes; histories read the table, refreshed before evaluation (`set_item_text`).

Batch of one domain (numpy or jax; `bi_pipeline` builds them; -1 pads item ids):
  item_rows int32 [I_d] (optional): the domain's catalogue rows; item ids below index it (so the
    step projects just these items); without it, item ids are catalogue rows
  hist_item int32 [B, K], hist_rating float32 [B, K] (rating in [0, 1]), hist_mask float32 [B, K]
  pos_item int32 [B, P], pos_rating float32 [B, P], pos_mask float32 [B, P] (1 = a positive to
    rank), rating_mask float32 [B, P] (1 = its rating is a training label), valid float32 [B]
  pos_logq float32 [B, P] (log-Q of in-batch negatives; optional)
  user_row int32 [B] (-1 = padding): the user's row of the user-id table (with user embeddings)
  cand_item int32 [C], cand_logq float32 [C] (extra candidates; optional), or
  cand_table (any array, e.g. int32 [0]): its presence means every item the ids index is a
    candidate (an exact softmax over 'item_rows', or over the catalogue without them)
  pos_input_ids / pos_attention_mask int32 [B, L] (P == 1) and cand_input_ids /
    cand_attention_mask [C, L]: only with a trainable tower.

The module holds parameters and computes vectors only (`side(batch)`: one domain's vectors); the
objective is `objectives/bi_encoder.py`; `tasks/bi_encoder.py` wires the two to the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import bi_ids
from crossrec_jax.models import heads as heads_lib
from crossrec_jax.models import recommender as recommender_lib

__all__ = ["ItemTextTable", "ItemTower", "UserTower", "BiEncoderRecommender", "SCORES",
           "OPTIMIZER_PREFIXES", "build_bi_encoder"]

SCORES = ("dot", "cosine")
# Top-level attribute -> optimiser group (train.optim.label_params(params, OPTIMIZER_PREFIXES)).
OPTIMIZER_PREFIXES = {"encoder": "encoder", "item_tower": "item_tower", "user_tower": "user_tower",
                      "rating_head": "rating_head", "discriminator": "discriminator"}
Batch = Mapping[str, jax.Array]


class ItemTextTable(nnx.Variable):
  """Pooled text vectors of every catalogue row [G, H] (not trained; refreshed from the cache)."""


class _Block(nnx.Module):
  """Pre-LN transformer block over the history (padding masked out of attention)."""

  def __init__(self, dim: int, num_heads: int, hidden: int, dropout: float, *, rngs: nnx.Rngs):
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.attention = nnx.MultiHeadAttention(num_heads, dim, dropout_rate=dropout,
                                            broadcast_dropout=False, decode=False, rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.ff_in = nnx.Linear(dim, hidden, rngs=rngs)
    self.ff_out = nnx.Linear(hidden, dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, mask: jax.Array, *, deterministic: bool) -> jax.Array:
    pair = (mask[:, None, :, None] > 0) & (mask[:, None, None, :] > 0)  # [B, 1, K, K]
    # A row with no history attends to itself only, so its softmax is defined (its output is
    # masked out of the pooling anyway).
    pair = pair | jnp.eye(x.shape[1], dtype=bool)[None, None]
    h = self.attention(self.norm1(x), mask=pair, deterministic=deterministic)
    x = x + self.dropout(h, deterministic=deterministic)
    h = self.ff_out(self.dropout(nnx.gelu(self.ff_in(self.norm2(x))), deterministic=deterministic))
    return x + self.dropout(h, deterministic=deterministic)


class ItemTower(nnx.Module):
  """Pooled text vector [.., H] -> item vector [.., D].

  The text vector is standardised with per-dimension statistics of the catalogue (`set_stats`,
  from the cached table: sentence embeddings have dimensions of very different scale, and some
  that never vary), then an MLP maps it to D. With `num_items` > 0 a per-row embedding (zero at
  init, so training starts from the pure text tower) is added: the transductive variant, for
  items seen in training; `id_dropout` drops it at train time (`bi_ids.IdDropout`).
  """

  def __init__(self, text_dim: int, dim: int, *, hidden: int = 256, dropout: float = 0.0,
               num_items: int = 0, id_dropout: float = 0.0, rngs: nnx.Rngs):
    self.text_mean = nnx.BatchStat(jnp.zeros((text_dim,), jnp.float32))
    self.text_scale = nnx.BatchStat(jnp.ones((text_dim,), jnp.float32))
    self.hidden = nnx.Linear(text_dim, hidden, rngs=rngs)
    self.out = nnx.Linear(hidden, dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.id_embedding = (nnx.Embed(num_items, dim, embedding_init=nnx.initializers.zeros, rngs=rngs)
                         if num_items > 0 else None)
    self.id_drop = bi_ids.IdDropout(id_dropout if num_items > 0 else 0.0, rngs=rngs)

  def set_stats(self, table: np.ndarray) -> None:
    table = np.asarray(table, np.float32)
    self.text_mean[...] = jnp.asarray(table.mean(0))
    self.text_scale[...] = jnp.asarray(1.0 / (table.std(0) + 1e-3))

  def __call__(self, text: jax.Array, rows: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    x = (text.astype(jnp.float32) - self.text_mean[...]) * self.text_scale[...]
    x = self.dropout(x, deterministic=deterministic)
    v = self.out(nnx.gelu(self.hidden(x)))
    if self.id_embedding is not None:
      if rows is None:
        raise ValueError("an item tower with id embeddings needs the items' catalogue rows")
      e = self.id_embedding(jnp.clip(rows, 0, self.id_embedding.num_embeddings - 1))
      v = v + self.id_drop(e, deterministic=deterministic)
    return v


class UserTower(nnx.Module):
  """History item vectors [B, K, D] (+ rating, position embeddings) -> user vector [B, D].

  Positions count from the most recent history entry (0) backwards. `num_layers` transformer
  blocks (0 = none: a set model), then attention pooling plus the masked mean, then a residual MLP.
  With `num_items` > 0 each history entry also adds a per-item embedding (zero at init) of its
  catalogue row (untied input and output item factors, as in FISM); with `num_users` > 0 a per-user
  embedding (zero at init: SVD++'s user factor) is added to the output; `id_dropout` drops both.
  `item_item`: the optional item-item path (`bi_ids.ItemItem`), held here, used by the model.
  """

  def __init__(self, dim: int, *, max_len: int, num_layers: int = 0, num_heads: int = 4,
               hidden: int = 256, dropout: float = 0.0, use_rating: bool = True,
               use_position: bool = False, num_items: int = 0, num_users: int = 0,
               id_dropout: float = 0.0, item_item: bi_ids.ItemItem | None = None,
               rngs: nnx.Rngs):
    self.item_item = item_item  # it scores a user's history: it trains in the user tower's group
    zeros = nnx.initializers.zeros
    self.history_embedding = (nnx.Embed(num_items, dim, embedding_init=zeros, rngs=rngs)
                              if num_items > 0 else None)
    self.user_embedding = (nnx.Embed(num_users, dim, embedding_init=zeros, rngs=rngs)
                           if num_users > 0 else None)
    self.id_drop = bi_ids.IdDropout(id_dropout if num_items > 0 or num_users > 0 else 0.0,
                                    rngs=rngs)
    self.rating = nnx.Linear(1, dim, rngs=rngs) if use_rating else None
    self.position = nnx.Embed(max_len, dim, rngs=rngs) if use_position else None
    self.layers = nnx.List([_Block(dim, num_heads, hidden, dropout, rngs=rngs)
                            for _ in range(num_layers)])
    self.query = nnx.Param(jax.random.normal(rngs.params(), (dim,)) * dim ** -0.5)
    self.mlp_in = nnx.Linear(dim, hidden, rngs=rngs)
    self.mlp_out = nnx.Linear(hidden, dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)
    self.max_len = max_len

  def __call__(self, hist: jax.Array, rating: jax.Array, mask: jax.Array,
               rows: jax.Array | None = None, user_rows: jax.Array | None = None, *,
               deterministic: bool = True) -> jax.Array:
    """hist [B, K, D], rating / mask [B, K]; rows [B, K]: catalogue rows (for the history
    embedding); user_rows [B]: rows of the user table (-1: none; for the user embedding)."""
    b, k, _ = hist.shape
    if k > self.max_len:
      raise ValueError(f"history length {k} exceeds the user tower's max_len={self.max_len}")
    m = mask.astype(jnp.float32)
    x = hist
    if self.history_embedding is not None:
      if rows is None:
        raise ValueError("a user tower with history embeddings needs the entries' catalogue rows")
      e = self.history_embedding(jnp.clip(rows, 0, self.history_embedding.num_embeddings - 1))
      x = x + self.id_drop(e, deterministic=deterministic)
    if self.rating is not None:
      x = x + self.rating(rating.astype(jnp.float32)[..., None])
    if self.position is not None:
      # Entries are oldest first and left- or right-padded: count real entries from the end.
      from_end = jnp.cumsum(m[:, ::-1], axis=1)[:, ::-1] - 1.0
      x = x + self.position(jnp.clip(from_end, 0, self.max_len - 1).astype(jnp.int32))
    for layer in self.layers:
      x = layer(x, m, deterministic=deterministic)
    x = x * m[..., None]
    logits = jnp.where(m > 0, x @ self.query[...], -1e30)
    w = jax.nn.softmax(logits, axis=-1) * m
    pooled = jnp.sum(w[..., None] * x, 1) + jnp.sum(x, 1) / jnp.maximum(jnp.sum(m, 1), 1.0)[:, None]
    h = self.mlp_out(self.dropout(nnx.gelu(self.mlp_in(pooled)), deterministic=deterministic))
    u = pooled + h
    if self.user_embedding is not None:
      if user_rows is None:
        raise ValueError("a user tower with user embeddings needs the batch's 'user_row'")
      user_rows = jnp.asarray(user_rows)
      e = self.user_embedding(jnp.clip(user_rows, 0, self.user_embedding.num_embeddings - 1))
      u = u + self.id_drop(e * (user_rows >= 0)[:, None], deterministic=deterministic)
    return u


class BiEncoderRecommender(nnx.Module):
  """Item tower + user tower + rating head + domain discriminator (see the module docstring)."""

  kind = "bi_encoder"

  def __init__(self, encoder: bert_lib.BertModel | None, *, num_items: int, text_dim: int | None = None,
               dim: int = 128, pooling: str = "mean", score: str = "dot",
               item_hidden: int = 256, item_dropout: float = 0.0, item_id_embedding: bool = False,
               history_id_embedding: bool = False, num_users: int = 0, id_dropout: float = 0.0,
               item_item_rows: np.ndarray | None = None, item_item_scale: float = 1.0,
               user_max_len: int = 100, user_layers: int = 0, user_heads: int = 4,
               user_hidden: int = 256, user_dropout: float = 0.0, use_rating: bool = True,
               use_position: bool = False, rating_hidden: tuple[int, ...] = (256,),
               rating_output: str = "regression", rating_dropout: float = 0.1,
               discriminator_hidden: tuple[int, ...] = (256,),
               discriminator_dropout: float = 0.1, reverse_gradient: bool = True,
               rngs: nnx.Rngs):
    if score not in SCORES:
      raise ValueError(f"bi_encoder.score must be one of {SCORES}, got {score!r}")
    if pooling not in recommender_lib.POOLING_KINDS:
      raise ValueError(f"model.pooling must be one of {recommender_lib.POOLING_KINDS}, got {pooling!r}")
    if encoder is None and text_dim is None:
      raise ValueError("without an encoder, give text_dim (the cached vectors' width)")
    text_dim = encoder.config.hidden_size if encoder is not None else int(text_dim)
    self.encoder = encoder
    self.pooling = pooling
    self.score_kind = score
    self.num_items = int(num_items)
    self.item_text = ItemTextTable(jnp.zeros((num_items, text_dim), jnp.float32))
    self.item_tower = ItemTower(text_dim, dim, hidden=item_hidden, dropout=item_dropout,
                                num_items=num_items if item_id_embedding else 0,
                                id_dropout=id_dropout, rngs=rngs)
    self.user_tower = UserTower(dim, max_len=user_max_len, num_layers=user_layers,
                                num_heads=user_heads, hidden=user_hidden, dropout=user_dropout,
                                use_rating=use_rating, use_position=use_position,
                                num_items=num_items if history_id_embedding else 0,
                                num_users=num_users, id_dropout=id_dropout, rngs=rngs,
                                item_item=(bi_ids.ItemItem(item_item_rows, num_items,
                                                           scale=item_item_scale, rngs=rngs)
                                           if item_item_rows is not None else None))
    self.rating_head = heads_lib.RatingHead(3 * dim, tuple(rating_hidden), output=rating_output,
                                            dropout=rating_dropout, rngs=rngs)
    self.discriminator = heads_lib.DomainDiscriminator(
        dim, tuple(discriminator_hidden), dropout=discriminator_dropout,
        reverse=reverse_gradient, rngs=rngs)

  # ------------------------------------------------------------------------------ towers

  @property
  def item_item(self) -> bi_ids.ItemItem | None:
    return self.user_tower.item_item

  @property
  def rating_output(self) -> str:
    return self.rating_head.output

  def set_item_text(self, table: np.ndarray, *, update_stats: bool = True) -> None:
    """Installs the pooled text vectors of every catalogue row (from `item_cache`)."""
    table = np.asarray(table, np.float32)
    if table.shape != self.item_text.shape:
      raise ValueError(f"item text table {table.shape} does not fit the model's catalogue "
                       f"{self.item_text.shape} (model.num_items, text width)")
    self.item_text[...] = jnp.asarray(table)
    if update_stats:
      self.item_tower.set_stats(table)

  def encode_text(self, input_ids: jax.Array, attention_mask: jax.Array, *,
                  deterministic: bool = True) -> jax.Array:
    """Pooled text vectors [N, H] of tokenised item texts (the trainable-tower path)."""
    if self.encoder is None:
      raise ValueError("this bi-encoder was built without an encoder (cached path): the batch "
                       "must not carry item tokens")
    out = self.encoder(input_ids, attention_mask, deterministic=deterministic)
    return recommender_lib.pool(self.pooling, out, attention_mask)

  def _normalise(self, x: jax.Array) -> jax.Array:
    if self.score_kind == "cosine":
      return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-6)
    return x

  def item_vectors(self, rows: jax.Array | None = None, *, text: jax.Array | None = None,
                   deterministic: bool = True) -> jax.Array:
    """Item vectors [..., D] of catalogue rows (text from the table unless `text` is given);
    rows None: the whole catalogue [G, D]. -1 rows give a (meaningless) finite vector."""
    if rows is None:
      rows = jnp.arange(self.num_items)
    rows = jnp.asarray(rows)
    if text is None:
      text = jnp.take(self.item_text[...], jnp.clip(rows, 0, self.num_items - 1), axis=0)
    return self._normalise(self.item_tower(text, rows, deterministic=deterministic))

  def user_vectors(self, batch: Batch, *, item_table: jax.Array | None = None,
                   deterministic: bool = True) -> jax.Array:
    """User vectors [B, D] from 'hist_item', 'hist_rating', 'hist_mask'. `item_table`: the
    projected items that 'hist_item' indexes ([I_d, D] of 'item_rows', or the catalogue [G, D]),
    when the caller has it; else it is projected here."""
    ids = jnp.asarray(batch["hist_item"])
    if item_table is None and "item_rows" in batch:
      item_table = self.item_vectors(batch["item_rows"], deterministic=deterministic)
    if item_table is None:
      hist = self.item_vectors(ids, deterministic=deterministic)
    else:
      hist = jnp.take(item_table, jnp.clip(ids, 0, item_table.shape[0] - 1), axis=0)
    rows, mask = self._hist_rows(batch)
    u = self.user_tower(hist, jnp.asarray(batch["hist_rating"]), mask, rows, batch.get("user_row"),
                        deterministic=deterministic)
    return self._normalise(u)

  def _hist_rows(self, batch: Batch) -> tuple[jax.Array, jax.Array]:
    """Catalogue rows [B, K] of the history entries and their mask."""
    ids = jnp.asarray(batch["hist_item"])
    mask = jnp.asarray(batch["hist_mask"], jnp.float32) * (ids >= 0)
    if "item_rows" in batch:
      rows = jnp.take(jnp.asarray(batch["item_rows"]), jnp.clip(ids, 0, None))
      ids = jnp.where(ids >= 0, rows, -1)
    return ids, mask

  def ranking_items(self, rows: jax.Array) -> jax.Array:
    """Items as ranking vectors [N, D (+ R)]: the tower's, then the item-item path's columns,
    so that `ranking_users(...) @ ranking_items(rows).T` is the full score."""
    v, path = self.item_vectors(rows), self.item_item
    return v if path is None else jnp.concatenate([v, path.columns(rows)], axis=-1)

  def ranking_users(self, batch: Batch, items: jax.Array) -> jax.Array:
    """Users as ranking vectors [B, D (+ R)] against `ranking_items(batch['item_rows'])`."""
    u = self.user_vectors(batch, item_table=items[:, :self.item_tower.out.out_features])
    path = self.item_item
    return u if path is None else jnp.concatenate([u, path.history(*self._hist_rows(batch))], -1)

  def score(self, user: jax.Array, items: jax.Array) -> jax.Array:
    """[B, D] x [N, D] -> [B, N] ranking scores (cosines when score='cosine')."""
    return user @ items.T

  def interaction(self, user: jax.Array, item: jax.Array) -> jax.Array:
    """[u, v, u * v]: the rating head's input (and the 'features' of the common output)."""
    return jnp.concatenate([user, item, user * item], axis=-1)

  # ------------------------------------------------------------------------------ one domain

  def _table(self, batch: Batch, *, deterministic: bool) -> tuple[jax.Array | None, jax.Array, int]:
    """(projected item table or None, rows of the batch's ids, id bound) for one batch.
    With 'item_rows' the ids index it and its I_d items are projected once. Without, ids are
    catalogue rows: the whole catalogue is projected when that is fewer rows than gathering the
    batch's items one by one, else nothing is (None)."""
    if "item_rows" in batch:
      rows = jnp.asarray(batch["item_rows"])
      return self.item_vectors(rows, deterministic=deterministic), rows, int(rows.shape[0])
    gathered = int(np.prod(batch["hist_item"].shape)) + int(np.prod(batch["pos_item"].shape))
    if "cand_item" in batch:
      gathered += int(batch["cand_item"].shape[0])
    rows = jnp.arange(self.num_items)
    if self.num_items <= gathered:
      return self.item_vectors(rows, deterministic=deterministic), rows, self.num_items
    return None, rows, self.num_items

  def side(self, batch: Batch, *, deterministic: bool = True) -> dict[str, jax.Array]:
    """Vectors of one domain's batch: 'user' [B, D], 'pos' [B, P, D], 'cand' [C, D] (if any),
    and 'num_ids' (the bound on its item ids, for the loss's accidental-hit test)."""
    table, rows, n_ids = self._table(batch, deterministic=deterministic)

    def vectors(ids, input_ids=None, attention_mask=None):
      ids = jnp.asarray(ids)
      safe = jnp.clip(ids, 0, n_ids - 1)
      if input_ids is not None:  # trainable tower: encode these items' text now
        text = self.encode_text(input_ids, attention_mask, deterministic=deterministic)
        return self.item_vectors(jnp.take(rows, safe), text=text, deterministic=deterministic)
      if table is not None:
        return jnp.take(table, safe, axis=0)
      return self.item_vectors(ids, deterministic=deterministic)

    user = self.user_vectors(batch, item_table=table, deterministic=deterministic)
    pos_ids = jnp.asarray(batch["pos_item"])
    if "pos_input_ids" in batch:
      if pos_ids.shape[1] != 1:
        raise ValueError("item tokens in the batch need one positive per row (P == 1)")
      pos = vectors(pos_ids[:, 0], batch["pos_input_ids"], batch["pos_attention_mask"])[:, None]
    else:
      pos = vectors(pos_ids)
    out = {"user": user, "pos": pos, "num_ids": n_ids}
    if "cand_table" in batch:  # every item the ids index is a candidate: an exact softmax
      if table is None:
        table = self.item_vectors(rows, deterministic=deterministic)
      out["table"] = table
      if self.item_item is not None:  # added to the table's logits by the loss
        out["item_logits"] = self.item_item(*self._hist_rows(batch), rows)
    elif self.item_item is not None:
      raise ValueError("the item-item path needs catalogue negatives (data.bi.negatives="
                       "'catalogue')")
    elif "cand_item" in batch:
      out["cand"] = vectors(batch["cand_item"], batch.get("cand_input_ids"),
                            batch.get("cand_attention_mask"))
    return out

  def __call__(self, batch: Batch, lam: jax.typing.ArrayLike = 0.0, *,
               deterministic: bool = True) -> dict[str, jax.Array]:
    """The recommenders' common output for (user, first positive) pairs: 'features' [B, 3D],
    'rating' [B], 'domain_logit' [B] (of the user vector), plus 'user', 'item' [B, D], 'score' [B]."""
    o = self.side(batch, deterministic=deterministic)
    u, v = o["user"], o["pos"][:, 0]
    h = self.interaction(u, v)
    return {"features": h, "rating": self.rating_head(h, deterministic=deterministic),
            "domain_logit": self.discriminator(u, lam, deterministic=deterministic),
            "user": u, "item": v, "score": jnp.sum(u * v, -1)}


# ---------------------------------------------------------------------------- builder


def build_bi_encoder(cfg: Any, *, rngs: nnx.Rngs, num_items: int | None = None,
                     encoder: bert_lib.BertModel | None = None, num_users: int = 0,
                     item_item_rows: np.ndarray | None = None) -> BiEncoderRecommender:
  """A BiEncoderRecommender from `config.model` (kind 'bi_encoder'; keys under `cfg.bi_encoder`).

  `num_items`: the catalogue size (default `cfg.bi_encoder.num_items`). The encoder is built from
  `cfg.encoder` unless `cfg.bi_encoder.cached_only` (the frozen fast path: no BERT in the model,
  `text_dim` from `cfg.bi_encoder.text_dim`) or one is passed in. `num_users` sizes the user table
  (`user_id_embedding`); `item_item_rows`: the catalogue rows the item-item path covers.
  """
  bi = cfg.bi_encoder
  n = int(num_items if num_items is not None else bi.num_items)
  if n <= 0:
    raise ValueError("model.bi_encoder.num_items must be set to the catalogue size (> 0)")
  users, pairs = bool(bi.get("user_id_embedding", False)), bool(bi.get("item_item", False))
  if (users and num_users <= 0) or (pairs and item_item_rows is None):
    raise ValueError("model.bi_encoder.user_id_embedding / .item_item need num_users / rows")
  if encoder is None and not bool(bi.cached_only):
    encoder = recommender_lib.build_encoder(cfg.encoder, rngs=rngs)
  return BiEncoderRecommender(
      encoder, num_items=n, text_dim=int(bi.text_dim), dim=int(bi.dim), pooling=cfg.pooling,
      score=bi.score, item_hidden=int(bi.item_hidden),
      item_dropout=float(bi.item_dropout), item_id_embedding=bool(bi.item_id_embedding),
      history_id_embedding=bool(bi.get("history_id_embedding", False)),
      num_users=num_users if users else 0, id_dropout=float(bi.get("id_dropout", 0.0)),
      item_item_rows=item_item_rows if pairs else None,
      item_item_scale=float(bi.get("item_item_scale", 1.0)),
      user_max_len=int(bi.history_len), user_layers=int(bi.user_layers),
      user_heads=int(bi.user_heads), user_hidden=int(bi.user_hidden),
      user_dropout=float(bi.user_dropout), use_rating=bool(bi.use_rating),
      use_position=bool(bi.use_position), rating_hidden=tuple(cfg.rating_head.hidden),
      rating_output=cfg.rating_head.output, rating_dropout=float(cfg.rating_head.dropout),
      discriminator_hidden=tuple(cfg.discriminator.hidden),
      discriminator_dropout=float(cfg.discriminator.dropout),
      reverse_gradient=bool(cfg.discriminator.reverse_gradient), rngs=rngs)


