"""Full-catalogue ranking: top-k vs brute-force numpy, exclusions, RecBole metrics, sharding."""

import textwrap

import numpy as np
import pytest

from conftest import run_on_fake_devices
from crossrec_jax.data import recbole_protocol as rp
from crossrec_jax.eval import full_ranking
from crossrec_jax.eval import ranking


def _brute_force(users, items, exclude, k):
  scores = users.astype(np.float64) @ items.T.astype(np.float64)
  for u, e in enumerate(exclude):
    scores[u, np.asarray(e, int)] = -np.inf
  return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def _case(seed, n_users=37, n_items=53, dim=6, max_excl=30):
  rng = np.random.default_rng(seed)
  users = rng.standard_normal((n_users, dim)).astype(np.float32)
  items = rng.standard_normal((n_items, dim)).astype(np.float32)
  exclude = [rng.choice(n_items, rng.integers(0, max_excl), replace=False) for _ in range(n_users)]
  return users, items, exclude


def test_hand_case():
  users = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)
  items = np.array([[3.0, 0.0], [2.0, 1.0], [1.0, 3.0], [0.0, 2.0], [-1.0, -1.0]], np.float32)
  # user 0 scores 3, 2, 1, 0, -1; item 0 is excluded -> 1, 2, 3.
  # user 1 scores 0, 1, 3, 2, -1; nothing excluded -> 2, 3, 1.
  top, vals = full_ranking.topk_items(users, items, [[0], []], k=3, chunk_size=4)
  np.testing.assert_array_equal(top, [[1, 2, 3], [2, 3, 1]])
  np.testing.assert_allclose(vals, [[2, 1, 0], [3, 2, 1]])
  # Positives: user 0 {3, 4}: hit at position 2 only; user 1 {2}: hit at position 0.
  m = full_ranking.full_ranking_eval(users, items, [[3, 4], [2]], [[0], []], ks=(3,))
  ndcg0 = (1 / np.log2(4)) / (1 + 1 / np.log2(3))
  assert m["Recall@3"] == pytest.approx((0.5 + 1.0) / 2)
  assert m["MRR@3"] == pytest.approx((1 / 3 + 1.0) / 2)
  assert m["NDCG@3"] == pytest.approx((ndcg0 + 1.0) / 2)
  assert m["Hit@3"] == 1.0
  assert m["Precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)


@pytest.mark.parametrize("seed, chunk", [(0, 8), (1, 37), (2, 64)])
def test_matches_brute_force_and_never_ranks_excluded(seed, chunk):
  users, items, exclude = _case(seed)
  top, vals = full_ranking.topk_items(users, items, exclude, k=20, chunk_size=chunk)
  np.testing.assert_array_equal(top, _brute_force(users, items, exclude, 20))
  for u, e in enumerate(exclude):
    assert not set(top[u].tolist()) & set(np.asarray(e).tolist())
  assert np.isfinite(vals).all()
  assert (np.diff(vals, axis=1) <= 0).all()


def test_exactly_k_items_left_and_too_few():
  users, items, _ = _case(3, n_users=4, n_items=12, max_excl=5)
  exclude = [np.arange(2, 12)] * 4  # only items 0 and 1 remain
  top, _ = full_ranking.topk_items(users, items, exclude, k=2)
  assert (np.sort(top, axis=1) == [0, 1]).all()
  with pytest.raises(ValueError, match="excluded items are never ranked"):
    full_ranking.topk_items(users, items, exclude, k=3)
  with pytest.raises(ValueError, match="outside"):
    full_ranking.topk_items(users, items, [[12]] * 4, k=2)


def test_metrics_equal_ranking_module_and_accept_csr():
  users, items, exclude = _case(4)
  rng = np.random.default_rng(4)
  positives = [rng.choice(np.setdiff1d(np.arange(53), e), rng.integers(1, 6), replace=False)
               for e in exclude]
  got = full_ranking.full_ranking_eval(users, items, rp.Csr.from_lists(positives),
                                       rp.Csr.from_lists(exclude), ks=(5, 10), chunk_size=16)
  ref = ranking.full_ranking_metrics(_brute_force(users, items, exclude, 10), positives, (5, 10))
  assert got == pytest.approx(ref)


def test_pad_exclusions_width_is_a_power_of_two():
  out = full_ranking.pad_exclusions([[1, 2, 3], [], [4] * 2], 3, num_items=9)
  assert out.shape == (3, 8)
  assert (out[0, :3] == [1, 2, 3]).all() and (out[0, 3:] == 9).all()
  assert (out[2, :1] == [4]).all() and (out[2, 1:] == 9).all()  # duplicates collapse
  assert full_ranking.pad_exclusions([np.arange(9)], 1, 9).shape == (1, 16)


SHARDED = textwrap.dedent("""
  import jax, numpy as np
  from jax.sharding import AxisType
  from flax import nnx
  from crossrec_jax.eval import full_ranking
  from crossrec_jax.models import bert as bert_lib
  from crossrec_jax.tasks import item_cache
  assert jax.device_count() == 4
  mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(0)
  users = rng.standard_normal((21, 5)).astype(np.float32)
  items = rng.standard_normal((103, 5)).astype(np.float32)   # not a multiple of 4
  excl = [rng.choice(103, rng.integers(0, 60), replace=False) for _ in range(21)]
  single, _ = full_ranking.topk_items(users, items, excl, 15, chunk_size=8)
  sharded, _ = full_ranking.topk_items(users, items, excl, 15, chunk_size=8, mesh=mesh)
  assert (single == sharded).all()
  # k above one shard's size (26 rows) still merges correctly.
  a, _ = full_ranking.topk_items(users, items, None, 40, chunk_size=8)
  b, _ = full_ranking.topk_items(users, items, None, 40, chunk_size=8, mesh=mesh)
  assert (a == b).all()
  # Item encoding sharded over the data axis equals one device.
  cfg = bert_lib.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                            num_attention_heads=2, intermediate_size=16, max_position_embeddings=16)
  enc = bert_lib.BertModel(cfg, rngs=nnx.Rngs(0))
  ids = rng.integers(1, 50, (10, 16)).astype(np.int32)
  mask = (np.arange(16)[None] < rng.integers(3, 16, (10, 1))).astype(np.int32)
  toks = item_cache.ItemTokens(ids * mask, mask, 0)
  one = item_cache.encode_items(enc, toks, batch_size=8)
  four = item_cache.encode_items(enc, toks, batch_size=8, mesh=mesh)
  np.testing.assert_allclose(one, four, atol=1e-5)
  print("SHARDED_OK")
""")


def test_sharded_over_four_devices_equals_single_device():
  proc = run_on_fake_devices(SHARDED, devices=4, timeout=600)
  assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stderr[-3000:]


def test_users_per_second_reports_a_rate():
  out = full_ranking.users_per_second(64, 200, dim=8, chunk_size=32, repeats=1,
                                      exclude_per_user=10)
  assert out["users"] == 64 and out["items"] == 200 and out["users_per_s"] > 0
