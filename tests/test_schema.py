"""Tests for crossrec_jax/data/schema.py: validation, encoding and skip reports."""

import numpy as np
import pytest

from crossrec_jax.data.schema import (IMPLICIT, CrossDomainData, DataError, Domain, Interactions,
                                      Items, RatingScale, SkipReport, build_domain)

FIVE = RatingScale(1.0, 5.0)


def _items(*ids):
  return Items(ids=np.asarray(ids, dtype=object),
               fields={"title": np.asarray([f"Title {i}" for i in ids], dtype=object)})


def _build(users, items, ratings, times, **kw):
  kw.setdefault("items", _items("a", "b", "c"))
  kw.setdefault("scale", FIVE)
  return build_domain("d", user_ids=users, item_ids=items, ratings=ratings, times=times, **kw)


ORIGIN = ("ratings.csv", np.array([2, 3, 4, 5]))


def test_encodes_users_items_and_columns():
  d = _build(["u2", "u1", "u2"], ["c", "a", "a"], [5, 1, 3.5], [30, 10, 20])
  inter = d.interactions
  assert list(inter.user_ids) == ["u1", "u2"]  # sorted vocabulary
  assert inter.user.tolist() == [1, 0, 1]
  assert inter.item.tolist() == [2, 0, 0]  # rows of the item table
  assert inter.rating.dtype == np.float32 and inter.rating.tolist() == [5.0, 1.0, 3.5]
  assert inter.time.dtype == np.int64 and inter.time.tolist() == [30, 10, 20]
  assert inter.user.dtype == np.int32 and inter.item.dtype == np.int32
  assert d.num_items == 3 and len(inter) == 3 and inter.num_users == 2
  assert d.skipped.total == 0
  assert "2 users, 3 items, 3 interactions" in d.summary()
  # Per user chronological order (the one canonical order lives in splits.py).
  from crossrec_jax.data.splits import canonical_order
  assert canonical_order(d).tolist() == [1, 2, 0]


def test_implicit_ratings_are_ones():
  d = _build(["u"], ["a"], None, [0], scale=IMPLICIT)
  assert d.interactions.rating.tolist() == [1.0]
  assert IMPLICIT.normalise(np.array([3.0])).tolist() == [1.0]


@pytest.mark.parametrize("items,ratings,times,reason,field", [
    (["a", "zz", "b", "c"], [1, 2, 3, 4], [0, 1, 2, 3], "unknown item id", "item"),
    (["a", "b", "c", "a"], [1, 6, 3, 4], [0, 1, 2, 3], "rating outside [1, 5]", "rating"),
    (["a", "b", "c", "a"], [1, np.nan, 3, 4], [0, 1, 2, 3], "NaN rating", "rating"),
    (["a", "b", "c", "a"], [1, 2, 3, 4], [0, np.inf, 2, 3], "non-finite time", "time"),
])
def test_bad_row_raises_with_file_line_and_field(items, ratings, times, reason, field):
  with pytest.raises(DataError) as e:
    _build(["u1", "u1", "u2", "u3"], items, ratings, times, origin=ORIGIN)
  msg = str(e.value)
  assert reason in msg and f"ratings.csv:3, field {field!r}" in msg and "'d'" in msg


@pytest.mark.parametrize("items,ratings,times,reason", [
    (["a", "zz", "b", "c"], [1, 2, 3, 4], [0, 1, 2, 3], "unknown item id"),
    (["a", "b", "c", "a"], [1, 6, 3, 0], [0, 1, 2, 3], "rating outside [1, 5]"),
    (["a", "b", "c", "a"], [1, np.nan, 3, np.nan], [0, 1, 2, 3], "NaN rating"),
])
def test_bad_rows_skipped_and_counted(items, ratings, times, reason):
  d = _build(["u1", "u1", "u2", "u3"], items, ratings, times, origin=ORIGIN, on_error="skip")
  n_bad = 1 if reason == "unknown item id" else 2
  assert len(d.interactions) == 4 - n_bad
  assert d.skipped.counts[reason] == n_bad and d.skipped.total == n_bad
  field = "item" if "item" in reason else "rating"
  assert d.skipped.examples[reason][0] == f"ratings.csv:3, field {field!r}"
  assert f"skipped {n_bad} rows" in str(d.skipped)


def test_error_without_origin_names_the_row():
  with pytest.raises(DataError, match=r"unknown item id at row 1, field 'item': value 'zz'"):
    _build(["u", "u"], ["a", "zz"], [1, 2], [0, 1])


def test_empty_user_id_is_an_error():
  with pytest.raises(DataError, match="empty user id"):
    _build(["u", ""], ["a", "b"], [1, 2], [0, 1])


DUP = dict(users=["u", "u", "u", "v"], items=["a", "a", "a", "a"], ratings=[4, 2, 4, 3],
           times=[7, 7, 8, 7])


def test_duplicates_raise_by_default():
  with pytest.raises(DataError, match=r"duplicate \(user, item, time\) row at ratings.csv:3"):
    _build(DUP["users"], DUP["items"], DUP["ratings"], DUP["times"], origin=ORIGIN)


def test_duplicates_skip_keeps_the_first():
  d = _build(DUP["users"], DUP["items"], DUP["ratings"], DUP["times"], origin=ORIGIN,
             on_duplicate="skip", on_repeat="keep")
  assert d.interactions.rating.tolist() == [4.0, 4.0, 3.0]  # the second (u, a, 7) row is gone
  assert d.skipped.counts["duplicate (user, item, time) row"] == 1
  assert d.skipped.kept["(user, item) repeat at another time"] == 1  # (u, a, 8): kept, counted


