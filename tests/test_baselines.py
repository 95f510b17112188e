"""Tests for crossrec_jax/eval/baselines.py on hand-made and synthetic data with known truth."""

import numpy as np
import pytest

from crossrec_jax.eval import baselines, metrics


def synthetic(n_users=120, n_items=80, per_user=30, rank=0, noise=0.1, seed=0):
  """Ratings mu + b_u + b_i (+ a rank-`rank` interaction) + noise; returns data and the truth."""
  rng = np.random.default_rng(seed)
  b_u, b_i = rng.normal(0, 0.5, n_users), rng.normal(0, 0.5, n_items)
  p, q = rng.normal(0, 0.6, (n_users, rank)), rng.normal(0, 0.6, (n_items, rank))
  u = np.repeat(np.arange(n_users), per_user).astype(np.int32)
  i = np.concatenate([rng.choice(n_items, per_user, replace=False) for _ in range(n_users)]).astype(np.int32)
  truth = lambda uu, ii: 3.5 + b_u[uu] + b_i[ii] + np.sum(p[uu] * q[ii], axis=1)
  r = (truth(u, i) + rng.normal(0, noise, u.size)).astype(np.float32)
  return u, i, r, truth, b_i


def test_global_mean():
  m = baselines.GlobalMean().fit([0, 1, 1], [0, 0, 1], [1.0, 2.0, 4.5])
  np.testing.assert_allclose(m.predict([0, 7], [3, 9]), [2.5, 2.5])
  with pytest.raises(RuntimeError, match="before fit"):
    baselines.GlobalMean().predict([0], [0])


def test_bias_als_one_epoch_by_hand():
  # mu = 4. Items first: b_0 = ((5-4) + (4-4)) / (1+2) = 1/3, b_1 = (3-4) / (1+1) = -1/2.
  # Then users: b_u0 = ((5-4-1/3) + (3-4+1/2)) / (2+2) = 1/24, b_u1 = (4-4-1/3) / (2+1) = -1/9.
  m = baselines.BiasModel(reg_i=1.0, reg_u=2.0, n_epochs=1).fit([0, 0, 1], [0, 1, 0], [5.0, 3.0, 4.0])
  np.testing.assert_allclose(m.b_i, [1 / 3, -1 / 2])
  np.testing.assert_allclose(m.b_u, [1 / 24, -1 / 9])
  np.testing.assert_allclose(m.predict([1], [1]), [4 - 1 / 9 - 1 / 2])


def test_bias_model_recovers_biases():
  u, i, r, truth, b_i = synthetic()
  m = baselines.BiasModel(reg_i=0.5, reg_u=0.5, n_epochs=30).fit(u, i, r)
  grid_u, grid_i = np.meshgrid(np.arange(120), np.arange(80), indexing="ij")
  assert metrics.rmse(m.predict(grid_u.ravel(), grid_i.ravel()), truth(grid_u.ravel(), grid_i.ravel())) < 0.06
  assert np.corrcoef(m.b_i, b_i)[0, 1] > 0.99


def test_bias_model_unseen_users_and_items_fall_back():
  m = baselines.BiasModel().fit([0, 0, 1], [0, 1, 0], [5.0, 3.0, 4.0], n_users=3, n_items=3)
  assert m.b_u[2] == 0.0 and m.b_i[2] == 0.0  # in range but never rated
  np.testing.assert_allclose(m.predict([9, 9, 0], [9, 1, 9]), [m.mu, m.mu + m.b_i[1], m.mu + m.b_u[0]])
  with pytest.raises(ValueError, match="negative"):
    m.predict([-1], [0])
  with pytest.raises(ValueError, match="n_items"):
    baselines.BiasModel().fit([0], [5], [3.0], n_items=2)


def test_bias_model_prior_and_clip():
  u, i, r = [0, 1, 2], [0, 0, 0], [5.0, 5.0, 5.0]
  prior = np.array([-1.0, 0.7])
  m = baselines.BiasModel(reg_i=1e9, n_epochs=3).fit(u, i, r, n_items=2, item_prior=prior)
  np.testing.assert_allclose(m.b_i, prior, atol=1e-6)  # a huge reg pins biases at the prior
  m = baselines.BiasModel(n_epochs=3).fit(u, i, r, n_items=2, item_prior=prior)
  assert m.b_i[1] == pytest.approx(0.7)  # no ratings: exactly the prior
  assert prior[0] < m.b_i[0] < 0.0  # pulled from the prior towards the data (residual 0)
  big = baselines.BiasModel(n_epochs=1, clip=(1.0, 5.0))
  big.fit([0, 1], [0, 1], [5.0, 1.0], item_prior=[9.0, -9.0])
  np.testing.assert_allclose(big.predict([0, 1], [0, 1]), [5.0, 1.0])


