"""Evaluation protocols on a target domain's valid/test rows, for any model, as one flat dict.

Three protocols, all on the target domain's own rating scale:
  (a) rating: every held-out rating of the split part -> 'test/rmse', 'test/mae', 'test/auc'
      (AUC of the predicted rating against like = rating > threshold; default the scale's midpoint,
      i.e. TALLRec's "rating > 3" on 1-5 and "> 5.5" on 1-10), 'test/n_ratings', 'test/n_like';
  (b) ranking: each evaluated user's last held-out item (canonical order) among `num_negatives`
      sampled never-interacted items (seeded, `splits.ranking_candidates`) -> 'test/HR@10',
      'test/NDCG@10', 'test/MRR', 'test/n_users', ...; and optionally full ranking over all
      target items except the user's training items for a subset of users -> 'test/full/HR@10', ...;
  (c) cold start: (a) and (b) restricted to users with no training row in the target domain
      -> 'test/cold/rmse', ... (absent when the split has no such user); and (a) restricted to
      cold-start items, items without a labelled training rating in the target domain (at a
      label fraction < 1 an item may have unlabelled training rows) -> 'test/cold_item/rmse', ...
Ties count in expectation (`ranking.py`): a constant scorer gets HR@K = K / C, never 0 or 1.

`make_plan` (eval/plan.py) fixes the rows and candidates once from (domain, split, EvalSpec), so
every method of a study is scored on exactly the same examples. Two ways to fill a plan with
predictions:
  * `evaluate_model(model, domain, plan)`: a baseline with `predict(users, items)` and/or
    `score(users, candidates)` (eval/baselines.py);
  * `Evaluator(data, split, spec, example_kw=..., batch=...)`: a text model. It builds the
    tokenised rating examples and one example per (user history, candidate item) cell once, then
    `evaluator(score_fn)` runs `score_fn(batch) -> [B] predictions in [0, 1]` (the jitted eval step,
    see `score_fn_from_eval_step`) over fixed-shape, length-bucketed batches from
    `pipeline.eval_batches`; padding rows (`valid` 0) are never counted. The trainer's periodic
    evaluation can hold one Evaluator and call it with the current parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.eval import metrics as metrics_lib
# The plan, the candidate examples and the domain gap live in their own modules; their names stay
# importable from here (`evaluate.make_plan`, `evaluate.proxy_a_distance`, ...) for callers.
from crossrec_jax.eval.candidates import candidate_domain, candidate_examples
from crossrec_jax.eval.domain_gap import proxy_a_distance
from crossrec_jax.eval.plan import (WHICH, EvalPlan, EvalSpec, PartPlan, cold_items, cold_users,
                                    full_candidates, last_row_per_user, make_plan)

__all__ = [
    "WHICH", "EvalSpec", "PartPlan", "EvalPlan", "cold_users", "cold_items", "last_row_per_user",
    "make_plan",
    "full_candidates", "candidate_domain", "candidate_examples", "proxy_a_distance",
    "like_threshold", "rating_metrics", "ranking_scores_metrics", "prefixed", "plan_metrics",
    "evaluate_model", "score_fn_from_eval_step", "collect", "Evaluator",
]


def like_threshold(scale: schema.RatingScale, threshold: float | None = None) -> float:
  """like = rating > this. Default: the scale's midpoint (3 on 1-5, 5.5 on 1-10)."""
  if threshold is not None:
    return float(threshold)
  return 0.5 * (scale.low + scale.high)


def rating_metrics(pred, rating, scale: schema.RatingScale,
                   threshold: float | None = None) -> dict[str, float]:
  """'rmse', 'mae', 'auc', 'n_ratings', 'n_like' of predictions on the domain's own scale.

  AUC needs both classes; where every rating falls on one side of the threshold it is NaN (and
  'n_like' tells why) rather than missing, so tables keep their columns.
  """
  pred, rating = np.asarray(pred, np.float64), np.asarray(rating, np.float64)
  like = rating > like_threshold(scale, threshold)
  out = {"rmse": metrics_lib.rmse(pred, rating), "mae": metrics_lib.mae(pred, rating),
         "n_ratings": float(len(rating)), "n_like": float(like.sum())}
  out["auc"] = metrics_lib.auc(pred, like) if 0 < like.sum() < len(like) else float("nan")
  return out


