"""The bi-encoder's data: RecBole-CDR protocol, shared catalogue, histories, resumable batches.

    data = BiPreparedData(config)              # numpy only; tasks/bi_encoder.py wires it
    task = tasks.make_task(config, data=data)  # config.model.kind == 'bi_encoder'

  * `train_batches(use_source=, use_target=, seed=, tokens=None)`: endless (src, tgt) batches of
    `bi_pipeline.train_batches` (user-level denoising batches), resumable: `get_state()` is
    {'seed', 'step'} (plain ints) and `set_state` rebuilds the streams and fast-forwards them
    (batches are index arrays, cheap to redraw), so a resumed run sees the batches of an
    uninterrupted one. An unused side repeats the used side's batch (the step ignores it).
  * `batch_size`, `target_batch_size` (users per domain and step), `scales`, `report`.
  * `catalogue` (every domain's items, one row per text), `train` (per-domain histories),
    `num_users` / `user_offset` (one user table over both domains: the source's users, then the
    target's),
    `eval_sets` / `eval_hist` (the target's valid and test users, positives, exclusions and the
    histories they may see).

The item text table, the model and the full-ranking evaluator are the task's
(`tasks/bi_encoder.py`).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import ml_collections
import numpy as np

from crossrec_jax.data import bi_pipeline
from crossrec_jax.data import recbole_protocol as rp
from crossrec_jax.data import schema
from crossrec_jax.data import sources

__all__ = ["PairedBatches", "BiPreparedData"]

class PairedBatches:
  """Endless (src, tgt) training batches of one phase; resumable by step count.

  The state is {'seed', 'step'}: `set_state` rebuilds the streams from their seed and starts
  them at `step` (each batch is a pure function of (seed, stream index, step)).
  """

  def __init__(self, make: Callable[[], dict[str, Iterator[bi_pipeline.Batch]]], seed: int,
               tokens: Any = None):
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
    for it in self._its.values():  # grain streams restart at the step (bi_pipeline.train_batches)
      it.set_state({**it.get_state(), "step": int(state["step"])})
    self._step = int(state["step"])


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
    # One user table for both domains (user-id embeddings): the target's rows follow the source's.
    self.user_offset = {"source": 0, "target": int(src.domain.interactions.num_users)}
    self.num_users = self.user_offset["target"] + int(tgt.domain.interactions.num_users)
    self.train = {side: bi_pipeline.domain_history(p.domain, p.split.train, self.catalogue,
                                                   user_offset=self.user_offset[side])
                  for side, p in (("source", src), ("target", tgt))}
    self.eval_sets, self.eval_hist = {}, {}
    for which in ("valid", "test"):
      ev = rp.eval_sets(tgt.domain, tgt.split, which, test_sees_valid=bool(d.bi.test_sees_valid))
      self.eval_sets[which] = ev
      visible = np.union1d(tgt.split.train, tgt.split.valid) if (
          which == "test" and d.bi.test_sees_valid) else tgt.split.train
      self.eval_hist[which] = bi_pipeline.domain_history(
          tgt.domain, visible, self.catalogue, user_offset=self.user_offset["target"])
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

  # ---------------------------------------------------------------------------- training batches

  def train_batches(self, *, use_source: bool, use_target: bool, seed: int,
                    tokens: Any = None) -> PairedBatches:
    """Endless (src, tgt) batches of a phase (module docstring); resumable. `tokens` (an
    `ItemTokens`-like object with `input_ids`, `attention_mask` per catalogue row): a trainable
    item tower's batches carry their items' token ids."""
    if not (use_source or use_target):
      raise ValueError("a phase must use the source or the target training set")
    used = [(i, side) for i, (side, u) in enumerate((("source", use_source),
                                                     ("target", use_target))) if u]

    def make() -> dict[str, Iterator[bi_pipeline.Batch]]:
      return {side: bi_pipeline.train_batches(self.train[side], self.batch_cfg, seed=seed,
                                              stream=i) for i, side in used}

    return PairedBatches(make, seed, tokens=tokens)
