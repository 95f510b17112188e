"""The hybrid task: the cross-encoder's data and evaluation, `models/hybrid.py`'s model.

Data: `data/prepare.prepare_data(config)` with `data.id_history_len` > 0 (the examples carry the
ID history beside their text; the text itself is not read). Model: `HybridRatingModel` over the
MiniLM vectors of both domains' item texts, encoded once and cached on disk
(`tasks/item_cache.py`: a second run, or a study's next cell, reads them back). Objective and
evaluator: the cross-encoder's (`objectives/cross_encoder.py`, `RatingEvaluator`), since the
model returns the recommenders' output dict.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax.data import sources
from crossrec_jax.data import text as text_lib
from crossrec_jax.models import hybrid as hybrid_lib
from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.objectives import bias_ridge
from crossrec_jax.tasks import cross_encoder
from crossrec_jax.tasks import item_cache as item_cache_lib

__all__ = ["HybridTask", "item_text_vectors", "labels_used"]


def item_text_vectors(config: ml_collections.ConfigDict, pair: Any) -> np.ndarray:
  """[I_source + I_target, D] pooled text vectors of both catalogues (source rows first)."""
  from crossrec_jax.models import hf_import  # pylint: disable=g-import-not-at-top  (tokenizers)
  d, m = config.data, config.model
  fields = text_lib.get_template(d.template).item_fields
  texts = [str(t) for dom in (pair.source, pair.target)
           for t in text_lib.item_texts(dom.items, fields)]
  tokenizer = hf_import.load_tokenizer(m.encoder.path or None)
  encoder = recommender_lib.build_encoder(m.encoder, rngs=nnx.Rngs(0))  # frozen: any seed
  cache_dir = m.hybrid.item_cache_dir or str(
      sources.default_cache_dir(d.cache_dir or None) / "item_vectors")
  cache = item_cache_lib.ItemEmbeddingCache(cache_dir)
  vectors, _ = cache.get_or_encode(encoder, tokenizer, texts, template=d.template,
                                   max_len=int(m.hybrid.item_max_len), pooling=m.pooling,
                                   batch_size=int(m.hybrid.item_batch_size))
  return np.asarray(vectors, np.float32)


labels_used = config_base.labels_used  # which domains' ratings the phases read
NEIGHBOUR_PRIORS = config_base.NEIGHBOUR_PRIORS  # what an item's text neighbours lend it


class HybridTask(cross_encoder.CrossEncoderTask):
  """The hybrid text + ID rating model over the cross-encoder's prepared data."""

  def __init__(self, config: ml_collections.ConfigDict, data: Any = None):
    if int(config.data.get("id_history_len", 0)) <= 0:
      raise ValueError("model.kind='hybrid' reads the ID history: set data.id_history_len > 0 "
                       f"(got {config.data.get('id_history_len', 0)})")
    super().__init__(config, data)
    if self.data.pair is None:
      raise ValueError("model.kind='hybrid' needs the prepared data's domains (PreparedData.pair)")
    self._raw = None

  def raw_text_vectors(self) -> np.ndarray:
    if self._raw is None:
      self._raw = item_text_vectors(self.config, self.data.pair)
    return self._raw

  def neighbours(self) -> tuple[np.ndarray, np.ndarray] | None:
    k = int(self.config.model.hybrid.neighbours)
    if k <= 0:
      return None
    return hybrid_lib.text_neighbours(self.raw_text_vectors(), len(self.data.pair.source.items), k)

  def source_prior(self) -> np.ndarray | None:
    """What source items lend their text neighbours with `model.hybrid.neighbour_prior` =
    'source_mean': each one's shrunk mean rating offset over every rating of the (subsampled)
    source domain, the rows the title-prior baseline reads too (no target row, and the source is
    never scored). Zeros when no phase uses source labels (target_only: nothing to lend); None
    with 'learnt_bias' (the neighbours lend their learnt ID biases)."""
    h = self.config.model.hybrid
    kind = str(h.get("neighbour_prior", "learnt_bias"))
    if kind not in NEIGHBOUR_PRIORS:
      raise ValueError(f"model.hybrid.neighbour_prior must be one of {NEIGHBOUR_PRIORS}, got "
                       f"{kind!r}")
    if kind == "learnt_bias" or int(h.neighbours) <= 0:
      return None
    source = self.data.pair.source
    if not labels_used(self.config)[0]:
      return np.zeros(len(source.items), np.float32)
    inter = source.interactions
    return hybrid_lib.source_item_prior(inter.item, source.scale.normalise(inter.rating),
                                        len(source.items), float(h.source_prior_shrink))

  def initial_biases(self, neighbours: tuple[np.ndarray, np.ndarray] | None
                     ) -> dict[str, np.ndarray]:
    """The bias model's closed-form solution on the labels the run's phases train on, in the
    model's terms (`HybridRatingModel.set_biases`): mu and the domain offsets, the source
    items' biases, and the target items' biases as residuals over their text-neighbour prior
    (the prior the model adds: source biases softmax(s * cos)-weighted), shrunk towards it.
    User biases stay 0: the model reads each user's offset from the example's history. A
    domain whose labels no phase trains on (target_only's source) contributes nothing."""
    h = self.config.model.hybrid
    num_users, num_items = self._counts()
    use = labels_used(self.config)
    rows = [self._labelled(n) if u else None for n, u in zip(("source_train", "target_train"), use)]
    rows = [r if r is not None and len(r[2]) else None for r in rows]
    item_bias = [np.zeros(n) for n in num_items]
    mu = {}
    if rows[0] is not None:
      mu[0], _, item_bias[0] = bias_ridge.fit_biases(*rows[0], num_users[0], num_items[0])
    prior = np.zeros(num_items[1])
    if neighbours is not None and rows[0] is not None:
      index, sims = neighbours[0][num_items[0]:], neighbours[1][num_items[0]:]
      w = np.exp(float(h.neighbour_scale) * (sims - sims.max(1, keepdims=True)))
      lent = self.source_prior()
      lent = item_bias[0] if lent is None else lent
      prior = np.sum(w / w.sum(1, keepdims=True) * lent[index], 1)
    if rows[1] is not None:
      mu[1], _, b_t = bias_ridge.fit_biases(*rows[1], num_users[1], num_items[1], prior=prior)
      item_bias[1] = b_t - prior
    if not mu:
      return {}
    base = mu.get(0, mu.get(1))
    return {"mu": base, "domain_offset": np.array([0.0, mu.get(1, base) - base]),
            "item_bias": np.concatenate(item_bias)}

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    model = self._build(rngs)
    if bool(self.config.model.hybrid.get("init_biases", False)):
      model.set_biases(**self.initial_biases(self.neighbours()))
    return model

  def _build(self, rngs: nnx.Rngs) -> nnx.Module:
    h, m = self.config.model.hybrid, self.config.model
    num_users, num_items = self._counts()
    return hybrid_lib.HybridRatingModel(
        hybrid_lib.standardise(self.raw_text_vectors(), int(h.text_dims)),
        num_users=num_users, num_items=num_items,
        dim=int(h.dim), hidden=int(h.hidden), dropout=float(h.dropout),
        id_embeddings=bool(h.id_embeddings), id_biases=bool(h.id_biases),
        id_dropout=float(h.id_dropout), id_domains=str(h.id_domains),
        text_features=bool(h.text_features), neighbours=self.neighbours(),
        source_prior=self.source_prior(),
        neighbour_scale=float(h.neighbour_scale),
        offset_shrink=float(h.get("offset_shrink", hybrid_lib.SHRINK)),
        tower_out_scale=float(h.get("tower_out_scale", 0.1)),
        history_offset=bool(h.get("history_offset", True)),
        init_scale=float(h.init_scale), discriminator_hidden=tuple(m.discriminator.hidden),
        discriminator_dropout=float(m.discriminator.dropout),
        reverse_gradient=bool(m.discriminator.reverse_gradient), rngs=rngs)

  def step_flops(self, model, alignment, use_source, use_target):
    del model, alignment, use_source, use_target
    return None  # a few small matmuls and gathers: not worth an MFU line
