"""A hybrid text + ID rating model over cached item text vectors (the fast path of the study).

The cross-encoder reads a user's history as text, so at a CPU budget it sees 0-3 of a user's ~86
earlier ratings and cannot learn the user effect (issue 13). This model keeps the language model
as the item reader but runs it once per item, not once per example: every item's text is encoded
by the frozen MiniLM (`tasks/item_cache.py`), and a small model on top predicts (on [0, 1])

    r(u, i) = mu + mu_d + b_text(t_i) + b_hist(u) + w * offset(u)     text and history
              + prior(i)                                              text neighbours
              + <p_text(u) + e_u, q_text(t_i) + e_i + prior_e(i)>
              + b_u + b_i                                             IDs

  t_i         the item's standardised MiniLM vector (frozen; `ItemTextVectors`, in the state's rest)
  q_text      item tower MLP(t_i) -> (q, b_text), shared by both domains
  p_text      user tower over the ID history (SVD++'s implicit feedback with text item vectors):
              the mean of the history's text vectors, their rating-weighted mean (ratings only
              where the example may show them), and counts
  offset(u)   the user's shrunk mean residual over the history's shown ratings (`user_offset`,
              shrunk by `offset_shrink`): a bias model's closed-form user bias, read from the
              example, so a user whose few ratings trained no ID still gets one
              (`history_offset=False` leaves it out: the user effect is then b_u and the towers')
  prior(i)    the text-neighbour prior: the k source items whose MiniLM vectors are nearest the
              item's lend it their learnt ID bias (and embedding), softmax(s * cosine)-weighted
              (`text_neighbours`, precomputed). The language model's way to a title prior: an
              item whose text the source rated transfers that rating, one whose text is new
              borrows from similar texts (a source item is never its own neighbour). With
              `source_prior` the neighbours lend a fixed value instead of their learnt bias: each
              source item's shrunk mean rating offset (`source_item_prior`), which transfers
              better than the bias of a model fitted with user biases (README, "Transfer study")
  b_u, b_i, e_u, e_i   ID biases / embeddings, each dropped with probability `id_dropout` in
              training (one keep mask per user and per item), so users and items without ratings
              fall back to text. `id_domains`: which domains' examples use them -- 'both';
              'source' (target users and items read from text, neighbours and history alone:
              meant for few labels, where Adam's sparse updates of few-label target IDs overfit);
              'target' (the source learnt through the towers alone). Neither was compared with
              'both' on a valid split (the earlier readings used test RMSE, see README), so the
              default stays 'both' and the choice is the user's to select on valid.

The output dict is the recommenders' (`models/recommender.py`): 'rating', 'features' = [p_text,
q_text] (text only: what DANN / MMD / CORAL align and the PAD measures), 'domain_logit'. The
groups: `encoder` (towers and the shared scalars), `rating_head` (the ID tables alone, so their
learning rate is their own), `discriminator`. A batch needs 'domain', 'user', 'item',
'history_item', 'history_rating' (`data/examples.py` with `data.id_history_len` > 0).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax.models import heads as heads_lib
from crossrec_jax.models.id_rating_head import global_ids

__all__ = ["ItemTextVectors", "TextTowers", "IdTables", "HybridRatingModel", "standardise",
           "history_summary", "text_neighbours", "source_item_prior"]

# Which domains' examples use the ID tables: 'target' learns the source through text alone, so
# that what transfers (the towers) has to carry the source's item and user effects; 'both'.
ID_DOMAINS = config_base.HYBRID_ID_DOMAINS
# Shrinkage of the user's mean shown rating: (sum of deviations) / (count + SHRINK).
SHRINK = 3.0


class ItemTextVectors(nnx.Variable):
  """[I_source + I_target, D] standardised text vectors (not trained; installed at build)."""


class SourceNeighbours(nnx.Variable):
  """[I, k] int32 source items nearest each item's text, or their [I, k] cosine similarities."""


class SourcePrior(nnx.Variable):
  """[I_source] what each source item lends its text neighbours (not trained; `source_item_prior`)."""