def test_repeats_follow_the_duplicate_policy():
  # (u, a) again at time 8: a second rating of the same pair, under its own name in the report.
  d = _build(DUP["users"], DUP["items"], DUP["ratings"], DUP["times"], origin=ORIGIN,
             on_duplicate="skip")
  assert d.interactions.rating.tolist() == [4.0, 3.0]
  assert d.skipped.counts == {"duplicate (user, item, time) row": 1,
                              "(user, item) repeat at another time": 1}
  assert d.skipped.examples["(user, item) repeat at another time"] == [
      "ratings.csv:4, field 'item'"]
  users, items, times = ["u", "u", "v"], ["a", "a", "a"], [7, 9, 7]
  with pytest.raises(DataError, match=r"\(user, item\) repeat at another time at ratings.csv:3, "
                     r"field 'item'.*on_repeat='skip'"):
    _build(users, items, [4, 2, 3], times, origin=ORIGIN, on_duplicate="raise")
  kept = _build(users, items, [4, 2, 3], times, on_duplicate="keep")
  assert len(kept.interactions) == 3
  assert kept.skipped.kept["(user, item) repeat at another time"] == 1


def test_whitespace_user_id_is_an_error():
  with pytest.raises(DataError, match=r"empty user id at ratings.csv:3, field 'user'"):
    _build(["u", " \t", "v"], ["a", "b", "c"], [1, 2, 3], [0, 1, 2], origin=ORIGIN)
  d = _build(["u", " ", "v"], ["a", "b", "c"], [1, 2, 3], [0, 1, 2], on_error="skip")
  assert len(d.interactions) == 2 and d.skipped.counts["empty user id"] == 1


def test_duplicates_keep_counts_them():
  d = _build(DUP["users"], DUP["items"], DUP["ratings"], DUP["times"], on_duplicate="keep")
  assert len(d.interactions) == 4 and d.skipped.total == 0
  assert d.skipped.kept["duplicate (user, item, time) row"] == 1
  assert "kept 1 x duplicate" in str(d.skipped)


def test_duplicate_policy_defaults_to_on_error():
  d = _build(DUP["users"], DUP["items"], DUP["ratings"], DUP["times"], on_error="skip")
  assert len(d.interactions) == 2 and d.skipped.total == 2  # the duplicate and the repeat


def test_bad_policies_are_rejected():
  with pytest.raises(ValueError, match="on_error"):
    _build(["u"], ["a"], [1], [0], on_error="drop")
  with pytest.raises(ValueError, match="on_duplicate"):
    _build(["u"], ["a"], [1], [0], on_duplicate="merge")


def test_empty_domain_is_an_error():
  with pytest.raises(DataError, match="has no interactions"):
    _build([], [], [], [])
  # Everything skipped: still an error, not an empty table downstream.
  with pytest.raises(DataError, match="has no interactions"):
    _build(["u"], ["zz"], [1], [0], on_error="skip")
  d = _build(["u"], ["a"], [1], [0])
  with pytest.raises(DataError, match="has no items"):
    Domain(name="d", items=Items(ids=np.asarray([], dtype=object), fields={}),
           interactions=d.interactions, scale=FIVE)


def test_column_lengths_must_agree():
  with pytest.raises(DataError, match="column lengths differ"):
    _build(["u", "v"], ["a"], [1, 2], [0, 1])


def test_items_validate_ids_and_fields():
  with pytest.raises(DataError, match="duplicate item ids"):
    _items("a", "b", "a")
  with pytest.raises(DataError, match="has 1 values for 2 item ids"):
    Items(ids=["a", "b"], fields={"title": ["x"]})
  items = _items("a", "b")
  assert items.index() == {"a": 0, "b": 1} and items.row(1) == {"title": "Title b"}


def test_rating_scale():
  with pytest.raises(ValueError, match="high > low"):
    RatingScale(5.0, 1.0)
  r = np.array([1.0, 3.0, 5.0])
  np.testing.assert_allclose(FIVE.normalise(r), [0.0, 0.5, 1.0])
  np.testing.assert_allclose(FIVE.denormalise(FIVE.normalise(r)), r)
  assert FIVE.contains(np.array([0.5, 1, 5, 5.5])).tolist() == [False, True, True, False]


def test_skip_report_merge_and_examples_cap():
  a, b = SkipReport(), SkipReport()
  for k in range(5):
    a.add("bad", f"f:{k}")
  b.add("bad", "g:1")
  b.add("worse", "g:2", n=3)
  b.kept["merged"] += 2
  a.merge(b)
  assert a.counts == {"bad": 6, "worse": 3} and a.total == 9
  assert a.examples["bad"] == ["f:0", "f:1", "f:2"]  # at most three examples per reason
  assert a.kept["merged"] == 2
  assert str(SkipReport()) == "no rows skipped"


def test_interactions_take_keeps_the_user_vocabulary():
  d = _build(["u1", "u2", "u2"], ["a", "b", "c"], [1, 2, 3], [0, 1, 2])
  sub = d.interactions.take(np.array([False, True, True]))
  assert isinstance(sub, Interactions) and len(sub) == 2 and sub.num_users == 2
  assert sub.item.tolist() == [1, 2]


def test_cross_domain_data_holds_two_domains():
  s = _build(["u"], ["a"], [1], [0])
  t = _build(["v"], ["b"], [2], [0])
  data = CrossDomainData(source=s, target=t, name="pair")
  assert data.domains() == (s, t) and isinstance(data.source, Domain)
