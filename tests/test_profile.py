"""Tests for data/profile.py: profile facts equal a brute-force recomputation from the rows strictly
before each example, and never read the example's own or later ratings (property over random logs,
like tests/test_splits.py)."""

import dataclasses

import numpy as np
from hypothesis import given, settings, strategies as st

from crossrec_jax.data import profile, schema, splits

GENRES = ["Drama", "Comedy", "Horror", "Action"]


def make_domain(seed, n_users, n_items, n_rows, ties):
  rng = np.random.default_rng(seed)
  genres = [", ".join(g for g in GENRES if rng.random() < 0.5) for _ in range(n_items)]
  items = schema.Items(ids=np.array([f"i{j:03d}" for j in range(n_items)], object),
                       fields={"title": np.array([f"T{j}" for j in range(n_items)], object),
                               "genres": np.array(genres, object)})
  users = rng.integers(0, n_users, n_rows)
  times = rng.integers(0, 6 if ties else 10**6, n_rows)
  return schema.build_domain("ml-prop", user_ids=[f"u{u}" for u in users],
                             item_ids=[f"i{j:03d}" for j in rng.integers(0, n_items, n_rows)],
                             ratings=rng.integers(1, 6, n_rows).astype(float).tolist(),
                             times=times.tolist(), items=items, scale=schema.RatingScale(1, 5),
                             on_duplicate="keep", on_repeat="keep")


def shown_mask(domain, split, which, test_sees_valid):
  shown = np.zeros(len(domain.interactions), bool)
  shown[split.labelled_rows] = True
  if which == "test" and test_sees_valid:
    shown[split.valid] = True
  return shown


def brute_force(domain, visible, shown, r, n=2, k=2, thr=0.2, min_count=2):
  """The profile of row r from a plain scan of the rows strictly before it."""
  inter = domain.interactions
  rank = splits.item_id_rank(domain)
  vocab, member = profile.genre_matrix(domain.items)
  rated = [x for x in visible if shown[x]]
  before_all = [x for x in rated if inter.time[x] < inter.time[r]]
  mine = [x for x in before_all if inter.user[x] == inter.user[r]]
  mine.sort(key=lambda x: (inter.time[x], rank[inter.item[x]], x))  # canonical order
  count = len(mine)
  total = sum(float(inter.rating[x]) for x in mine)
  mean = total / count if count else np.nan
  dmean = (sum(float(inter.rating[x]) for x in before_all) / len(before_all)
           if before_all else np.nan)
  liked, disliked = [], []
  if count:
    scores = []
    for g in range(len(vocab)):
      rs = [float(inter.rating[x]) for x in mine if member[inter.item[x], g]]
      if len(rs) >= min_count:
        scores.append((sum(rs) / len(rs) - mean, g))
    liked = [g for s, g in sorted(scores, key=lambda t: (-t[0], t[1])) if s >= thr][:k]
    disliked = [g for s, g in sorted(scores, key=lambda t: (t[0], t[1])) if s <= -thr][:k]
  top, bottom = [], []
  if count >= 2 * n:
    pos = {x: i for i, x in enumerate(mine)}
    top = sorted(mine, key=lambda x: (-inter.rating[x], -pos[x]))[:n]
    bottom = sorted(mine, key=lambda x: (inter.rating[x], pos[x]))[:n]
  pad = lambda xs, m: list(xs) + [-1] * (m - len(xs))
  return dict(count=count, mean=mean, domain=dmean, liked=pad(liked, k),
              disliked=pad(disliked, k), top=pad(top, n), bottom=pad(bottom, n))


def stats_row(stats, e):
  return dict(count=int(stats.count[e]), mean=float(stats.mean[e]), domain=float(stats.domain[e]),
              liked=stats.liked[e].tolist(), disliked=stats.disliked[e].tolist(),
              top=stats.top[e].tolist(), bottom=stats.bottom[e].tolist())


def assert_same(got, want):
  for key in ("mean", "domain"):
    np.testing.assert_equal(got.pop(key), want.pop(key))  # NaN == NaN; exact otherwise
  assert got == want