def source_item_prior(item: np.ndarray, label: np.ndarray, num_items: int,
                      shrink: float) -> np.ndarray:
  """[num_items] each item's mean label offset from the labels' mean, shrunk towards 0:
  sum(label - mean) / (count + shrink) (0 for an item without a label). Unlike an item bias fitted
  beside user biases it keeps who rated the item in it, as the title prior's source mean does:
  that is what a target rater of the same text sees too (measured: README, "Transfer study")."""
  item = np.asarray(item, np.int64)
  label = np.asarray(label, np.float64)
  if item.shape != label.shape or not item.size:
    raise ValueError(f"source_item_prior needs as many items as labels, at least one "
                     f"(got {item.shape} and {label.shape})")
  dev = np.bincount(item, weights=label - label.mean(), minlength=num_items)
  return (dev / (np.bincount(item, minlength=num_items) + float(shrink))).astype(np.float32)


def text_neighbours(vectors: np.ndarray, num_source: int, k: int,
                    chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
  """([I, k] int32, [I, k] float32): for every item (source rows first, then target), the k
  source items whose pooled text vectors are most cosine-similar, most similar first; a source
  item is never its own neighbour (its prior must come from other items' ratings)."""
  v = np.asarray(vectors, np.float32)
  v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
  src = v[:num_source]
  k = min(int(k), num_source - 1)
  index = np.zeros((len(v), k), np.int32)
  sims = np.zeros((len(v), k), np.float32)
  for lo in range(0, len(v), chunk):
    sim = v[lo:lo + chunk] @ src.T
    own = np.arange(lo, min(lo + chunk, len(v)))
    is_src = own < num_source
    sim[np.flatnonzero(is_src), own[is_src]] = -np.inf
    top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    top_sim = np.take_along_axis(sim, top, 1)
    order = np.argsort(-top_sim, axis=1, kind="stable")
    index[lo:lo + chunk] = np.take_along_axis(top, order, 1)
    sims[lo:lo + chunk] = np.take_along_axis(top_sim, order, 1)
  return index, sims


def standardise(vectors: np.ndarray, dims: int = 0) -> np.ndarray:
  """Per-dimension z-scores over the catalogue (a well-scaled input for the towers); `dims` > 0
  keeps only the top principal components (each a z-score): the towers' input shrinks, and with
  it the step's gather of every history item's vector."""
  vectors = np.asarray(vectors, np.float32)
  if 0 < dims < vectors.shape[1]:
    centred = vectors - vectors.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    vectors = centred @ vt[:dims].T
  return ((vectors - vectors.mean(0)) / (vectors.std(0) + 1e-6)).astype(np.float32)


def history_summary(text: jax.Array, history_item: jax.Array, history_rating: jax.Array,
                    centre: float = 0.5) -> jax.Array:
  """[B, 2D + 3]: mean text vector of the history, its rating-weighted mean (deviations from
  `centre` over the shown ratings), the shrunk mean deviation, and log counts (shown, all).

  history_item: [B, K] global item rows, -1 = padding; history_rating: [B, K], -1 = not shown.
  """
  present = (history_item >= 0).astype(jnp.float32)
  shown = (history_rating >= 0).astype(jnp.float32) * present
  vecs = text[jnp.maximum(history_item, 0)]  # [B, K, D]
  n_all = present.sum(-1, keepdims=True)
  n_shown = shown.sum(-1, keepdims=True)
  dev = (history_rating - centre) * shown
  mean_all = jnp.einsum("bk,bkd->bd", present, vecs) / jnp.maximum(n_all, 1.0)
  mean_rated = jnp.einsum("bk,bkd->bd", dev, vecs) / jnp.maximum(n_shown, 1.0)
  shrunk = dev.sum(-1, keepdims=True) / (n_shown + SHRINK)
  return jnp.concatenate([mean_all, mean_rated, shrunk, jnp.log1p(n_shown), jnp.log1p(n_all)], -1)


def user_offset(history_rating: jax.Array, expected: jax.Array, shrink: float = SHRINK
                ) -> jax.Array:
  """[B]: the user's shrunk mean residual over the history's shown ratings,
  sum(r_j - expected_j) / (n_shown + shrink): the closed-form user bias of a bias model, read
  from the example, so a user whose few ratings trained no ID still gets one (history_rating -1 =
  not shown; `expected` [B, K] the model's rating of each history item without the user)."""
  shown = (history_rating >= 0).astype(jnp.float32)
  return jnp.sum(shown * (history_rating - expected), -1) / (jnp.sum(shown, -1) + shrink)


class TextTowers(nnx.Module):
  """Item tower MLP(t_i) -> (q [dim], b_text) and user tower MLP(history summary) -> (p, b_hist)."""

  def __init__(self, text_dim: int, dim: int, hidden: int, dropout: float, *,
               neighbour_scale: float = 20.0, out_scale: float = 0.1, rngs: nnx.Rngs):
    # The shared scalars train with the towers (the `encoder` group), not with the sparse ID
    # tables, so that the tables' learning rate can be set low on its own.
    self.mu = nnx.Param(jnp.full((), 0.5, jnp.float32))
    self.domain_offset = nnx.Param(jnp.zeros((2,), jnp.float32))
    # Sharpness of the attention over an item's text neighbours (cosines are ~0.3-1 apart).
    self.neighbour_scale = nnx.Param(jnp.full((), neighbour_scale, jnp.float32))
    # Weight of the user offset read from the history (`user_offset`): 1 = the shrunk mean.
    self.offset_weight = nnx.Param(jnp.ones((), jnp.float32))
    self.item = heads_lib.MLP(text_dim, (hidden,), dim + 1, dropout=dropout, rngs=rngs)
    self.user = heads_lib.MLP(2 * text_dim + 3, (hidden,), dim + 1, dropout=dropout, rngs=rngs)
    # Small outputs at init: the prediction starts near mu, not at a random offset of O(1);
    # out_scale 0 starts the towers at exactly 0, so an init_biases model starts at its fit.
    for mlp in (self.item, self.user):
      mlp.out.kernel[...] = out_scale * mlp.out.kernel[...]

  def __call__(self, item_text: jax.Array, summary: jax.Array, *, deterministic: bool
               ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    qi = self.item(item_text, deterministic=deterministic)
    pu = self.user(summary, deterministic=deterministic)
    return pu[:, :-1], pu[:, -1], qi[:, :-1], qi[:, -1]


class IdTables(nnx.Module):
  """mu, per-domain offsets, and the ID biases and embeddings of both domains' users and items."""

  def __init__(self, num_users: int, num_items: int, dim: int, *, embeddings: bool,
               init_scale: float, rngs: nnx.Rngs):
    self.user_bias = nnx.Param(jnp.zeros((num_users,), jnp.float32))
    self.item_bias = nnx.Param(jnp.zeros((num_items,), jnp.float32))
    self.embeddings = embeddings
    if embeddings:
      init = jax.nn.initializers.normal(init_scale)
      self.user_embedding = nnx.Param(init(rngs.params(), (num_users, dim), jnp.float32))
      self.item_embedding = nnx.Param(init(rngs.params(), (num_items, dim), jnp.float32))


class HybridRatingModel(nnx.Module):
  """The hybrid rating model (module docstring)."""

  kind = "hybrid"
  rating_output = "regression"

  def __init__(self, text: np.ndarray, *, num_users: tuple[int, int], num_items: tuple[int, int],
               dim: int = 32, hidden: int = 256, dropout: float = 0.1, id_embeddings: bool = True,
               id_biases: bool = True, id_dropout: float = 0.1, id_domains: str = "both",
               text_features: bool = True,
               neighbours: tuple[np.ndarray, np.ndarray] | None = None,
               source_prior: np.ndarray | None = None,
               neighbour_scale: float = 20.0, offset_shrink: float = SHRINK,
               tower_out_scale: float = 0.1, history_offset: bool = True,
               init_scale: float = 0.01, discriminator_hidden: tuple[int, ...] = (64,),
               discriminator_dropout: float = 0.1, reverse_gradient: bool = True,
               rngs: nnx.Rngs):
    if text.shape[0] != sum(num_items):
      raise ValueError(f"{text.shape[0]} text vectors for {sum(num_items)} items")
    self.user_offset = (0, int(num_users[0]))
    self.item_offset = (0, int(num_items[0]))
    if id_domains not in ID_DOMAINS:
      raise ValueError(f"model.hybrid.id_domains must be one of {ID_DOMAINS}, got {id_domains!r}")
    self.id_biases, self.text_features = bool(id_biases), bool(text_features)
    self.id_domains = id_domains
    self.offset_shrink = float(offset_shrink)
    self.history_offset = bool(history_offset)
    self.text = ItemTextVectors(jnp.asarray(text, jnp.float32))
    self.use_neighbours = neighbours is not None
    if neighbours is not None:
      if neighbours[0].shape[0] != text.shape[0]:
        raise ValueError(f"neighbours of {neighbours[0].shape[0]} items for {text.shape[0]}")
      self.neighbour_index = SourceNeighbours(jnp.asarray(neighbours[0], jnp.int32))
      self.neighbour_sim = SourceNeighbours(jnp.asarray(neighbours[1], jnp.float32))
    self.use_source_prior = source_prior is not None
    if source_prior is not None:
      if neighbours is None or np.shape(source_prior) != (int(num_items[0]),):
        raise ValueError(f"source_prior needs neighbours and one value per source item "
                         f"({int(num_items[0])}), got shape {np.shape(source_prior)}")
      self.source_prior = SourcePrior(jnp.asarray(source_prior, jnp.float32))
    self.encoder = TextTowers(text.shape[1], dim, hidden, dropout,
                              neighbour_scale=neighbour_scale, out_scale=tower_out_scale,
                              rngs=rngs)
    self.rating_head = IdTables(sum(num_users), sum(num_items), dim,
                                embeddings=id_embeddings, init_scale=init_scale, rngs=rngs)
    self.id_dropout = nnx.Dropout(id_dropout, rngs=rngs)
    self.discriminator = heads_lib.DomainDiscriminator(
        2 * dim, tuple(discriminator_hidden), dropout=discriminator_dropout,
        reverse=reverse_gradient, rngs=rngs)

  def set_biases(self, mu: float | None = None, domain_offset: np.ndarray | None = None,
                 item_bias: np.ndarray | None = None) -> None:
    """Starts the shared mean, the domain offsets and the item ID biases at given values (the
    bias model's closed-form fit: `tasks/hybrid.HybridTask.initial_biases`); None keeps one."""
    if mu is not None:
      self.encoder.mu[...] = jnp.asarray(mu, jnp.float32)
    if domain_offset is not None:
      self.encoder.domain_offset[...] = jnp.asarray(domain_offset, jnp.float32)
    if item_bias is not None:
      if np.shape(item_bias) != self.rating_head.item_bias[...].shape:
        raise ValueError(f"item_bias of shape {np.shape(item_bias)} for "
                         f"{self.rating_head.item_bias[...].shape} items")
      self.rating_head.item_bias[...] = jnp.asarray(item_bias, jnp.float32)

  def _lent_bias(self, item_bias: jax.Array) -> jax.Array:
    """What the neighbours lend (indexed by source item): the fixed source prior, or the learnt
    ID biases (source rows first, so a neighbour index is also an index into the whole table)."""
    return self.source_prior[...] if self.use_source_prior else item_bias

  def _history_offset(self, hist: jax.Array, history_rating: jax.Array, domain: jax.Array
                      ) -> jax.Array:
    """[B] `user_offset`: the residuals of the history's shown ratings against mu + the history
    items' ID biases and text-neighbour prior (stop_gradient: the offset reads the biases, it
    does not train them)."""
    expected = self.encoder.mu[...] + self.encoder.domain_offset[...][domain][:, None]
    if self.id_biases:
      item_bias = jax.lax.stop_gradient(self.rating_head.item_bias[...])
      safe = jnp.maximum(hist, 0)
      expected = expected + item_bias[safe]
      if self.use_neighbours:  # and their text-neighbour prior, as the candidate's in __call__
        w = jax.nn.softmax(jax.lax.stop_gradient(self.encoder.neighbour_scale[...])
                           * self.neighbour_sim[...][safe], axis=-1)
        prior = jnp.sum(w * self._lent_bias(item_bias)[self.neighbour_index[...][safe]], -1)
        expected = expected + jnp.where((domain > 0)[:, None], prior, 0.0)
    return user_offset(jnp.where(hist >= 0, history_rating, -1.0), expected, self.offset_shrink)

  def __call__(self, batch: Mapping[str, jax.Array], lam: jax.typing.ArrayLike = 0.0, *,
               deterministic: bool = True) -> dict[str, Any]:
    domain = batch["domain"].astype(jnp.int32)
    user = global_ids(batch["user"].astype(jnp.int32), domain, self.user_offset)
    item = global_ids(batch["item"].astype(jnp.int32), domain, self.item_offset)
    hist = batch["history_item"].astype(jnp.int32)
    hist = jnp.where(hist >= 0, global_ids(hist, domain[:, None], self.item_offset), -1)
    text = self.text[...]
    summary = history_summary(text, hist, batch["history_rating"].astype(jnp.float32))
    p, b_hist, q, b_text = self.encoder(text[item], summary, deterministic=deterministic)
    if not self.text_features:  # the ID-only ablation: the text towers contribute nothing
      p, q = jnp.zeros_like(p), jnp.zeros_like(q)
      b_hist, b_text = jnp.zeros_like(b_hist), jnp.zeros_like(b_text)
    ids = self.rating_head
    pred = self.encoder.mu[...] + self.encoder.domain_offset[...][domain] + b_text + b_hist
    # One keep mask per (example, user) and per (example, item): bias and embedding drop together.
    ones = jnp.ones((domain.shape[0], 2), jnp.float32)
    keep = (self.id_dropout(ones, deterministic=deterministic) > 0).astype(jnp.float32)
    if self.id_domains == "target":  # the source is learnt through text alone (module docstring)
      keep = keep * (domain > 0).astype(jnp.float32)[:, None]
    elif self.id_domains == "source":  # the target reads its users and items from text + history
      keep = keep * (domain == 0).astype(jnp.float32)[:, None]
    keep_u, keep_i = keep[:, 0], keep[:, 1]
    if self.id_biases:
      pred = pred + keep_u * ids.user_bias[...][user] + keep_i * ids.item_bias[...][item]
    # The ID-only ablation is plain biased MF: no history evidence either.
    if self.text_features and self.history_offset:
      offset = self._history_offset(hist, batch["history_rating"], domain)
      pred = pred + self.encoder.offset_weight[...] * offset
    p_full, q_full = p, q
    if ids.embeddings:
      p_full = p + keep_u[:, None] * ids.user_embedding[...][user]
      q_full = q + keep_i[:, None] * ids.item_embedding[...][item]
    if self.use_neighbours:
      # The text-neighbour prior: the source items nearest this item's text lend it their learnt
      # bias (and embedding), attention-weighted by cosine. A target item gets it always (its own
      # IDs learn the residual); a source item only when its IDs are dropped, which is how the
      # sharpness is learnt without any target label.
      nb = self.neighbour_index[...][item]
      w = jax.nn.softmax(self.encoder.neighbour_scale[...] * self.neighbour_sim[...][item], axis=-1)
      use = jnp.where(domain > 0, 1.0, 1.0 - keep_i)
      if self.id_biases:
        pred = pred + use * jnp.sum(w * self._lent_bias(ids.item_bias[...])[nb], -1)
      if ids.embeddings:
        q_full = q_full + use[:, None] * jnp.einsum("bk,bkd->bd", w, ids.item_embedding[...][nb])
    pred = pred + jnp.sum(p_full * q_full, -1)
    if deterministic:  # predictions on the scale; training sees the unclipped value
      pred = jnp.clip(pred, 0.0, 1.0)
    # What the alignments see: the text towers' vectors (the IDs are per domain by construction).
    features = jnp.concatenate([p, q] if self.text_features else [p_full, q_full], -1)
    return {"features": features, "rating": pred,
            "domain_logit": self.discriminator(features, lam, deterministic=deterministic)}
