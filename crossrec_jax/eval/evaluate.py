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

`make_plan` fixes the rows and candidates once from (domain, split, EvalSpec), so every method of a
study is scored on exactly the same examples. Two ways to fill a plan with predictions:
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

WHICH = ("valid", "test")


@dataclasses.dataclass(frozen=True)
class EvalSpec:
  """What to evaluate. Sizes given as None mean 'all'.

  which: split parts to evaluate ('valid', 'test').
  threshold: like = rating > threshold for AUC; None = the scale's midpoint.
  ks: cut-offs of HR@k / NDCG@k.
  num_negatives: sampled negatives per ranked user (0 disables the sampled ranking protocol).
  ranking_users: evaluate sampled ranking on this many users (seeded draw), None = all.
  full_ranking_users: users (seeded draw) for full ranking over all items; 0 disables it.
  rating_rows: cap on rating rows per part (seeded draw of whole users' rows kept in order), None
    = all. For CPU presets: a text model scores every row with a BERT pass.
  cold_start: also report the cold-start-user subset.
  seed: negatives and subsets.
  """

  which: tuple[str, ...] = WHICH
  threshold: float | None = None
  ks: tuple[int, ...] = (5, 10, 20)
  num_negatives: int = 99
  ranking_users: int | None = None
  full_ranking_users: int = 0
  rating_rows: int | None = None
  cold_start: bool = True
  seed: int = 0

  def __post_init__(self):
    bad = [w for w in self.which if w not in WHICH]
    if bad:
      raise ValueError(f"EvalSpec.which: unknown part(s) {bad}; use {WHICH}")
    if self.num_negatives < 0 or self.full_ranking_users < 0:
      raise ValueError("EvalSpec.num_negatives and full_ranking_users must be >= 0")


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


# ----------------------------------------------------------------------------- plans


@dataclasses.dataclass(frozen=True)
class PartPlan:
  """Rows and candidates of one split part.

  rating_rows: interaction rows whose rating is predicted. rating_cold: [len(rating_rows)] bool
  (a cold-start user's row); rating_cold_item: [len(rating_rows)] bool (a cold-start item's row).
  rank_rows: one row per ranked user (its positive); candidates [R, C] item codes, the positive in
  column 0. full_rows / full_candidates [F, I] / full_mask [F, I]: full ranking (mask False for the
  user's training items and the positive's duplicate).
  """

  rating_rows: np.ndarray
  rating_cold: np.ndarray
  rank_rows: np.ndarray
  candidates: np.ndarray
  rank_cold: np.ndarray
  full_rows: np.ndarray
  full_candidates: np.ndarray
  full_mask: np.ndarray
  rating_cold_item: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class EvalPlan:
  spec: EvalSpec
  scale: schema.RatingScale
  parts: Mapping[str, PartPlan]

  def summary(self) -> str:
    return "; ".join(f"{w}: {len(p.rating_rows)} ratings ({int(p.rating_cold.sum())} cold users, "
                     f"{int(np.sum(p.rating_cold_item))} cold items), "
                     f"{len(p.rank_rows)} ranked users x {p.candidates.shape[1]} candidates, "
                     f"{len(p.full_rows)} full-ranking users" for w, p in self.parts.items())


def cold_users(domain: schema.Domain, split: splits_lib.Split) -> np.ndarray:
  """[U] bool: users with no training row in this domain (labelled or not)."""
  has_train = np.bincount(domain.interactions.user[split.train],
                          minlength=domain.interactions.num_users) > 0
  return ~has_train


def cold_items(domain: schema.Domain, split: splits_lib.Split) -> np.ndarray:
  """[I] bool: items with no labelled training row in this domain (no rating to learn from)."""
  labelled = np.bincount(domain.interactions.item[split.labelled_rows],
                         minlength=domain.num_items) > 0
  return ~labelled


def last_row_per_user(domain: schema.Domain, rows: np.ndarray) -> np.ndarray:
  """Each user's last row among `rows` in canonical (time, item id) order, ascending by user."""
  order = splits_lib.canonical_order(domain, rows)
  users = domain.interactions.user[order]
  last = np.r_[users[1:] != users[:-1], True]
  return order[last]


def _draw_users(rows: np.ndarray, users: np.ndarray, n: int | None, seed: int) -> np.ndarray:
  """Keep the rows of n users drawn with default_rng(seed) (all when n is None or too large)."""
  unique = np.unique(users)
  if n is None or n >= len(unique):
    return rows
  keep = np.random.default_rng(seed).choice(unique, n, replace=False)
  return rows[np.isin(users, keep)]


