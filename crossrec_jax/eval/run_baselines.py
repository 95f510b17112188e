"""The non-LM baselines on a split target domain, scored by the evaluation protocols -> flat metrics.

    plan = evaluate.make_plan(target, split, evaluate.EvalSpec())
    metrics = run_baseline("bias", target, split, plan)                    # {'test/rmse': ...}
    metrics = run_baseline("title_prior", target, split, plan, source=src) # needs the source domain

Every baseline trains on the split's *labelled* training rows only (`Split.labelled_rows`), so a
label-fraction study treats them like the text models. Methods:
  global_mean, bias (ALS biases, surprise's BaselineOnly defaults), mf (biased MF in JAX, the
  YARDSTICKS 'SVD tuned on valid' settings), title_prior (bias model with item biases shrunk to the
  source domain's mean rating of the same title: the non-LM transfer baseline of DESIGN.md; with
  no target labels it predicts the source mean of the title, else the source's global mean, mapped
  onto the target's scale), popularity (ranking only: training interactions per item; it counts
  interactions, not ratings, so it uses every training row whatever the label fraction); with
  the `baselines` extra also als, bpr, item_knn (implicit; ranking, every training row, like
  popularity) and surprise_svd, surprise_knn (scikit-surprise; ratings).
Rating models rank candidates by their predicted rating. Methods that need target labels raise
`NeedsLabels` at label fraction 0.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.eval import baselines
from crossrec_jax.eval import baselines_external as external
from crossrec_jax.eval import evaluate

# The `baselines` extra (implicit, scikit-surprise) adds external.NAMES: eval/baselines_external.py.
RATING_BASELINES = ("global_mean", "bias", "mf", "title_prior") + external.RATING
RANKING_BASELINES = ("popularity",) + external.RANKING
BASELINES = RATING_BASELINES + RANKING_BASELINES
# Methods that still run without a single target label (ranking ones count interactions).
ZERO_LABEL_BASELINES = ("title_prior",) + RANKING_BASELINES
# YARDSTICKS: 'SVD tuned on valid (50 factors, reg 0.05, 40 epochs)' on ML-100K.
MF_DEFAULTS = dict(n_factors=50, n_epochs=40, lr=0.005, reg=0.05, batch_size=128)


class NeedsLabels(ValueError):
  """A baseline that fits ratings was asked to run with no labelled target row."""


def title_keys(items: schema.Items, with_year: bool = True) -> np.ndarray:
  """[I] matching keys: case-folded, whitespace-collapsed title (+ ' (year)' when known and asked).

  Items without a 'title' field match on their id. With years, ML-100K and ML-1M match exactly on
  their ids ('Toy Story (1995)'); without, a book matches its film adaptation ('Jurassic Park').
  """
  titles = items.fields.get("title", items.ids)
  years = items.fields.get("year") if with_year else None
  keys = []
  for k, t in enumerate(titles.tolist()):
    key = re.sub(r"\s+", " ", str(t).casefold()).strip()
    if years is not None and years[k]:
      key = f"{key} ({years[k]})"
    keys.append(key)
  return np.asarray(keys, dtype=object)


def source_item_means(source: schema.Domain, target: schema.Domain,
                      with_year: bool = True) -> np.ndarray:
  """[I_target] mean source rating of each target item's title (all source items sharing the key
  pooled), on the *source's* scale; NaN where no source item matches."""
  s_inter = source.interactions
  s_keys = title_keys(source.items, with_year)
  uniq, key_of_item = np.unique(s_keys.astype(str), return_inverse=True)
  key_of_row = key_of_item[s_inter.item]
  sums = np.bincount(key_of_row, weights=s_inter.rating, minlength=len(uniq))
  counts = np.bincount(key_of_row, minlength=len(uniq))
  means = dict(zip(uniq.tolist(), np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)))
  return np.array([means.get(k, np.nan) for k in title_keys(target.items, with_year).tolist()])


class ZeroShotTitlePrior(baselines._Rater):  # pylint: disable=protected-access
  """Title prior without target labels: r_ui = source mean of i's title (else the source's global
  mean), mapped onto the target scale. The non-LM counterpart of a zero-shot source-only model."""

  def fit(self, source_item_mean: np.ndarray, source_global_mean: float,
          source_scale: tuple[float, float], target_scale: tuple[float, float]
          ) -> ZeroShotTitlePrior:
    m = np.asarray(source_item_mean, np.float64)
    self.mu = float(baselines.rescale(source_global_mean, source_scale, target_scale))
    self.matched = ~np.isnan(m)
    self.item_pred = np.where(self.matched, baselines.rescale(m, source_scale, target_scale),
                              self.mu)
    return self

  def _predict(self, u, i):
    del u
    inside = i < len(self.item_pred)
    return np.where(inside, self.item_pred[np.where(inside, i, 0)], self.mu)


