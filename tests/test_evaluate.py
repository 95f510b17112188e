"""Tests for crossrec_jax/eval/evaluate.py: the protocols on hand-made domains with known answers."""

import dataclasses

import numpy as np
import pytest

from crossrec_jax.data import pipeline, schema, splits, tokenize
from crossrec_jax.eval import evaluate


def make_domain(n_users=6, n_items=30, per_user=8, seed=0, scale=(1.0, 5.0)):
  rng = np.random.default_rng(seed)
  ids = [f"m{k:02d}" for k in range(n_items)]
  items = schema.Items(ids=np.array(ids, object),
                       fields={"title": np.array([f"film {k}" for k in range(n_items)], object)})
  rows = [(f"u{u}", ids[i], float(rng.integers(1, 6)), 10 * t) for u in range(n_users)
          for t, i in enumerate(rng.choice(n_items, per_user, replace=False))]
  u, i, r, t = zip(*rows)
  return schema.build_domain("ml-hand", user_ids=u, item_ids=i, ratings=r, times=t, items=items,
                             scale=schema.RatingScale(*scale))


class Oracle:
  """Knows the held-out ratings: predicts the truth, scores the positive (column 0) highest."""

  def __init__(self, domain, positives):
    self.table = {(int(u), int(i)): float(r) for u, i, r in zip(
        domain.interactions.user, domain.interactions.item, domain.interactions.rating)}
    self.positives = positives  # user -> item

  def predict(self, users, items):
    return np.array([self.table.get((int(u), int(i)), 0.0) for u, i in zip(users, items)])

  def score(self, users, items):
    return (np.asarray(items) == np.array([self.positives[int(u)] for u in users])[:, None]) * 1.0


class Constant:
  def predict(self, users, items):
    return np.full(len(users), 3.0)

  def score(self, users, items):
    return np.zeros(np.shape(items))


def test_like_threshold_is_scale_aware():
  assert evaluate.like_threshold(schema.RatingScale(1, 5)) == 3.0  # TALLRec: like = rating > 3
  assert evaluate.like_threshold(schema.RatingScale(1, 10)) == 5.5
  assert evaluate.like_threshold(schema.RatingScale(1, 5), 3.5) == 3.5
  m = evaluate.rating_metrics([1, 2, 4, 5], [2, 1, 5, 4], schema.RatingScale(1, 5))
  assert m["rmse"] == 1.0 and m["mae"] == 1.0 and m["auc"] == 1.0 and m["n_like"] == 2
  one_class = evaluate.rating_metrics([4.0, 5.0], [4.0, 5.0], schema.RatingScale(1, 5))
  assert np.isnan(one_class["auc"]) and one_class["rmse"] == 0.0


def test_perfect_and_constant_scorers():
  d = make_domain()
  split = splits.temporal_ratio(d, 0.25, 0.25)
  spec = evaluate.EvalSpec(num_negatives=9, ks=(1, 5), full_ranking_users=3)
  plan = evaluate.make_plan(d, split, spec)
  inter = d.interactions
  part = plan.parts["test"]
  assert part.candidates.shape == (6, 10) and len(part.rating_rows) == len(split.test)
  # The positive is each user's last test row, and no negative was ever interacted with.
  for r, cands in zip(part.rank_rows, part.candidates):
    assert cands[0] == inter.item[r]
    assert not np.isin(cands[1:], inter.item[inter.user == inter.user[r]]).any()
  positives = {int(inter.user[r]): int(inter.item[r]) for r in part.rank_rows}
  perfect = evaluate.evaluate_model(Oracle(d, positives), d, plan)
  assert perfect["test/rmse"] == 0.0 and perfect["test/mae"] == 0.0
  assert perfect["test/HR@1"] == 1.0 and perfect["test/MRR"] == 1.0
  assert perfect["test/full/HR@1"] == 1.0 and perfect["test/full/n_users"] == 3
  const = evaluate.evaluate_model(Constant(), d, plan)
  assert const["test/auc"] == 0.5
  assert const["test/HR@1"] == pytest.approx(1 / 10) and const["test/HR@5"] == pytest.approx(5 / 10)
  assert const["test/MRR"] == pytest.approx(np.mean(1 / np.arange(1, 11)))
  # Full ranking: 30 items minus the user's training items (4 each) -> 26 candidates, all tied.
  assert const["test/full/HR@1"] == pytest.approx(1 / 26)


def test_full_candidates_mask_training_items():
  d = make_domain()
  split = splits.temporal_loo(d)
  rows = split.test[:2]
  cands, mask = evaluate.full_candidates(d, split, rows)
  inter = d.interactions
  for k, r in enumerate(rows):
    train_items = inter.item[split.train][inter.user[split.train] == inter.user[r]]
    assert mask[k, 0] and not mask[k, 1 + inter.item[r]]
    assert not mask[k, 1 + train_items].any()
    assert mask[k].sum() == d.num_items - len(train_items)


def test_cold_start_users_reported_separately():
  d = make_domain()
  split = splits.temporal_ratio(d, 0.25, 0.25)
  cold = splits.apply_cold_start(d, split, np.array([1, 4], np.int32))
  plan = evaluate.make_plan(d, cold, evaluate.EvalSpec(num_negatives=5, ks=(1,)))
  inter = d.interactions
  part = plan.parts["test"]
  np.testing.assert_array_equal(part.rating_cold, np.isin(inter.user[part.rating_rows], [1, 4]))
  out = evaluate.evaluate_model(Constant(), d, plan)
  assert out["test/cold/n_ratings"] == part.rating_cold.sum() and out["test/n_ratings"] == len(split.test)
  assert out["test/cold/n_users"] == 2
  assert out["test/cold/HR@1"] == pytest.approx(1 / 6) and "test/cold/rmse" in out
  warm = evaluate.evaluate_model(Constant(), d, evaluate.make_plan(d, split, plan.spec))
  assert not any("/cold/" in k for k in warm)