def test_title_prior_transfer_formula():
  u, i, r, _, _ = synthetic(n_items=40)
  source_mean = np.full(41, np.nan)
  source_mean[40] = 9.0  # item 40 has no target ratings; its title's source mean is 9 on 1-10
  m = baselines.TitlePriorTransfer(source_scale=(1, 10), target_scale=(1, 5)).fit(u, i, r, source_mean)
  assert m.matched.sum() == 1
  expected = 1 + (9.0 - 1) * 4 / 9  # 9 on 1-10 is 4.5556 on 1-5
  np.testing.assert_allclose(m.predict([3], [40]), [expected + m.b_u[3]])
  plain = baselines.BiasModel().fit(u, i, r)
  np.testing.assert_allclose(m.b_i[:40], plain.b_i)  # no other matches: target-only model
  with pytest.raises(ValueError, match="both"):
    baselines.TitlePriorTransfer(source_scale=(1, 10))


def test_title_prior_helps_with_few_labels():
  u, i, r, truth, b_i = synthetic(n_users=200, per_user=3, noise=0.3, seed=1)
  source_mean = 3.5 + b_i + np.random.default_rng(2).normal(0, 0.1, b_i.size)  # a good, noisy prior
  test_u, test_i = np.repeat(np.arange(200), 80), np.tile(np.arange(80), 200)
  plain = baselines.BiasModel().fit(u, i, r, n_items=80)
  transfer = baselines.TitlePriorTransfer().fit(u, i, r, source_mean)
  target = truth(test_u, test_i)
  # Item effects (mu + b_i) come out far better; user biases from 3 ratings still limit predictions.
  item_err = lambda m: metrics.rmse(m.mu + m.b_i, 3.5 + b_i)
  assert item_err(transfer) < 0.5 * item_err(plain)
  assert (metrics.rmse(transfer.predict(test_u, test_i), target)
          < 0.9 * metrics.rmse(plain.predict(test_u, test_i), target))


def test_popularity_scores_and_ranking():
  pop = baselines.Popularity().fit([0, 1, 2, 2, 1], [3, 3, 3, 1, 1], n_items=5)
  np.testing.assert_array_equal(pop.counts, [0, 2, 0, 3, 0])
  s = pop.score(np.array([0, 1]), np.array([[3, 1, 7], [0, 2, 4]]))
  np.testing.assert_array_equal(s, [[3, 2, 0], [0, 0, 0]])  # item 7 never seen: 0
  m = metrics.ranking_metrics(s, k=(1,))
  assert m["HR@1"] == pytest.approx((1 + 1 / 3) / 2)  # user 1: a three-way tie


def test_rater_score_matrix():
  m = baselines.BiasModel().fit([0, 1], [0, 1], [4.0, 2.0])
  s = m.score(np.array([0, 1, 0]), np.array([0, 1]))
  assert s.shape == (3, 2)
  np.testing.assert_allclose(s[1], m.predict([1, 1], [0, 1]))


def test_mf_beats_bias_on_low_rank_data_and_is_deterministic():
  u, i, r, truth, _ = synthetic(n_users=150, n_items=60, per_user=40, rank=3, noise=0.1)
  kw = dict(n_factors=8, n_epochs=40, lr=0.02, reg=0.02, batch_size=16)
  mf = baselines.MatrixFactorization(**kw).fit(u, i, r)
  test_u, test_i = np.repeat(np.arange(150), 60), np.tile(np.arange(60), 150)
  target = truth(test_u, test_i)
  rmse_mf = metrics.rmse(mf.predict(test_u, test_i), target)
  rmse_bias = metrics.rmse(baselines.BiasModel().fit(u, i, r).predict(test_u, test_i), target)
  assert rmse_mf < 0.6 * rmse_bias
  assert mf.train_rmse[-1] < mf.train_rmse[0]
  again = baselines.MatrixFactorization(**kw).fit(u, i, r)
  np.testing.assert_array_equal(again.predict(test_u, test_i), mf.predict(test_u, test_i))
  other = baselines.MatrixFactorization(**kw, seed=1).fit(u, i, r)
  assert not np.array_equal(other.predict(test_u, test_i), mf.predict(test_u, test_i))


def test_mf_fallback_and_single_compile():
  u, i, r = np.array([0, 0, 1]), np.array([0, 1, 1]), np.array([5.0, 3.0, 4.0])
  mf = baselines.MatrixFactorization(n_factors=4, n_epochs=3, batch_size=2).fit(u, i, r, n_users=3, n_items=3)
  assert baselines._mf_epoch._cache_size() >= 1
  before = baselines._mf_epoch._cache_size()
  baselines.MatrixFactorization(n_factors=4, n_epochs=5, lr=0.01, batch_size=2).fit(u, i, r, 3, 3)
  assert baselines._mf_epoch._cache_size() == before  # new lr/epochs: no recompilation
  b_u, b_i = mf.params["b_u"], mf.params["b_i"]
  # User 2 and item 2 were never rated: surprise's fallbacks (no random factors leak in).
  np.testing.assert_allclose(mf.predict([2, 2, 0, 9], [0, 2, 2, 9]),
                             [mf.mu + b_i[0], mf.mu, mf.mu + b_u[0], mf.mu], rtol=1e-6)
  with pytest.raises(ValueError, match="non-finite"):
    baselines.MatrixFactorization().fit([0], [0], [np.nan])