def make_plan(domain: schema.Domain, split: splits_lib.Split, spec: EvalSpec) -> EvalPlan:
  """The rows and candidates every method is scored on (deterministic for spec.seed)."""
  inter = domain.interactions
  cold = cold_users(domain, split) if spec.cold_start else np.zeros(inter.num_users, bool)
  cold_item = cold_items(domain, split) if spec.cold_start else np.zeros(domain.num_items, bool)
  parts = {}
  for which in spec.which:
    # 'test' draws with spec.seed itself (YARDSTICKS P-rank-loo: default_rng(0)), 'valid' with
    # another seed.
    seed = spec.seed if which == "test" else spec.seed + 7919
    rows = split.rows(which)
    if len(rows) == 0:
      raise ValueError(f"split part {which!r} of domain {domain.name!r} is empty")
    rating_rows = (rows[:0] if domain.scale.implicit else
                   _cap_rows(rows, inter.user[rows], spec.rating_rows, seed + 3))
    last = last_row_per_user(domain, rows)
    n_neg = spec.num_negatives
    if n_neg > 0:
      rank_rows = _draw_users(last, inter.user[last], spec.ranking_users, seed + 1)
      # Aligned with rank_rows (ascending by user, the order YARDSTICKS' negatives are drawn in).
      candidates = splits_lib.ranking_candidates(domain, split, rank_rows, n_neg,
                                                 seed=seed)
    else:
      rank_rows, candidates = np.zeros(0, np.int64), np.zeros((0, 1), np.int32)
    full_rows = _draw_users(last, inter.user[last], spec.full_ranking_users,
                            seed + 2) if spec.full_ranking_users else last[:0]
    full_cands, full_mask = full_candidates(domain, split, full_rows)
    parts[which] = PartPlan(rating_rows=rating_rows, rating_cold=cold[inter.user[rating_rows]],
                            rank_rows=rank_rows, candidates=candidates,
                            rank_cold=cold[inter.user[rank_rows]], full_rows=full_rows,
                            full_candidates=full_cands, full_mask=full_mask,
                            rating_cold_item=cold_item[inter.item[rating_rows]])
  return EvalPlan(spec=spec, scale=domain.scale, parts=parts)


def _cap_rows(rows: np.ndarray, users: np.ndarray, max_rows: int | None, seed: int) -> np.ndarray:
  """All rows of whole users, users taken in a seeded random order while the total stays <= max_rows
  (at least one user); every row when max_rows is None."""
  if max_rows is None or len(rows) <= max_rows:
    return rows
  unique, counts = np.unique(users, return_counts=True)
  order = np.random.default_rng(seed).permutation(len(unique))
  n_keep = max(1, int(np.searchsorted(np.cumsum(counts[order]), max_rows, side="right")))
  return rows[np.isin(users, unique[order[:n_keep]])]


