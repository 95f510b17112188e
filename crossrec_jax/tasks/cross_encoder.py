"""The cross-encoder task: one BERT pass per (history, candidate) text, rating + domain heads.

Data: `data/prepare.prepare_data(config)` (token arrays, grain batches, per-process slices).
Model: `models/recommender.CrossEncoderRecommender` (with ID terms in the rating head when
`model.rating_head.id_biases` / `id_dim` say so: `models/id_rating_head.py`, built here because
the ID tables need the domains' counts; `init_id_biases` starts them at the bias model's ridge
fit on the labels the phases train on). Objective: `objectives/cross_encoder.py`.
Evaluator: rating RMSE / MAE on the domain's own scale over every row of an evaluation split,
gathered across processes (`RatingEvaluator`); the study's ranking protocols are `eval/`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from crossrec_jax import config_base
from crossrec_jax.data import prepare as prepare_lib
from crossrec_jax.eval import metrics as metrics_lib
from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import bert_flops
from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.objectives import bias_ridge
from crossrec_jax.objectives import cross_encoder as objective_lib
from crossrec_jax.objectives import losses
from crossrec_jax.tasks import base
from crossrec_jax.tasks.compiled import CompiledStep

__all__ = ["CrossEncoderTask", "RatingEvaluator", "make_eval_step", "evaluate"]


def make_eval_step(graphdef: nnx.GraphDef, rng_state: nnx.State, rest: nnx.State, *,
                   rating_output: str, params_sharding: Any = None,
                   batch_sharding: Any = None) -> Callable[..., dict[str, jax.Array]]:
  """Builds the jitted `eval_step(params, batch, rest=None) -> predictions` (no dropout).

  Predictions: 'rating' [B] in [0, 1] (a probability for 'logit' heads), 'domain_logit' [B],
  'features' [B, H]. `rest` defaults to the one given here (empty for BERT models).
  """
  def eval_fn(params, rest_, batch):
    model = nnx.merge(graphdef, params, rng_state, rest_)
    out = model(batch, 0.0, deterministic=True)
    return {"rating": recommender_lib.predict_rating(out, rating_output),
            "domain_logit": out["domain_logit"], "features": out["features"]}

  jit_kwargs: dict[str, Any] = {}
  if params_sharding is not None or batch_sharding is not None:
    jit_kwargs["in_shardings"] = (params_sharding, None, batch_sharding)
  compiled = CompiledStep(eval_fn, **jit_kwargs)

  def eval_step(params, batch, rest_=None):
    return compiled(params, rest if rest_ is None else rest_, batch)

  eval_step.compiled = compiled  # type: ignore[attr-defined]  (num_traces for tests)
  return eval_step


def evaluate(eval_step: Callable[..., dict[str, jax.Array]], params: Any, batches: Any,
             scale: Any, put: Callable[[Any], Any] = lambda b: b,
             rest: Any = None) -> dict[str, float]:
  """Rating RMSE / MAE (and AUC of like = rating above the scale's midpoint, where both classes
  occur) on the domain's own scale over every valid row of `batches`.

  `rest`: the model's non-parameter state to evaluate with (None: the eval step's own).

  Multi-process: each process holds its slice of every batch; the predictions and the batch's
  ratings are gathered into global rows (the same order for both: they share the batch
  sharding), so every process computes the metrics over all rows.
  """
  preds, truth = [], []
  for batch in batches:
    placed = put(batch)
    out = eval_step(params, placed, rest)
    # A plain jax.device_get fails on arrays that span other processes' devices.
    got = multihost_utils.process_allgather(
        {"pred": out["rating"], "rating": placed["rating"], "valid": placed["valid"]}, tiled=True)
    valid = np.asarray(got["valid"]) > 0
    preds.append(np.asarray(got["pred"])[valid])
    truth.append(np.asarray(got["rating"])[valid])
  pred, true = np.concatenate(preds), np.concatenate(truth)
  result = {"n": float(len(pred))}
  if scale.implicit:  # every row is a positive: rating errors mean nothing (see eval/evaluate.py)
    result["mean_prediction"] = float(pred.mean())
    return result
  pred = scale.denormalise(pred)
  result.update(rmse=metrics_lib.rmse(pred, true), mae=metrics_lib.mae(pred, true))
  like = true > 0.5 * (scale.low + scale.high)  # as eval/evaluate.py's default AUC threshold
  if like.any() and not like.all():  # AUC needs both classes (`train.select='auc'`)
    result["auc"] = metrics_lib.auc(pred, like)
  return result


class RatingEvaluator(base.Evaluator):
  """`evaluator(name, params, rest)`: `evaluate` over `data.eval_batches(name)`."""

  def __init__(self, data: Any, eval_step: Callable[..., Any], put: Callable[[Any], Any]):
    self._data, self._eval_step, self._put = data, eval_step, put

  def __call__(self, name: str, params: Any, rest: Any) -> dict[str, float]:
    return evaluate(self._eval_step, params, self._data.eval_batches(name),
                    self._data.scale_of(name), self._put, rest)


class CrossEncoderTask(base.DataTask):
  """The cross-encoder over `prepare.PreparedData` (module docstring)."""

  def __init__(self, config: ml_collections.ConfigDict, data: Any = None):
    self.config = config
    self.data = data if data is not None else prepare_lib.prepare_data(config)

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    if not recommender_lib.uses_ids(self.config.model):
      return recommender_lib.build_cross_encoder(self.config.model, rngs=rngs)
    num_users, num_items = self._counts()
    model = recommender_lib.build_cross_encoder(self.config.model, rngs=rngs,
                                                num_users=num_users, num_items=num_items)
    if bool(self.config.model.rating_head.get("init_id_biases", False)):
      model.rating_head.set_biases(**self.initial_id_biases())
    return model

  def _pair(self) -> Any:
    pair = getattr(self.data, "pair", None)
    if pair is None:
      raise ValueError(f"model.kind={self.config.model.kind!r} with ID tables needs the "
                       "prepared data's domains (PreparedData.pair)")
    return pair

  def _counts(self) -> tuple[tuple[int, int], tuple[int, int]]:
    """((source, target) user counts, (source, target) item counts): the ID tables' sizes."""
    pair = self._pair()
    return ((pair.source.interactions.num_users, pair.target.interactions.num_users),
            (len(pair.source.items), len(pair.target.items)))

  def _labelled(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, item, label on [0, 1]) of the labelled rows of a training set."""
    examples = self.data.sources[name]
    if not hasattr(examples, "columns"):
      raise ValueError("starting ID biases at the ridge fit reads the training rows in memory: "
                       "set data.use_tfds=False")
    keep = np.asarray(examples["label_mask"]) > 0
    return (np.asarray(examples["user"])[keep], np.asarray(examples["item"])[keep],
            np.asarray(examples["label"])[keep])

  def initial_id_biases(self) -> dict[str, Any]:
    """The bias model's closed-form fit (`objectives/bias_ridge.py`) per domain on the labelled
    training rows the run's phases train on, in `IdRatingHead.set_biases`' terms: mu (the first
    trained domain's mean), the target's offset from it, and both domains' user and item biases
    (zero for a domain no phase trains on, e.g. target_only's source)."""
    counts = tuple(zip(*self._counts()))  # ((users, items) of the source, of the target)
    user_bias = [np.zeros(u) for u, _ in counts]
    item_bias = [np.zeros(i) for _, i in counts]
    mu: dict[int, float] = {}
    for d, (name, used) in enumerate(zip(("source_train", "target_train"),
                                         config_base.labels_used(self.config))):
      rows = self._labelled(name) if used else None
      if rows is None or not len(rows[2]):
        continue
      mu[d], user_bias[d], item_bias[d] = bias_ridge.fit_biases(*rows, *counts[d])
    if not mu:
      return {}
    base = mu.get(0, mu.get(1))
    return {"mu": base, "domain_offset": np.array([0.0, mu.get(1, base) - base]),
            "user_bias": np.concatenate(user_bias), "item_bias": np.concatenate(item_bias)}

  def train_batches(self, *, use_source: bool, use_target: bool, seed: int) -> Any:
    return self.data.train_batches(use_source=use_source, use_target=use_target, seed=seed)

  def objective(self, alignment: losses.Alignment) -> base.Objective:
    return objective_lib.objective(alignment, self.config.model.rating_head.output)

  def make_evaluator(self, graphdef: nnx.GraphDef, rng_state: nnx.State, rest: nnx.State, *,
                     put: Callable[[Any], Any], batch_sharding: Any) -> RatingEvaluator:
    eval_step = make_eval_step(graphdef, rng_state, rest,
                               rating_output=self.config.model.rating_head.output,
                               batch_sharding=batch_sharding)
    return RatingEvaluator(self.data, eval_step, put)

  def step_flops(self, model: nnx.Module, alignment: losses.Alignment, use_source: bool,
                 use_target: bool) -> Callable[[base.Batch, base.Batch], float] | None:
    """Analytic model FLOPs of the step (padded shapes, `models/bert_flops.step_flops`)."""
    enc_cfg = getattr(getattr(model, "encoder", None), "config", None)
    if not isinstance(enc_cfg, bert_lib.BertConfig):
      return None
    model_cfg = self.config.model
    heads = (tuple(model_cfg.rating_head.hidden),)
    if alignment.uses_discriminator:
      heads += (tuple(model_cfg.discriminator.hidden),)
    pooler = model_cfg.pooling == "pooler"

    def count(src: base.Batch, tgt: base.Batch) -> float:
      total = 0.0
      for used, batch in ((use_source, src), (use_target, tgt)):
        if used:
          rows, seq = batch["input_ids"].shape
          total += bert_flops.step_flops(enc_cfg, rows, seq, head_widths=heads, pooler=pooler)
      return total

    return count
