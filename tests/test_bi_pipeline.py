"""Bi-encoder batches: shared catalogue, histories, user / interaction batches, negatives, tokens."""

import numpy as np
import pytest

from crossrec_jax.data import bi_pipeline as bp
from crossrec_jax.data import schema


def make_domain(name, titles, n_users, per_user, seed):
  rng = np.random.default_rng(seed)
  users, items = [], []
  for u in range(n_users):
    users += [u] * per_user
    items += list(rng.choice(len(titles), per_user, replace=False))
  n = len(users)
  inter = schema.Interactions(
      user_ids=np.array([f"{name}-u{u}" for u in range(n_users)], dtype=object),
      user=np.asarray(users, np.int32), item=np.asarray(items, np.int32),
      rating=rng.integers(1, 6, n).astype(np.float32), time=rng.permutation(n).astype(np.int64))
  catalogue = schema.Items(ids=np.array([f"{name}-{t}" for t in titles], dtype=object),
                           fields={"title": np.asarray(titles, dtype=object)})
  return schema.Domain(name, catalogue, inter, schema.RatingScale(1.0, 5.0))


@pytest.fixture(scope="module")
def domains():
  src = make_domain("movies-a", [f"film {i}" for i in range(12)], 9, 6, 0)
  tgt = make_domain("movies-b", [f"film {i}" for i in range(6, 16)], 7, 5, 1)
  return src, tgt


def test_catalogue_shares_identical_texts(domains):
  src, tgt = domains
  cat = bp.build_catalogue([src, tgt])
  assert len(cat) == 16 and cat.shared("movies-a", "movies-b") == 6
  for dom in (src, tgt):
    assert [cat.texts[r] for r in cat.rows[dom.name]] == dom.items.fields["title"].tolist()


def test_history_is_time_ordered_with_scaled_ratings(domains):
  src, _ = domains
  cat = bp.build_catalogue([src])
  hist = bp.domain_history(src, np.arange(len(src.interactions)), cat)
  inter = src.interactions
  for u in range(hist.num_users):
    items, ratings = hist.entries(u)
    rows = np.flatnonzero(inter.user == u)
    rows = rows[np.argsort(inter.time[rows])]
    np.testing.assert_array_equal(items, inter.item[rows])
    np.testing.assert_allclose(ratings, (inter.rating[rows] - 1) / 4)
  assert hist.item_count.sum() == len(inter)


def test_user_batches(domains):
  src, _ = domains
  cat = bp.build_catalogue([src])
  hist = bp.domain_history(src, np.arange(len(src.interactions)), cat)
  cfg = bp.BiBatchConfig(batch_size=4, history_len=3, num_positives=6, keep=0.5)
  it = bp.train_batches(hist, cfg, seed=0)
  b = next(it)
  assert b["hist_item"].shape == (4, 3) and b["pos_item"].shape == (4, 6)
  assert "cand_table" in b and (b["item_rows"] == cat.rows["movies-a"]).all()
  for j, u in enumerate(b["user"]):
    items, _ = hist.entries(int(u))
    shown = b["hist_item"][j][b["hist_mask"][j] > 0]
    assert len(shown) == 3  # round(0.5 * 6) = 3 <= history_len
    assert set(shown.tolist()) <= set(items.tolist())
    assert sorted(b["pos_item"][j][b["pos_mask"][j] > 0].tolist()) == sorted(items.tolist())
  again = next(bp.train_batches(hist, cfg, seed=0))
  assert all((again[k] == b[k]).all() for k in b)
  held = next(bp.train_batches(hist, bp.BiBatchConfig(batch_size=4, history_len=3,
                                                      num_positives=6, keep=0.5,
                                                      targets="heldout"), seed=0))
  for j in range(4):
    shown = set(held["hist_item"][j][held["hist_mask"][j] > 0].tolist())
    assert not shown & set(held["pos_item"][j][held["pos_mask"][j] > 0].tolist())


def test_interaction_batches_and_sampled_negatives(domains):
  src, _ = domains
  cat = bp.build_catalogue([src])
  hist = bp.domain_history(src, np.arange(len(src.interactions)), cat)
  cfg = bp.BiBatchConfig(batch_size=5, history_len=4, mode="interaction", negatives="popularity",
                         num_negatives=7)
  b = next(bp.train_batches(hist, cfg, seed=1))
  assert b["pos_item"].shape == (5, 1) and b["cand_item"].shape == (7,)
  for j, u in enumerate(b["user"]):
    items, _ = hist.entries(int(u))
    shown = b["hist_item"][j][b["hist_mask"][j] > 0]
    assert len(shown) == 4 and b["pos_item"][j, 0] not in shown  # the user's other entries
    assert set(shown.tolist()) <= set(items.tolist())
  w = hist.item_count.astype(float) ** 0.75
  np.testing.assert_allclose(b["cand_logq"], np.log(7 * w[b["cand_item"]] / w.sum()), rtol=1e-5)
  freq = hist.item_count[b["pos_item"]] / hist.item_count.sum()
  np.testing.assert_allclose(b["pos_logq"], np.log(5 * freq), rtol=1e-5)