def full_candidates(domain: schema.Domain, split: splits_lib.Split,
                    rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """([F, 1 + I] items, [F, 1 + I] mask): the positive in column 0, then every item; the mask drops
  the user's training items and the positive's second copy (YARDSTICKS P-rank-loo 'full')."""
  inter = domain.interactions
  n_items = domain.num_items
  cands = np.concatenate([inter.item[rows][:, None],
                          np.broadcast_to(np.arange(n_items), (len(rows), n_items))], axis=1)
  mask = np.ones(cands.shape, bool)
  mask[:, 1:][np.arange(len(rows))[:, None], inter.item[rows][:, None]] = False
  row_of_user = np.full(inter.num_users, -1, np.int64)
  row_of_user[inter.user[rows]] = np.arange(len(rows))
  if len(np.unique(inter.user[rows])) != len(rows):
    raise ValueError("full ranking takes one row per user")
  at = row_of_user[inter.user[split.train]]
  hit = at >= 0
  mask[at[hit], 1 + inter.item[split.train][hit]] = False
  return cands.astype(np.int32), mask


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


def candidate_domain(domain: schema.Domain, rows: np.ndarray, candidates: np.ndarray,
                     mask: np.ndarray | None = None
                     ) -> tuple[schema.Domain, np.ndarray, np.ndarray]:
  """The domain plus one new interaction per (row, candidate) cell: same user and time as the row,
  the candidate's item, so its history is the row's history (`splits.history_rows` sees only rows
  strictly before that time, and the new rows are visible to nobody).

  Returns (domain', new row indices [M], flat cell index [M] into [R, C]) for the cells in `mask`.
  The new rows' rating is the held-out one for column 0 and the scale's low end elsewhere (never a
  training label: only evaluation examples are built from them).
  """
  inter = domain.interactions
  rows = np.asarray(rows, np.int64)
  cands = np.asarray(candidates)
  if cands.shape[0] != len(rows):
    raise ValueError(f"{cands.shape[0]} candidate rows for {len(rows)} eval rows")
  cell_mask = np.ones(cands.shape, bool) if mask is None else np.asarray(mask, bool)
  cells = np.flatnonzero(cell_mask.reshape(-1))
  r_of = cells // cands.shape[1]
  col = cells % cands.shape[1]
  src = rows[r_of]
  rating = np.where(col == 0, inter.rating[src], np.float32(domain.scale.low)).astype(np.float32)
  extra = dataclasses.replace(
      inter,
      user=np.concatenate([inter.user, inter.user[src]]),
      item=np.concatenate([inter.item, cands.reshape(-1)[cells].astype(inter.item.dtype)]),
      rating=np.concatenate([inter.rating, rating]),
      time=np.concatenate([inter.time, inter.time[src]]),
      part=None if inter.part is None else np.concatenate([inter.part, inter.part[src]]))
  new_rows = len(inter) + np.arange(len(cells), dtype=np.int64)
  return dataclasses.replace(domain, interactions=extra), new_rows, cells


def candidate_examples(data: schema.CrossDomainData | schema.Domain, split: splits_lib.Split,
                       rows: np.ndarray, candidates: np.ndarray, mask: np.ndarray | None = None, *,
                       which: str, domain_id: int = 1, test_sees_valid: bool = False,
                       **build_kw) -> tuple[Any, np.ndarray]:
  """Tokenised examples of every (row history, candidate item) cell -> (ExampleSet, cell index).

  The ExampleSet's 'row' column is the evaluated row of `rows` (in the original domain), 'cell' the
  flat index into [R, C]; 'item' is the candidate.

  `build_kw` are `examples.build_examples`' template, tokenizer, max_len, history_len, cache...
  Histories are those of the row's split part `which` (a valid row sees train rows; a test row
  train rows, plus valid rows with test_sees_valid).
  """
  from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
  domain = data if isinstance(data, schema.Domain) else data.domains()[domain_id]
  big, new_rows, cells = candidate_domain(domain, rows, candidates, mask)
  aug = dataclasses.replace(split, test=new_rows, valid=split.valid, removed=split.removed)
  ex = examples_lib.build_examples(big, aug, domain_id=domain_id, which="test",
                                   test_sees_valid=test_sees_valid and which == "test", **build_kw)
  # 'row' names the evaluated interaction of the original domain (not the synthetic row), 'cell'
  # the flat [R, C] candidate cell.
  ex.columns["row"] = np.asarray(rows, np.int64)[cells // np.asarray(candidates).shape[1]]
  ex.columns["cell"] = cells
  return ex, cells


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


# ----------------------------------------------------------------------------- domain separability


def proxy_a_distance(source_features, target_features, *, seed: int = 0, l2: float = 1e-2,
                     iters: int = 25) -> dict[str, float]:
  """Discriminator accuracy and proxy A-distance (Ben-David et al.) of two feature sets.

  An L2-regularised logistic regression (Newton's method, features standardised on the training
  half) is fitted on a seeded half of each domain's rows and tested on the other half:
  PAD = 2 (1 - 2 err), 0 when the domains are indistinguishable, 2 when perfectly separable.
  Returns 'domain_acc' (held-out accuracy), 'pad', 'n_source', 'n_target'.
  """
  xs, xt = np.asarray(source_features, np.float64), np.asarray(target_features, np.float64)
  if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1] or min(len(xs), len(xt)) < 4:
    raise ValueError(f"need two [N, H] feature sets with N >= 4, got {xs.shape} and {xt.shape}")
  rng = np.random.default_rng(seed)
  halves = [np.array_split(rng.permutation(len(x)), 2) for x in (xs, xt)]
  def part(k):
    x = np.concatenate([xs[halves[0][k]], xt[halves[1][k]]])
    y = np.concatenate([np.zeros(len(halves[0][k])), np.ones(len(halves[1][k]))])
    return x, y
  (x_tr, y_tr), (x_te, y_te) = part(0), part(1)
  mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
  def design(x):
    return np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
  a, a_te = design(x_tr), design(x_te)
  w = np.zeros(a.shape[1])
  reg = l2 * len(a) * np.r_[np.ones(a.shape[1] - 1), 0.0]  # the intercept is not penalised
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
    grad = a.T @ (p - y_tr) + reg * w
    hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(len(w))
    step = np.linalg.solve(hess, grad)
    w -= step
    if np.max(np.abs(step)) < 1e-8:
      break
  err = float(np.mean(((a_te @ w) > 0) != (y_te > 0.5)))
  return {"domain_acc": 1.0 - err, "pad": 2.0 * (1.0 - 2.0 * err),
          "n_source": float(len(xs)), "n_target": float(len(xt))}
