"""Tests for crossrec_jax/eval/ranking.py: expected-tie candidate ranking and RecBole full ranking."""

import itertools
import math

import jax
import numpy as np
import pytest
from sklearn.metrics import ndcg_score

from crossrec_jax.eval import ranking


def brute_force_expected(row: np.ndarray, pos: int, k: int) -> tuple[float, float, float]:
  """(HR@k, NDCG@k, MRR) averaged over every order of the candidates used to break ties."""
  hr = ndcg = mrr = 0.0
  perms = list(itertools.permutations(range(len(row))))
  for perm in perms:
    tiebreak = np.empty(len(row))
    tiebreak[list(perm)] = np.arange(len(row))
    order = np.lexsort((tiebreak, -row))  # score descending, ties by the permutation
    r = int(np.flatnonzero(order == pos)[0])
    hr += r < k
    ndcg += (r < k) / math.log2(r + 2)
    mrr += 1 / (r + 1)
  n = len(perms)
  return hr / n, ndcg / n, mrr / n


def test_hand_case_without_ties():
  scores = np.array([[0.5, 0.9, 0.1, 0.7]])  # positive in column 0, two candidates above it
  assert ranking.rank_of_positive(scores)[0] == 2.0
  m = ranking.ranking_metrics(scores, k=(1, 3))
  assert m == pytest.approx({"HR@1": 0.0, "NDCG@1": 0.0, "HR@3": 1.0, "NDCG@3": 0.5, "MRR": 1 / 3})


def test_all_equal_scores_count_ties_in_expectation():
  m = ranking.ranking_metrics(np.zeros((3, 100)), k=(5, 10, 20))
  assert m["HR@10"] == pytest.approx(10 / 100)
  assert m["HR@5"] == pytest.approx(5 / 100) and m["HR@20"] == pytest.approx(20 / 100)
  assert m["NDCG@10"] == pytest.approx(sum(1 / math.log2(r + 2) for r in range(10)) / 100)
  assert m["MRR"] == pytest.approx(sum(1 / (r + 1) for r in range(100)) / 100)
  assert ranking.rank_of_positive(np.zeros((1, 100)))[0] == 49.5


def test_single_candidate_is_rank_zero():
  m = ranking.ranking_metrics(np.array([[0.3], [-2.0]]), k=(5, 10, 20))
  assert all(v == 1.0 for v in m.values())
  assert ranking.rank_of_positive(np.array([[0.3]]))[0] == 0.0


def test_matches_brute_force_tie_breaking():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 3, size=(30, 6)).astype(np.float64)  # many ties
  pos = rng.integers(0, 6, size=30)
  for k in (1, 2, 4):
    m = ranking.ranking_metrics(scores, k=(k,), positive_index=pos)
    ref = np.array([brute_force_expected(scores[u], pos[u], k) for u in range(30)]).mean(0)
    assert [m[f"HR@{k}"], m[f"NDCG@{k}"], m["MRR"]] == pytest.approx(ref.tolist(), abs=1e-12)


def test_ndcg_matches_sklearn_including_ties():
  rng = np.random.default_rng(1)
  scores = rng.integers(0, 4, size=(50, 20)).astype(np.float64)
  pos = rng.integers(0, 20, size=50)
  y_true = np.zeros_like(scores)
  y_true[np.arange(50), pos] = 1.0
  for k in (5, 10):
    ours = ranking.ranking_metrics(scores, k=(k,), positive_index=pos)[f"NDCG@{k}"]
    assert ours == pytest.approx(ndcg_score(y_true, scores, k=k), abs=1e-12)


def test_rank_helpers_accept_integer_ranks():
  ranks = np.array([0, 4, 9, 10])
  np.testing.assert_allclose(ranking.hit_at_k(ranks, 10), [1, 1, 1, 0])
  np.testing.assert_allclose(ranking.ndcg_at_k(ranks, 10), [1, 1 / math.log2(6), 1 / math.log2(11), 0])
  np.testing.assert_allclose(ranking.reciprocal_rank(ranks), [1, 1 / 5, 1 / 10, 1 / 11])