def test_catalogue_rows_and_tokens(domains):
  src, tgt = domains
  cat = bp.build_catalogue([src, tgt])
  hist = bp.domain_history(tgt, np.arange(len(tgt.interactions)), cat)
  b = next(bp.train_batches(hist, bp.BiBatchConfig(batch_size=3, history_len=2), seed=0))
  g = bp.to_catalogue_rows(b)
  assert "item_rows" not in g and "cand_table" not in g
  np.testing.assert_array_equal(g["cand_item"], cat.rows["movies-b"])
  ok = b["hist_item"] >= 0
  np.testing.assert_array_equal(g["hist_item"][ok], cat.rows["movies-b"][b["hist_item"][ok]])
  assert (g["hist_item"][~ok] == -1).all()
  ids = np.arange(len(cat))[:, None] * np.ones((1, 4), np.int32)
  inter = next(bp.train_batches(hist, bp.BiBatchConfig(batch_size=3, history_len=2,
                                                       mode="interaction", negatives="uniform",
                                                       num_negatives=2), seed=0))
  t = bp.with_item_tokens(inter, ids, np.ones_like(ids))
  np.testing.assert_array_equal(t["pos_input_ids"][:, 0], cat.rows["movies-b"][inter["pos_item"][:, 0]])
  np.testing.assert_array_equal(t["cand_input_ids"][:, 0], cat.rows["movies-b"][inter["cand_item"]])
  with pytest.raises(ValueError, match="sampled negatives"):
    bp.with_item_tokens(dict(inter, cand_table=np.zeros(0)), ids, ids)


def test_history_batch_takes_the_last_entries(domains):
  _, tgt = domains
  cat = bp.build_catalogue([tgt])
  hist = bp.domain_history(tgt, np.arange(len(tgt.interactions)), cat)
  b = bp.history_batch(hist, np.array([2, 0]), 3, batch_size=4)
  np.testing.assert_array_equal(b["hist_item"][0], hist.entries(2)[0][-3:])
  np.testing.assert_array_equal(b["valid"], [1, 1, 0, 0])
  assert (b["hist_mask"][2:] == 0).all()
  with pytest.raises(ValueError, match="negatives"):
    bp.BiBatchConfig(negatives="uniform").validate()


# Keys with one entry per batch row (sliced per process); the rest is shared by the batch.
ROW_KEYS = ("hist_item", "hist_rating", "hist_mask", "pos_item", "pos_rating", "pos_mask",
            "rating_mask", "valid", "user", "user_row", "pos_logq")


@pytest.mark.parametrize("kw", [dict(mode="user", num_positives=6, keep=0.5),
                                dict(mode="interaction", negatives="popularity",
                                     num_negatives=5)])
def test_two_processes_get_disjoint_slices_whose_union_is_the_global_batch(domains, kw):
  src, _ = domains
  cat = bp.build_catalogue([src])
  hist = bp.domain_history(src, np.arange(len(src.interactions)), cat)
  cfg = bp.BiBatchConfig(batch_size=4, history_len=3, **kw)
  whole = bp.train_batches(hist, cfg, seed=3, stream=1, process_index=0, process_count=1)
  parts = [bp.train_batches(hist, cfg, seed=3, stream=1, process_index=i, process_count=2)
           for i in range(2)]
  for _ in range(5):  # across an epoch boundary (9 users: 2 batches of 4 per epoch)
    g, (a, b) = next(whole), (next(p) for p in parts)
    assert len(a["valid"]) == len(b["valid"]) == 2
    for k in g:
      if k in ROW_KEYS:
        np.testing.assert_array_equal(np.concatenate([a[k], b[k]]), g[k], err_msg=k)
      else:  # the domain's item rows and the batch's shared negatives: the same everywhere
        np.testing.assert_array_equal(a[k], g[k], err_msg=k)
        np.testing.assert_array_equal(b[k], g[k], err_msg=k)
    if cfg.mode == "user":  # disjoint: each user of the global batch is in one slice only
      assert not set(a["user"].tolist()) & set(b["user"].tolist())
    else:
      rows = {(int(u), int(i)) for p in (a, b) for u, i in zip(p["user"], p["pos_item"][:, 0])}
      assert len(rows) == 4


def test_resume_starts_at_the_step_without_replay(domains):
  src, _ = domains
  cat = bp.build_catalogue([src])
  hist = bp.domain_history(src, np.arange(len(src.interactions)), cat)
  cfg = bp.BiBatchConfig(batch_size=4, history_len=3, num_positives=6)
  it = bp.train_batches(hist, cfg, seed=0, process_count=1, process_index=0)
  seen = [next(it) for _ in range(4)]
  assert it.get_state() == {"seed": 0, "stream": 0, "step": 4}
  again = bp.train_batches(hist, cfg, seed=0, process_count=1, process_index=0)
  again.set_state({"seed": 0, "stream": 0, "step": 2})
  for want in seen[2:]:
    got = next(again)
    assert all(np.array_equal(got[k], want[k]) for k in want)
  with pytest.raises(ValueError, match="seed=1"):
    again.set_state({"seed": 1, "stream": 0, "step": 0})
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    bp.train_batches(hist, cfg, seed=0, process_index=0, process_count=3)
