"""What the cross-encoder runs of one (label fraction, seed) share: data, target split, plan.

Fair comparison. For one (fraction, seed) every method is scored on the same `EvalPlan` (rows,
sampled candidates) of the same target users, and every baseline is fitted on exactly the target
rows whose labels the text models train on (the run's 'target_train' example set, which a preset
may subsample).

A cell (this one, or `study/bi_encoder.BiCell`) gives the runner: `prepared` (the trainer's
data), `ready()`, `summary()`, `score(config, run_dir)` (metrics of a finished run) and
`fit_baseline(name, out_dir)`.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
from typing import Any

import ml_collections
import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import sources
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.eval import evaluate
from crossrec_jax.eval import run_baselines
from crossrec_jax.study import finished
from crossrec_jax.study import grid


def _load_pair(name: str, data_dir: str, cache_dir: str) -> schema.CrossDomainData:
  return sources.load_cached(name, data_dir or None, cache_dir or None)


class Cell:
  """What every run of one (label fraction, seed) shares: prepared data, target split, plan.

  The target domain and split are recomputed exactly as `data.prepare.prepare_data` builds them
  (users subsampled with seed + 1, `splits.make_split` with the seed) and checked against the
  prepared data's report, so the protocol scores the examples the trainer held out.
  """

  def __init__(self, study: ml_collections.ConfigDict, fraction: float, seed: int,
               config: ml_collections.ConfigDict):
    from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
    self.study, self.fraction, self.seed, self.config = study, fraction, seed, config
    cfg = config.data
    pair = _load_pair(cfg.source, cfg.data_dir, cfg.cache_dir)
    self.source = prepare_lib.subsample_users(pair.source, int(cfg.users.source), seed=seed)
    self.target = prepare_lib.subsample_users(pair.target, int(cfg.users.target), seed=seed + 1)
    self.source_split = splits_lib.make_split(self.source, cfg.split, seed=seed,
                                              label_fraction=float(cfg.source_label_fraction))
    self.split = splits_lib.make_split(self.target, cfg.split, seed=seed,
                                       label_fraction=float(fraction),
                                       label_count=int(cfg.get("label_count", 0)))
    self.plan = evaluate.make_plan(self.target, self.split, grid.eval_spec(study))
    self._prepared = None
    self._evaluator = None

  @property
  def prepared(self):
    """The trainer's PreparedData for this cell (built once, shared by every method)."""
    if self._prepared is None:
      from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
      self._prepared = prepare_lib.prepare_data(self.config)
      got = self._prepared.report["target"]["split"]
      if got != self.split.summary():
        raise AssertionError(f"the study's target split ({self.split.summary()}) differs from the "
                             f"trainer's ({got}); data.prepare changed how it subsamples/splits")
    return self._prepared

  def labelled_train_rows(self) -> np.ndarray:
    """Target rows whose ratings the text models train on (their 'target_train' examples)."""
    src = self.prepared.sources["target_train"]
    columns = getattr(src, "columns", None)
    if columns is not None:
      return np.sort(np.asarray(columns["row"])[np.asarray(columns["label_mask"]) > 0])
    if int(self.config.data.max_examples.target_train) <= 0:
      return self.split.labelled_rows
    records = [src[i] for i in range(len(src))]
    return np.sort(np.array([r["row"] for r in records if r["label_mask"] > 0], np.int64))

  def baseline_split(self) -> splits_lib.Split:
    """The split with `train_labelled` = exactly the text models' labelled training rows."""
    rows = self.labelled_train_rows()
    labelled = np.isin(self.split.train, rows)
    if labelled.sum() != len(rows):
      raise AssertionError("a labelled training example is not a training row of the split")
    return dataclasses.replace(self.split, train_labelled=labelled)

  def example_kw(self) -> dict[str, Any]:
    from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
    cfg = self.config.data
    cache_dir = sources.default_cache_dir(cfg.cache_dir or None)
    from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
    return dict(tokenizer=_tokenizer(), **examples_lib.config_kw(cfg),
                cache=tokenize_lib.TokenCache(_tokenizer(), cache_dir / "tokens"))

  def batch_config(self):
    from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    cfg = self.config.data
    return pipeline.BatchConfig(batch_size=int(cfg.eval_batch_size),
                                buckets=tuple(int(b) for b in cfg.buckets))

  def ready(self) -> None:
    """Builds the shared data and evaluator now (so that no run's timing includes them)."""
    self.prepared  # pylint: disable=pointless-statement
    self.evaluator  # pylint: disable=pointless-statement

  def summary(self) -> str:
    return self.plan.summary()

  def score(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path) -> dict[str, float]:
    """The study's protocol on a finished run: the parameters it selected on target valid
    (`train.select`), else its last checkpoint."""
    eval_step, params = finished.restore_selected(config, run_dir, data=self.prepared)
    return self.evaluator(evaluate.score_fn_from_eval_step(eval_step, params))

  def fit_baseline(self, name: str, out_dir: pathlib.Path) -> dict[str, float]:
    """Fits baseline `name` on exactly the text models' labelled rows and scores it on the plan."""
    del out_dir  # the cross-encoder's baselines keep nothing but their metrics
    return run_baselines.run_baseline(
        name, self.target, self.baseline_split(), self.plan, self.source, seed=self.seed,
        title_with_year=bool(self.study.title_with_year))

  @property
  def evaluator(self) -> evaluate.Evaluator:
    if self._evaluator is None:
      pair = schema.CrossDomainData(self.source, self.target)
      self._evaluator = evaluate.Evaluator(pair, self.split, plan=self.plan,
                                           example_kw=self.example_kw(),
                                           batch=self.batch_config())
    return self._evaluator


@functools.lru_cache(maxsize=1)
def _tokenizer():
  from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
  return tokenize_lib.load_tokenizer()

