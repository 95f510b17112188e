"""Tests for crossrec_jax/eval/metrics.py: RMSE, MAE, AUC against scikit-learn and hand cases."""

import numpy as np
import pytest
from scipy.stats import rankdata
from sklearn.metrics import mean_absolute_error, mean_squared_error, roc_auc_score

from crossrec_jax.eval import metrics


def test_rmse_mae_match_sklearn():
  rng = np.random.default_rng(0)
  target = rng.integers(1, 6, size=500).astype(np.float32)
  pred = target + rng.normal(0, 0.7, size=500)
  assert metrics.rmse(pred, target) == pytest.approx(np.sqrt(mean_squared_error(target, pred)), rel=1e-12)
  assert metrics.mae(pred, target) == pytest.approx(mean_absolute_error(target, pred), rel=1e-12)


def test_rmse_mae_hand_case():
  assert metrics.rmse([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 6.0]) == pytest.approx(np.sqrt(5 / 4))
  assert metrics.mae([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 3.0, 6.0]) == pytest.approx(3 / 4)
  assert isinstance(metrics.rmse([1.0], [1.0]), float)


@pytest.mark.parametrize("fn", [metrics.rmse, metrics.mae])
def test_rating_metrics_reject_bad_input(fn):
  with pytest.raises(ValueError, match="shape"):
    fn([1.0, 2.0], [1.0, 2.0, 3.0])
  with pytest.raises(ValueError, match="non-finite"):
    fn([1.0, np.nan], [1.0, 2.0])
  with pytest.raises(ValueError, match="empty"):
    fn([], [])


def test_midranks_match_scipy():
  x = np.random.default_rng(1).integers(0, 7, size=200)
  np.testing.assert_allclose(metrics.midranks(x), rankdata(x, method="average"))


def test_auc_matches_sklearn_with_ties():
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 2, size=1000)
  scores = rng.integers(0, 5, size=1000) + labels  # heavy ties, informative
  assert metrics.auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
  assert metrics.auc(scores, labels.astype(bool)) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_auc_hand_cases():
  assert metrics.auc([0.1, 0.9], [0, 1]) == 1.0
  assert metrics.auc([0.9, 0.1], [0, 1]) == 0.0
  assert metrics.auc([0.5, 0.5, 0.5], [0, 1, 1]) == 0.5  # all tied: each pair counts 1/2
  # Pairs (pos, neg): (0.8, 0.2) win, (0.8, 0.8) tie, (0.4, 0.2) win, (0.4, 0.8) loss -> 2.5 / 4.
  assert metrics.auc([0.8, 0.4, 0.2, 0.8], [1, 1, 0, 0]) == pytest.approx(0.625)


def test_auc_errors():
  with pytest.raises(ValueError, match="both classes"):
    metrics.auc([0.1, 0.2], [1, 1])
  with pytest.raises(ValueError, match="0/1"):
    metrics.auc([0.1, 0.2], [0, 2])


def test_ranking_functions_are_reexported():
  scores = np.array([[1.0, 0.0]])
  assert metrics.ranking_metrics(scores, k=(1,))["HR@1"] == 1.0
  assert metrics.full_ranking_metrics(np.array([[3]]), [np.array([3])], k=(1,))["Hit@1"] == 1.0
