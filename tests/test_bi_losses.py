"""Retrieval losses against a plain numpy reference: in-batch + extra negatives, log-Q, BPR."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crossrec_jax.objectives import retrieval as bi_losses  # the bi-encoder's retrieval losses


def _np_softmax_loss(user, pos, pos_items, cand, cand_items, pos_logq, cand_logq, in_batch, t):
  """Row by row: -log softmax(positive | negatives that are not one of the row's positives)."""
  b, p, _ = pos.shape
  losses = []
  for i in range(b):
    own = set(pos_items[i][pos_items[i] >= 0].tolist())
    negs = []
    if cand is not None:
      negs += [(cand[c], cand_items[c], cand_logq[c]) for c in range(len(cand))]
    if in_batch:
      negs += [(pos[j, q], pos_items[j, q], pos_logq[j, q]) for j in range(b) for q in range(p)]
    neg_logits = [user[i] @ v / t - lq for v, item, lq in negs if item >= 0 and item not in own]
    for q in range(p):
      if pos_items[i, q] < 0:
        continue
      pl = user[i] @ pos[i, q] / t - (pos_logq[i, q] if in_batch else 0.0)
      all_l = np.array([pl] + neg_logits)
      losses.append(np.log(np.exp(all_l - all_l.max()).sum()) + all_l.max() - pl)
  return np.mean(losses)


def _case(seed=0, b=5, p=3, c=7, d=4, n_items=9):
  rng = np.random.default_rng(seed)
  user = rng.standard_normal((b, d)).astype(np.float32)
  pos = rng.standard_normal((b, p, d)).astype(np.float32)
  pos_items = rng.integers(0, n_items, (b, p)).astype(np.int32)
  pos_items[0, 2] = -1  # padding slot
  pos_items[1, 0] = pos_items[2, 1]  # two rows share a positive: never each other's negative
  cand = rng.standard_normal((c, d)).astype(np.float32)
  cand_items = rng.integers(0, n_items, c).astype(np.int32)
  cand_items[0] = pos_items[3, 0]  # an accidental hit among the extra candidates
  cand_items[1] = -1
  pos_logq = rng.normal(size=(b, p)).astype(np.float32)
  cand_logq = rng.normal(size=c).astype(np.float32)
  return user, pos, pos_items, cand, cand_items, pos_logq, cand_logq


@pytest.mark.parametrize("in_batch, with_cand", [(True, True), (True, False), (False, True)])
def test_sampled_softmax_matches_numpy(in_batch, with_cand):
  user, pos, pos_items, cand, cand_items, pos_logq, cand_logq = _case()
  got = bi_losses.sampled_softmax_loss(
      user, pos, pos_items, cand if with_cand else None, cand_items if with_cand else None,
      pos_logq=pos_logq, cand_logq=cand_logq if with_cand else None, in_batch=in_batch,
      temperature=0.5, num_items=None)
  ref = _np_softmax_loss(user, pos, pos_items, cand if with_cand else None, cand_items,
                         pos_logq, cand_logq if with_cand else np.zeros(7), in_batch, 0.5)
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_accidental_hits_scatter_equals_comparison():
  rng = np.random.default_rng(1)
  rows = rng.integers(-1, 20, (6, 4)).astype(np.int32)
  cand = rng.integers(-1, 20, 30).astype(np.int32)
  a = bi_losses.accidental_hits(jnp.asarray(rows), jnp.asarray(cand))
  b = bi_losses.accidental_hits(jnp.asarray(rows), jnp.asarray(cand), num_items=20)
  ref = np.array([[c >= 0 and c in set(r[r >= 0].tolist()) for c in cand] for r in rows])
  np.testing.assert_array_equal(np.asarray(a), ref)
  np.testing.assert_array_equal(np.asarray(b), ref)


def test_table_softmax_exclusive_equals_sampled_softmax_over_the_table():
  rng = np.random.default_rng(2)
  user = rng.standard_normal((4, 3)).astype(np.float32)
  table = rng.standard_normal((10, 3)).astype(np.float32)
  pos_items = np.array([[1, 2], [3, -1], [3, 9], [0, 0]], np.int32)
  got = bi_losses.table_softmax_loss(user, table, pos_items, temperature=2.0, exclusive=True)
  ref = bi_losses.sampled_softmax_loss(user, table[np.clip(pos_items, 0, None)], pos_items,
                                       table, np.arange(10, dtype=np.int32), in_batch=False,
                                       temperature=2.0)
  np.testing.assert_allclose(float(got), float(ref), rtol=1e-6)


def test_table_softmax_multinomial_matches_numpy():
  rng = np.random.default_rng(3)
  user = rng.standard_normal((3, 4)).astype(np.float32)
  table = rng.standard_normal((8, 4)).astype(np.float32)
  pos_items = np.array([[1, 2, 5], [0, -1, -1], [7, 6, -1]], np.int32)
  got = bi_losses.table_softmax_loss(user, table, pos_items, exclusive=False)
  logits = user @ table.T
  logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
  ref = np.mean([-logp[i, j] for i in range(3) for j in pos_items[i] if j >= 0])
  np.testing.assert_allclose(float(got), ref, rtol=1e-5)


def test_bpr_matches_numpy():
  user, pos, pos_items, cand, cand_items, _, _ = _case(seed=4)
  got = bi_losses.bpr_loss(user, pos, pos_items, cand, cand_items)
  pairs = []
  for i in range(user.shape[0]):
    own = set(pos_items[i][pos_items[i] >= 0].tolist())
    for q in range(pos.shape[1]):
      if pos_items[i, q] < 0:
        continue
      for c in range(len(cand)):
        if cand_items[c] >= 0 and cand_items[c] not in own:
          x = user[i] @ pos[i, q] - user[i] @ cand[c]
          pairs.append(np.log1p(np.exp(-x)))
  np.testing.assert_allclose(float(got), np.mean(pairs), rtol=1e-5)


def test_positive_logq_only_applies_with_in_batch_negatives():
  # Against extra candidates alone, correcting the positive would only penalise popular items.
  user, pos, pos_items, cand, cand_items, pos_logq, cand_logq = _case(seed=5)
  a = bi_losses.sampled_softmax_loss(user, pos, pos_items, cand, cand_items, pos_logq=pos_logq,
                                     cand_logq=cand_logq, in_batch=False)
  b = bi_losses.sampled_softmax_loss(user, pos, pos_items, cand, cand_items, pos_logq=None,
                                     cand_logq=cand_logq, in_batch=False)
  assert float(a) == pytest.approx(float(b))
  c = bi_losses.sampled_softmax_loss(user, pos, pos_items, cand, cand_items, pos_logq=pos_logq,
                                     cand_logq=cand_logq, in_batch=True)
  d = bi_losses.sampled_softmax_loss(user, pos, pos_items, cand, cand_items, pos_logq=None,
                                     cand_logq=cand_logq, in_batch=True)
  assert float(c) != pytest.approx(float(d))


def test_empty_masks_give_zero_loss_and_finite_gradients():
  user = jnp.ones((2, 3))
  pos = jnp.ones((2, 1, 3))
  items = jnp.array([[-1], [-1]], jnp.int32)
  for fn in (bi_losses.sampled_softmax_loss, bi_losses.bpr_loss):
    loss, grad = jax.value_and_grad(
        lambda u: fn(u, pos, items, jnp.ones((4, 3)), jnp.arange(4), in_batch=True))(user)
    assert float(loss) == 0.0
    assert np.isfinite(np.asarray(grad)).all()
  with pytest.raises(ValueError, match="needs negatives"):
    bi_losses.sampled_softmax_loss(user, pos, jnp.zeros((2, 1), jnp.int32), in_batch=False)
  with pytest.raises(ValueError, match="bi_encoder.loss"):
    bi_losses.retrieval_loss("hinge")