def _scale(domain: schema.Domain) -> tuple[float, float]:
  return (domain.scale.low, domain.scale.high)


def fit_baseline(name: str, target: schema.Domain, split: splits_lib.Split,
                 source: schema.Domain | None = None, *, seed: int = 0,
                 title_with_year: bool = True, mf_kw: dict[str, Any] | None = None) -> Any:
  """The fitted baseline `name` (see BASELINES) on the split's labelled target training rows."""
  inter = target.interactions
  n_users, n_items = inter.num_users, target.num_items
  if name in RANKING_BASELINES:
    rows = split.train
    if not len(rows):
      raise NeedsLabels(f"{name}: the split has no training rows")
    model = (baselines.Popularity() if name == "popularity"
             else external.build(name, seed=seed))
    return model.fit(inter.user[rows], inter.item[rows], n_users=n_users, n_items=n_items)
  if name not in RATING_BASELINES:
    raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
  rows = split.labelled_rows
  u, i, r = inter.user[rows], inter.item[rows], inter.rating[rows]
  if name == "title_prior":
    if source is None:
      raise ValueError("title_prior needs the source domain (source=...)")
    prior = source_item_means(source, target, title_with_year)
    kw = {} if _scale(source) == _scale(target) else dict(source_scale=_scale(source),
                                                           target_scale=_scale(target))
    if not len(rows):
      return ZeroShotTitlePrior().fit(prior, float(source.interactions.rating.mean()),
                                      _scale(source), _scale(target))
    return baselines.TitlePriorTransfer(**kw).fit(u, i, r, prior, n_users=n_users)
  if not len(rows):
    raise NeedsLabels(f"{name}: no labelled target training rows (label fraction "
                      f"{split.label_fraction:g}); it needs target ratings")
  if name == "global_mean":
    return baselines.GlobalMean().fit(u, i, r)
  if name == "bias":
    return baselines.BiasModel().fit(u, i, r, n_users=n_users, n_items=n_items)
  if name in external.RATING:
    return external.build(name, scale=_scale(target), seed=seed).fit(u, i, r)
  return baselines.MatrixFactorization(**{**MF_DEFAULTS, "seed": seed, **(mf_kw or {})}).fit(
      u, i, r, n_users=n_users, n_items=n_items)


def run_baseline(name: str, target: schema.Domain, split: splits_lib.Split,
                 plan: evaluate.EvalPlan, source: schema.Domain | None = None, *, seed: int = 0,
                 title_with_year: bool = True, mf_kw: dict[str, Any] | None = None
                 ) -> dict[str, float]:
  """Fit `name` and score it on `plan` -> flat metrics, plus 'train/labelled' and 'time/fit_s'."""
  start = time.perf_counter()
  model = fit_baseline(name, target, split, source, seed=seed, title_with_year=title_with_year,
                       mf_kw=mf_kw)
  fit_s = time.perf_counter() - start
  out = evaluate.evaluate_model(model, target, plan)
  out["train/labelled"] = float(len(split.labelled_rows))
  out["time/fit_s"] = fit_s
  if hasattr(model, "matched"):
    out["train/title_matches"] = float(np.sum(model.matched))
  return out


def run_baselines(target: schema.Domain, split: splits_lib.Split, spec: evaluate.EvalSpec,
                  source: schema.Domain | None = None, methods=BASELINES, *, seed: int = 0,
                  title_with_year: bool = True, mf_kw: dict[str, Any] | None = None
                  ) -> dict[str, dict[str, float]]:
  """method -> flat metrics for every method that applies (NeedsLabels ones are left out)."""
  plan = evaluate.make_plan(target, split, spec)
  out = {}
  for name in methods:
    if name == "title_prior" and source is None:
      continue
    try:
      out[name] = run_baseline(name, target, split, plan, source, seed=seed,
                               title_with_year=title_with_year, mf_kw=mf_kw)
    except NeedsLabels:
      continue
  return out