def build(domain, kind, fraction, which, test_sees_valid, seed):
  split = splits.make_split(domain, kind, seed=seed, label_fraction=fraction)
  visible = splits.visible_rows(split, which, test_sees_valid)
  shown = shown_mask(domain, split, which, test_sees_valid)
  rows = split.rows(which)
  return split, visible, shown, rows


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10**6), n_users=st.integers(1, 6), n_rows=st.integers(1, 80),
       kind=st.sampled_from(["ratio", "loo", "random"]), fraction=st.sampled_from([1.0, 0.5, 0.0]),
       which=st.sampled_from(["train", "valid", "test"]), sees_valid=st.booleans(),
       ties=st.booleans())
def test_profile_equals_brute_force_and_never_reads_own_or_later_rows(
    seed, n_users, n_rows, kind, fraction, which, sees_valid, ties):
  d = make_domain(seed, n_users, 7, n_rows, ties)
  split, visible, shown, rows = build(d, kind, fraction, which, sees_valid, seed)
  stats = profile.profile_stats(d, visible, shown, rows, chunk=3)
  for e, r in enumerate(rows):
    assert_same(stats_row(stats, e), brute_force(d, visible, shown, int(r)))
  if not len(rows):
    return
  # Change the rating of the example's own row and of every row at or after it in time (any
  # user): its profile stays the same.
  rng = np.random.default_rng(seed)
  e = int(rng.integers(len(rows)))
  r = int(rows[e])
  inter = d.interactions
  later = inter.time >= inter.time[r]
  changed = dataclasses.replace(d, interactions=dataclasses.replace(
      inter, rating=np.where(later, 6.0 - inter.rating, inter.rating).astype(np.float32)))
  again = profile.profile_stats(changed, visible, shown, rows[e:e + 1])
  assert_same(stats_row(again, 0), stats_row(stats, e))


def hand_domain():
  """One user: Drama rated 5, 5, 4; Horror 1, 2; then Comedy (time 9), items 'T0'... (2001)."""
  items = schema.Items(ids=np.array([f"i{j}" for j in range(6)], object),
                       fields={"title": np.array([f"T{j}" for j in range(6)], object),
                               "year": np.array(["2001"] * 6, object),
                               "genres": np.array(["Drama", "Drama", "Drama", "Horror", "Horror",
                                                   "Comedy"], object)})
  return schema.build_domain("ml-hand", user_ids=["u"] * 6, item_ids=[f"i{j}" for j in range(6)],
                             ratings=[5, 5, 4, 1, 2, 3], times=[1, 2, 3, 4, 5, 9], items=items,
                             scale=schema.RatingScale(1, 5))


def test_profile_facts_on_a_hand_made_user():
  d = hand_domain()
  rows = np.arange(6)
  shown = np.ones(6, bool)
  stats = profile.profile_stats(d, rows, shown, np.array([5]))
  assert stats.count.tolist() == [5] and stats.mean.tolist() == [3.4]
  assert [stats.genres[g] for g in stats.liked[0] if g >= 0] == ["Drama"]
  assert [stats.genres[g] for g in stats.disliked[0] if g >= 0] == ["Horror"]
  assert stats.top[0].tolist() == [1, 0] and stats.bottom[0].tolist() == [3, 4]
  hidden = shown.copy()
  hidden[1] = False  # a hidden label is no fact of the profile
  stats = profile.profile_stats(d, rows, hidden, np.array([5]))
  assert stats.count.tolist() == [4] and stats.top[0].tolist() == [0, 2]


def test_unique_inverse_equals_numpy():
  rng = np.random.default_rng(0)
  for keys in (rng.integers(-3, 5, (200, 3)), rng.integers(0, 2**40, (50, 2)),
               rng.integers(0, 7, 100), np.zeros((0, 2), np.int64)):
    got, inv = profile.unique_inverse(keys)
    keys = np.asarray(keys)
    want, want_inv = np.unique(keys.reshape(len(keys), keys.shape[1] if keys.ndim == 2 else 1),
                               axis=0, return_inverse=True)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(inv, want_inv.reshape(-1))