def test_subsets_are_seeded_and_capped():
  d = make_domain(n_users=10)
  split = splits.temporal_ratio(d, 0.25, 0.25)
  spec = evaluate.EvalSpec(ranking_users=4, rating_rows=5, num_negatives=3)
  a, b = evaluate.make_plan(d, split, spec), evaluate.make_plan(d, split, spec)
  for w in ("valid", "test"):
    np.testing.assert_array_equal(a.parts[w].candidates, b.parts[w].candidates)
    assert len(a.parts[w].rank_rows) == 4 and 0 < len(a.parts[w].rating_rows) <= 5
  other = evaluate.make_plan(d, split, dataclasses.replace(spec, seed=1))
  assert not np.array_equal(a.parts["test"].candidates, other.parts["test"].candidates)


def test_collect_ignores_padding_and_checks_coverage():
  def batch(index):
    index = np.asarray(index)
    return {"input_ids": np.zeros((len(index), 4), np.int32), "valid": (index >= 0) * 1.0,
            "index": index}
  # Padding rows (index -1) predict 20 and 30, which must never land anywhere.
  out = evaluate.collect(lambda b: np.arange(4) * 10.0, [batch([2, 0, -1, -1]), batch([1, 3, -1, -1])], 4)
  np.testing.assert_array_equal(out, [10.0, 0.0, 0.0, 10.0])
  with pytest.raises(ValueError, match="never scored"):
    evaluate.collect(lambda b: np.zeros(2), [batch([0, 1])], 3)
  with pytest.raises(ValueError, match="twice"):
    evaluate.collect(lambda b: np.zeros(2), [batch([0, 1]), batch([1, -1])], 2)


@pytest.fixture(scope="module")
def tok():
  return tokenize.load_tokenizer()


def test_evaluator_text_path_matches_the_oracle(tok):
  d = make_domain(n_users=4, n_items=16, per_user=6)
  data = schema.CrossDomainData(source=d, target=d)
  split = splits.temporal_ratio(d, 0.2, 0.2)
  spec = evaluate.EvalSpec(num_negatives=4, ks=(1, 3), full_ranking_users=2)
  kw = dict(template="default", tokenizer=tok, max_len=64, history_len=3)
  ev = evaluate.Evaluator(data, split, spec, example_kw=kw,
                          batch=pipeline.BatchConfig(batch_size=8, buckets=(32, 64)))
  inter = d.interactions
  # A candidate example's history must be its row's own: column 0 rebuilds the rating example.
  ex_rating = ev.sets[("test", "rating")][0]
  ex_rank, cells = ev.sets[("test", "rank")][:2]
  part = ev.plan.parts["test"]
  for k, r in enumerate(part.rank_rows):
    col0 = ex_rank["input_ids"][np.flatnonzero(cells == k * 5)[0]]
    np.testing.assert_array_equal(col0, ex_rating["input_ids"][np.flatnonzero(ex_rating["row"] == r)[0]])
  # An oracle over token sequences, per split part (a valid candidate and a test rating example can
  # be the same text): the true normalised rating for rating examples and positives, -1 for
  # negatives; padding rows score 7 (outside [0, 1]) and must never count.
  for which in ("valid", "test"):
    truth = {}
    for (w, kind), (ex, cells, shape) in ev.sets.items():
      if w != which:
        continue
      for e in range(len(ex)):
        row = ex["row"][e]
        positive = kind == "rating" or cells[e] % shape[1] == 0
        value = float(d.scale.normalise(inter.rating[row])) if positive else -1.0
        truth[ex["input_ids"][e].tobytes()] = max(value, truth.get(ex["input_ids"][e].tobytes(), -1.0))

    def score_fn(batch, truth=truth):
      ids, mask = batch["input_ids"], batch["attention_mask"]
      return np.array([truth.get(ids[b][mask[b] > 0].astype(np.int32).tobytes(), 7.0)
                       for b in range(len(ids))], np.float32)

    out = ev(score_fn, which=[which])
    assert out[f"{which}/rmse"] == pytest.approx(0.0, abs=1e-5)
    assert out[f"{which}/HR@1"] == 1.0 and out[f"{which}/full/HR@1"] == 1.0
    assert out[f"{which}/n_ratings"] == len(split.rows(which)) and out[f"{which}/full/n_users"] == 2


def test_proxy_a_distance_separable_and_not():
  rng = np.random.default_rng(0)
  same = evaluate.proxy_a_distance(rng.normal(size=(400, 8)), rng.normal(size=(400, 8)))
  assert abs(same["pad"]) < 0.3 and 0.4 < same["domain_acc"] < 0.6
  apart = evaluate.proxy_a_distance(rng.normal(size=(200, 8)), rng.normal(size=(200, 8)) + 3.0)
  assert apart["pad"] > 1.9 and apart["domain_acc"] > 0.97
  with pytest.raises(ValueError, match="feature sets"):
    evaluate.proxy_a_distance(np.zeros((10, 3)), np.zeros((10, 4)))


def test_split_modules_keep_the_evaluate_names():
  """eval/evaluate.py was split (plan, candidates, domain gap); callers keep `evaluate.X`."""
  import pathlib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.eval import candidates, domain_gap, plan  # pylint: disable=g-import-not-at-top
  for module in (plan, candidates, domain_gap):
    for name in module.__all__:
      assert getattr(evaluate, name) is getattr(module, name), name
      assert name in evaluate.__all__, name
  for path in (evaluate.__file__, plan.__file__, candidates.__file__, domain_gap.__file__):
    assert len(pathlib.Path(path).read_text().splitlines()) <= 450, path
