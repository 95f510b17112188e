"""Tests for crossrec_jax/eval/baselines_external.py (the `baselines` extra) on hand-made data."""

import sys

import numpy as np
import pytest

from crossrec_jax.eval import baselines_external as ext
from crossrec_jax.eval import run_baselines as rb
from test_baselines import synthetic


def test_missing_extra_is_one_clear_line(monkeypatch):
  # A None entry in sys.modules makes `import` raise ImportError, as if the extra were absent.
  for module in ("implicit", "implicit.cpu.als", "implicit.cpu.bpr", "implicit.nearest_neighbours",
                 "surprise"):
    monkeypatch.setitem(sys.modules, module, None)
  for name, package in (("als", "implicit"), ("surprise_svd", "scikit-surprise")):
    with pytest.raises(ext.MissingExtra, match=rf"'{name}' needs {package}: pip install "
                       r"'crossrec_jax\[baselines\]'") as e:
      m = ext.build(name)
      m.fit([0, 1], [0, 1]) if name == "als" else m.fit([0, 1], [0, 1], [4.0, 2.0])
    assert "\n" not in str(e.value)


def test_names_are_run_baselines_methods():
  assert set(ext.NAMES) <= set(rb.BASELINES)
  assert set(ext.RANKING) <= set(rb.ZERO_LABEL_BASELINES)  # they count interactions, no labels
  with pytest.raises(ValueError, match="unknown external baseline 'svdpp'"):
    ext.build("svdpp")


def test_item_knn_scores_by_hand():
  # Users 0, 1 hold items {0, 1}; user 2 holds {1, 2}. Columns: item0 = (1,1,0), item1 = (1,1,1),
  # item2 = (0,0,1): cos(0,1) = 2/sqrt(6), cos(1,2) = 1/sqrt(3), cos(0,2) = 0.
  knn = ext.ItemKNN(k=10).fit([0, 0, 1, 1, 2, 2], [0, 1, 0, 1, 1, 2], n_users=4, n_items=3)
  s = knn.score(np.array([2, 3]), np.array([0, 5]))
  c01, c12 = 2 / np.sqrt(6), 1 / np.sqrt(3)
  # user 2 on item 0: sim(1, 0) + sim(2, 0) (implicit keeps self-similarity on the diagonal).
  np.testing.assert_allclose(s[0], [c01 + 0.0, 0.0], rtol=1e-5)
  np.testing.assert_allclose(s[1], [0.0, 0.0])  # user 3 has no items; item 5 is unknown
  np.testing.assert_allclose(knn.similarity.toarray()[0, 1], c01, rtol=1e-5)
  np.testing.assert_allclose(knn.similarity.toarray()[1, 2], c12, rtol=1e-5)


def test_als_bpr_rank_held_out_items_of_low_rank_data():
  # Two user groups with disjoint tastes: each user's held-out item of its own group must outrank
  # the other group's items.
  rng = np.random.default_rng(0)
  users, items = [], []
  for u in range(60):
    group = u % 2
    for i in rng.choice(20, 12, replace=False):
      users.append(u)
      items.append(i + 20 * group)
  for model in (ext.ALS(factors=8, iterations=10), ext.BPR(factors=8, iterations=50),
                ext.ItemKNN(k=20)):
    model.fit(users, items, n_users=60, n_items=40)
    s = model.score(np.arange(60), np.arange(40))
    own = np.where((np.arange(60) % 2)[:, None] == (np.arange(40) // 20)[None, :], s, np.nan)
    other = np.where(np.isnan(own), s, np.nan)
    assert np.nanmean(own) > np.nanmean(other), type(model).__name__
  again = ext.BPR(factors=8, iterations=50).fit(users, items, n_users=60, n_items=40)
  np.testing.assert_array_equal(again.score(np.arange(60), np.arange(40)),
                                ext.BPR(factors=8, iterations=50).fit(users, items, 60, 40)
                                .score(np.arange(60), np.arange(40)))  # one thread: repeatable


def test_surprise_svd_vectorised_predict_equals_surprise():
  u, i, r, _, _ = synthetic(n_users=40, n_items=30, per_user=10, rank=2)
  r = np.clip(np.round(r), 1, 5)
  svd = ext.SurpriseSVD(n_factors=4, n_epochs=5).fit(u, i, r)
  import surprise  # pylint: disable=g-import-not-at-top
  trainset = surprise.Dataset(surprise.Reader(rating_scale=(1, 5))).construct_trainset(
      [(int(a), int(b), float(c), None) for a, b, c in zip(u, i, r)])
  algo = surprise.SVD(n_factors=4, n_epochs=5, reg_all=0.05, random_state=0).fit(trainset)
  test_u, test_i = np.array([0, 3, 39, 77, 5]), np.array([2, 29, 0, 1, 99])  # 77, 99: unknown
  ref = [algo.predict(int(a), int(b)).est for a, b in zip(test_u, test_i)]
  np.testing.assert_allclose(svd.predict(test_u, test_i), ref, rtol=1e-6)
  assert svd.predict([77], [99])[0] == pytest.approx(svd.mu)


def test_surprise_knn_baseline_predicts_in_scale():
  u, i, r, truth, _ = synthetic(n_users=40, n_items=30, per_user=10)
  r = np.clip(r, 1, 5)
  knn = ext.SurpriseKNNBaseline(k=10).fit(u, i, r)
  p = knn.predict(np.arange(40), np.zeros(40, np.int64))
  assert p.min() >= 1 and p.max() <= 5
  assert np.corrcoef(p, np.clip(truth(np.arange(40), np.zeros(40, int)), 1, 5))[0, 1] > 0.8


def test_the_study_lists_them_as_baselines():
  from crossrec_jax.eval import study  # pylint: disable=g-import-not-at-top
  config = study.load_experiment("transfer_study", "cpu")
  assert set(ext.NAMES) <= set(config.baselines)
  base = {(m, f) for k, m, f, _ in study.cells(config) if k == "baseline"}
  assert ("als", 0.0) in base and ("item_knn", 0.0) in base  # interactions only: run at 0%
  assert ("surprise_svd", 0.0) not in base and ("surprise_svd", 0.1) in base