def ranking_scores_metrics(scores, mask=None, ks: Sequence[int] = (5, 10, 20)) -> dict[str, float]:
  """HR@k, NDCG@k, MRR of the positive in column 0 of [U, C] scores; 'n_users'."""
  scores = np.asarray(scores, np.float64)
  out = metrics_lib.ranking_metrics(scores, k=tuple(ks), positive_index=0, mask=mask)
  out["n_users"] = float(scores.shape[0])
  return out


def prefixed(metrics: Mapping[str, float], prefix: str) -> dict[str, float]:
  return {f"{prefix}/{k}": float(v) for k, v in metrics.items()}


# ----------------------------------------------------------------------------- metrics of a plan


def plan_metrics(plan: EvalPlan, which: str, *, rating_pred=None, rating_true=None,
                 rank_scores=None, full_scores=None) -> dict[str, float]:
  """Flat metrics of one part from predictions aligned with the plan's rows/candidates."""
  part, spec = plan.parts[which], plan.spec
  out: dict[str, float] = {}
  if rating_pred is not None and len(part.rating_rows):
    out.update(prefixed(rating_metrics(rating_pred, rating_true, plan.scale, spec.threshold),
                        which))
    if part.rating_cold.any():
      cold = part.rating_cold
      pred, true = np.asarray(rating_pred)[cold], np.asarray(rating_true)[cold]
      out.update(prefixed(rating_metrics(pred, true, plan.scale, spec.threshold), f"{which}/cold"))
    if part.rating_cold_item is not None and part.rating_cold_item.any():
      cold = part.rating_cold_item
      pred, true = np.asarray(rating_pred)[cold], np.asarray(rating_true)[cold]
      out.update(prefixed(rating_metrics(pred, true, plan.scale, spec.threshold),
                          f"{which}/cold_item"))
  if rank_scores is not None and len(part.rank_rows):
    out.update(prefixed(ranking_scores_metrics(rank_scores, ks=spec.ks), which))
    if part.rank_cold.any():
      out.update(prefixed(ranking_scores_metrics(np.asarray(rank_scores)[part.rank_cold],
                                                 ks=spec.ks), f"{which}/cold"))
  if full_scores is not None and len(part.full_rows):
    out.update(prefixed(ranking_scores_metrics(full_scores, part.full_mask, spec.ks),
                        f"{which}/full"))
  return out


def evaluate_model(model: Any, domain: schema.Domain, plan: EvalPlan) -> dict[str, float]:
  """A baseline on the plan: `predict` for ratings (if it has one), `score` for ranking."""
  inter = domain.interactions
  out: dict[str, float] = {}
  for which, part in plan.parts.items():
    kw: dict[str, Any] = {}
    if hasattr(model, "predict") and len(part.rating_rows):
      rows = part.rating_rows
      kw["rating_pred"] = model.predict(inter.user[rows], inter.item[rows])
      kw["rating_true"] = inter.rating[rows]
    if len(part.rank_rows):
      kw["rank_scores"] = model.score(inter.user[part.rank_rows], part.candidates)
    if len(part.full_rows):
      kw["full_scores"] = model.score(inter.user[part.full_rows], part.full_candidates)
    out.update(plan_metrics(plan, which, **kw))
  return out


# ----------------------------------------------------------------------------- text models


def score_fn_from_eval_step(eval_step: Callable[..., Any], params: Any,
                            key: str = "rating") -> Callable[[Mapping[str, np.ndarray]], Any]:
  """`batch -> eval_step(params, batch)[key]`: the jitted eval step (train/step.py) as a scorer."""
  def score_fn(batch):
    return eval_step(params, batch)[key]
  return score_fn


# What a scorer sees of a batch: the text, and the IDs and ID history that hybrid text + ID models
# read (`models/hybrid.py`; absent keys are skipped). Never the label.
_MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids", "domain", "user", "item",
               "history_item", "history_rating")


def collect(score_fn: Callable[[Mapping[str, np.ndarray]], Any], batches, n: int) -> np.ndarray:
  """[n, ...] outputs of `score_fn` per example, placed by the batches' 'index' key.

  Padding rows (`valid` 0, index -1) are dropped; an example scored twice or never is an error.
  Device outputs are fetched after the loop, so scoring overlaps with host-side batching.
  """
  outs, idxs = [], []
  for batch in batches:
    model_batch = {k: batch[k] for k in _MODEL_KEYS if k in batch}
    pred = score_fn(model_batch)
    if isinstance(pred, Mapping):
      pred = pred["rating"]
    outs.append(pred)
    keep = (np.asarray(batch["valid"]) > 0) & (np.asarray(batch["index"]) >= 0)
    idxs.append((np.asarray(batch["index"]), keep))
  result = None
  seen = np.zeros(n, bool)
  for pred, (index, keep) in zip(outs, idxs):
    pred = np.asarray(pred)
    if pred.shape[0] != len(index):
      raise ValueError(f"score_fn returned {pred.shape[0]} rows for a batch of {len(index)}")
    if result is None:
      result = np.zeros((n,) + pred.shape[1:], pred.dtype)
    index = index[keep]
    if seen[index].any():
      raise ValueError(f"example {int(index[seen[index]][0])} was scored twice")
    seen[index] = True
    result[index] = pred[keep]
  if not seen.all():
    raise ValueError(f"{int((~seen).sum())} of {n} examples were never scored "
                     f"(first: {int(np.flatnonzero(~seen)[0])})")
  return result