def test_mask_excludes_padding_candidates():
  scores = np.array([[0.5, 0.9, 0.9, 0.1]])
  mask = np.array([[True, False, True, True]])
  g, t = ranking.rank_counts(scores, mask=mask)
  assert (int(g[0]), int(t[0])) == (1, 0)
  with pytest.raises(ValueError, match="positive"):
    ranking.rank_counts(scores, mask=np.array([[False, True, True, True]]))


def test_rank_counts_under_jit_match_numpy():
  rng = np.random.default_rng(3)
  scores = rng.integers(0, 4, size=(8, 10)).astype(np.float32)
  pos = rng.integers(0, 10, size=8)
  g, t = jax.jit(ranking.rank_counts)(scores, pos)
  g_np, t_np = ranking.rank_counts(scores, pos)
  np.testing.assert_array_equal(np.asarray(g), g_np)
  np.testing.assert_array_equal(np.asarray(t), t_np)


def test_candidate_ranking_errors():
  with pytest.raises(ValueError, match="NaN"):
    ranking.ranking_metrics(np.array([[np.nan, 1.0]]))
  with pytest.raises(ValueError, match="out of range"):
    ranking.rank_counts(np.zeros((2, 3)), positive_index=3)
  with pytest.raises(ValueError, match="users, candidates"):
    ranking.rank_counts(np.zeros(3))


def recbole_reference(topk, positives, k):
  """Loop implementation of RecBole's full-ranking metrics, for comparison."""
  rows = []
  for items, pos in zip(topk, positives):
    pos = set(int(p) for p in pos)
    hits = [int(i) in pos for i in items[:k]]
    dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
    idcg = sum(1 / math.log2(j + 2) for j in range(min(len(pos), k)))
    first = next((j for j, h in enumerate(hits) if h), None)
    rows.append([sum(hits) / len(pos), 0.0 if first is None else 1 / (first + 1), dcg / idcg,
                 float(any(hits)), sum(hits) / k])
  return dict(zip(["Recall", "MRR", "NDCG", "Hit", "Precision"], np.mean(rows, axis=0)))


def test_full_ranking_hand_case():
  topk = np.array([[5, 1, 7], [2, 3, 4]])
  positives = [np.array([7, 9]), np.array([8])]
  m = ranking.full_ranking_metrics(topk, positives, k=(3,))
  # User 0: one hit at position 2 of 2 positives; user 1: no hit.
  idcg0 = 1 + 1 / math.log2(3)
  assert m == pytest.approx({"Recall@3": 0.25, "MRR@3": 1 / 6, "NDCG@3": 0.5 * (0.5 / idcg0),
                             "Hit@3": 0.5, "Precision@3": 1 / 6})


def test_full_ranking_matches_brute_force():
  rng = np.random.default_rng(4)
  topk = np.stack([rng.permutation(40)[:20] for _ in range(25)])
  positives = [rng.choice(40, size=rng.integers(1, 15), replace=False) for _ in range(25)]
  m = ranking.full_ranking_metrics(topk, positives, k=(1, 5, 10, 20))
  for k in (1, 5, 10, 20):
    ref = recbole_reference(topk, positives, k)
    assert {n: m[f"{n}@{k}"] for n in ref} == pytest.approx(ref, abs=1e-12)
  # The bool hit-matrix form with positive counts gives the same numbers.
  hits = ranking.hit_matrix(topk, positives)
  counts = np.array([len(p) for p in positives])
  assert ranking.full_ranking_metrics(hits, counts, k=(1, 5, 10, 20)) == pytest.approx(m)


def test_full_ranking_errors():
  with pytest.raises(ValueError, match="no positives"):
    ranking.full_ranking_metrics(np.array([[1, 2]]), [np.array([], dtype=int)], k=(1,))
  with pytest.raises(ValueError, match="outside"):
    ranking.full_ranking_metrics(np.array([[1, 2]]), [np.array([1])], k=(3,))
  with pytest.raises(ValueError, match="repeats"):
    ranking.full_ranking_metrics(np.array([[1, 1]]), [np.array([1])], k=(1,))