class Evaluator:
  """The protocols for a text model: examples built once, then `evaluator(score_fn) -> dict`.

  Args:
    data: the CrossDomainData (target = `domain_id`).
    split: the target domain's split.
    spec: the EvalSpec (or a ready EvalPlan via `plan=`).
    example_kw: `build_examples` keywords (template, tokenizer, max_len, history_len, cache,
      test_sees_valid).
    batch: a `pipeline.BatchConfig` for the eval batches.
  """

  def __init__(self, data: schema.CrossDomainData, split: splits_lib.Split,
               spec: EvalSpec | None = None, *, example_kw: Mapping[str, Any], batch: Any,
               domain_id: int = 1, plan: EvalPlan | None = None):
    from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
    self.domain = data.domains()[domain_id]
    self.plan = plan if plan is not None else make_plan(self.domain, split, spec or EvalSpec())
    self.batch = batch
    kw = dict(example_kw)
    test_sees_valid = bool(kw.pop("test_sees_valid", False))
    self.sets: dict[tuple[str, str], tuple[Any, np.ndarray | None, tuple[int, int]]] = {}
    for which, part in self.plan.parts.items():
      if len(part.rating_rows):
        sub = dataclasses.replace(
            split, valid=part.rating_rows if which == "valid" else split.valid,
            test=part.rating_rows if which == "test" else split.test)
        ex = examples_lib.build_examples(data, sub, domain_id=domain_id, which=which,
                                         test_sees_valid=test_sees_valid, **kw)
        self.sets[(which, "rating")] = (ex, None, (len(part.rating_rows), 1))
      for kind, rows, cands, mask in (
          ("rank", part.rank_rows, part.candidates, None),
          ("full", part.full_rows, part.full_candidates, part.full_mask)):
        if len(rows):
          ex, cells = candidate_examples(data, split, rows, cands, mask, which=which,
                                         domain_id=domain_id, test_sees_valid=test_sees_valid, **kw)
          self.sets[(which, kind)] = (ex, cells, cands.shape)

  @property
  def num_examples(self) -> int:
    return sum(len(ex) for ex, _, _ in self.sets.values())

  def _run(self, score_fn, which: str, kind: str) -> np.ndarray | None:
    from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    if (which, kind) not in self.sets:
      return None
    ex, cells, shape = self.sets[(which, kind)]
    pred = collect(score_fn, pipeline.eval_batches(ex, self.batch), len(ex)).astype(np.float64)
    if cells is None:
      return pred
    # Cells outside the mask stay -inf: the mask keeps them out of every count anyway.
    grid = np.full(int(np.prod(shape)), -np.inf)
    grid[cells] = pred
    return grid.reshape(shape)

  def __call__(self, score_fn: Callable[[Mapping[str, np.ndarray]], Any],
               which: Sequence[str] | None = None) -> dict[str, float]:
    """Flat metrics for `which` parts (default: all of the plan's)."""
    out: dict[str, float] = {}
    for w in (which or tuple(self.plan.parts)):
      rating = self._run(score_fn, w, "rating")
      kw: dict[str, Any] = {}
      if rating is not None:
        # Examples follow ascending row order, as do the plan's rating rows.
        rows = self.sets[(w, "rating")][0]["row"]
        if not np.array_equal(rows, self.plan.parts[w].rating_rows):
          raise AssertionError("rating examples are not in the plan's row order")
        kw["rating_pred"] = self.plan.scale.denormalise(rating).astype(np.float64)
        kw["rating_true"] = self.domain.interactions.rating[rows]
      kw["rank_scores"] = self._run(score_fn, w, "rank")
      kw["full_scores"] = self._run(score_fn, w, "full")
      out.update(plan_metrics(self.plan, w, **kw))
    return out
