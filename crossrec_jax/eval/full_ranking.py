"""Full-catalogue ranking: every item scored for every user, excluded items masked, top-K kept.

    top, scores = topk_items(user_vecs, item_vecs, exclude, k=20)         # [U, 20] item indices
    metrics = full_ranking_eval(user_vecs, item_vecs, positives, exclude, ks=(10, 20))

Users are scored in chunks of `chunk_size` (one compiled function for every chunk: the last one is
padded), as `scores = users @ items.T` in float32; each user's excluded items (its training items,
and for test its valid items: `data.recbole_protocol.eval_sets`) are set to -inf *inside* the
compiled function, and `jax.lax.top_k` keeps the best K. Exclusion lists are padded to one width
(the next power of two of the longest list), so the compile happens once per run.

Sharded (large catalogues): with a `mesh`, items are split over `axis` (padded to a multiple of
the device count with never-ranked rows); each device scores its shard, masks the exclusions that
fall in it, keeps its local top-K, and the K x devices candidates are all-gathered and merged with a
second top-K (`jax.shard_map`). Ties break towards the lower item index either way, as a stable sort.

Excluded items are never ranked: `k` must not exceed the number of items a user has left, which is
checked (an error, not a silently short list). Metrics use RecBole's definitions
(`eval.ranking.full_ranking_metrics`).
"""

from __future__ import annotations

import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from crossrec_jax.eval import ranking as ranking_lib

__all__ = ["pad_exclusions", "topk_items", "full_ranking_eval", "users_per_second"]


def _lists(exclude: Any, n_users: int) -> list[np.ndarray]:
  """Exclusions as a list of int arrays: from None, a list, or a CSR-like (indptr, indices)."""
  if exclude is None:
    return [np.zeros(0, np.int64)] * n_users
  if hasattr(exclude, "indptr") and hasattr(exclude, "indices"):
    p, ix = np.asarray(exclude.indptr), np.asarray(exclude.indices)
    lists = [ix[p[u]:p[u + 1]] for u in range(len(p) - 1)]
  else:
    lists = [np.asarray(e, np.int64).ravel() for e in exclude]
  if len(lists) != n_users:
    raise ValueError(f"{len(lists)} exclusion lists for {n_users} users")
  return lists


def pad_exclusions(exclude: Any, n_users: int, num_items: int, *, min_width: int = 8) -> np.ndarray:
  """[U, E] int32 exclusion matrix padded with `num_items` (an index that drops out of the
  scatter); E = the next power of two >= the longest list (one compile for every chunk)."""
  lists = _lists(exclude, n_users)
  longest = max((len(x) for x in lists), default=0)
  width = max(min_width, 1 << max(longest - 1, 0).bit_length())
  out = np.full((n_users, width), num_items, np.int32)
  for u, x in enumerate(lists):
    x = np.unique(x)
    if len(x) and (x.min() < 0 or x.max() >= num_items):
      raise ValueError(f"user row {u}: excluded item index outside [0, {num_items})")
    out[u, :len(x)] = x
  return out


def _mask_and_topk(scores: jax.Array, excl: jax.Array, k: int, offset: jax.Array | int = 0,
                   valid_items: int | None = None) -> tuple[jax.Array, jax.Array]:
  """-inf at excl (global indices, shifted by `offset` into this block), then top-k."""
  c, n = scores.shape
  local = excl - offset
  local = jnp.where((local >= 0) & (local < n), local, n)  # out of this block -> dropped
  scores = scores.at[jnp.arange(c)[:, None], local].set(-jnp.inf, mode="drop")
  if valid_items is not None:  # padding rows of a sharded catalogue
    gidx = jnp.arange(n) + offset
    scores = jnp.where(gidx[None, :] < valid_items, scores, -jnp.inf)
  vals, idx = jax.lax.top_k(scores, k)
  return vals, idx + offset


@functools.lru_cache(maxsize=16)
def _single_fn(k: int):
  @jax.jit
  def fn(users, items, excl):
    scores = jnp.asarray(users, jnp.float32) @ jnp.asarray(items, jnp.float32).T
    return _mask_and_topk(scores, excl, k)
  return fn


def _sharded_fn(mesh: Mesh, axis: str, k: int, num_items: int):
  def local(users, items, excl):
    n_local = items.shape[0]
    offset = jax.lax.axis_index(axis) * n_local
    scores = users @ items.T
    vals, idx = _mask_and_topk(scores, excl, min(k, n_local), offset, num_items)
    vals = jax.lax.all_gather(vals, axis, axis=1, tiled=True)  # [c, n_dev * k_local]
    idx = jax.lax.all_gather(idx, axis, axis=1, tiled=True)
    best, pos = jax.lax.top_k(vals, k)
    return best, jnp.take_along_axis(idx, pos, axis=1)

  mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(axis), P()), out_specs=(P(), P()),
                         check_vma=False)
  rep = NamedSharding(mesh, P())
  return jax.jit(mapped, in_shardings=(rep, NamedSharding(mesh, P(axis)), rep),
                 out_shardings=(rep, rep))


def topk_items(user_vecs: Any, item_vecs: Any, exclude: Any = None, k: int = 10, *,
               chunk_size: int = 256, mesh: Mesh | None = None,
               axis: str = "data") -> tuple[np.ndarray, np.ndarray]:
  """Top-k item indices [U, k] (best first) and their scores, excluded items never ranked.

  Args:
    user_vecs: [U, D]; item_vecs: [I, D] (scores are dot products: normalise both for cosine).
    exclude: per-user excluded item indices: a list of arrays, a CSR with indptr/indices (e.g.
      `recbole_protocol.Csr`), or None.
    k: list length; must leave k items for every user after exclusion.
    chunk_size: users per compiled call.
    mesh, axis: shard the items over this mesh axis (see the module docstring).
  """
  users = np.asarray(user_vecs, np.float32)
  items = np.asarray(item_vecs, np.float32)
  if users.ndim != 2 or items.ndim != 2 or users.shape[1] != items.shape[1]:
    raise ValueError(f"need [U, D] users and [I, D] items, got {users.shape} and {items.shape}")
  n_users, n_items = users.shape[0], items.shape[0]
  excl = pad_exclusions(exclude, n_users, n_items)
  left = n_items - (excl < n_items).sum(1)
  if n_users and (left < k).any():
    u = int(np.flatnonzero(left < k)[0])
    raise ValueError(f"user row {u} has only {int(left[u])} items left after exclusion, fewer "
                     f"than k={k}: excluded items are never ranked")
  if mesh is None:
    fn = _single_fn(k)
    items_dev = jnp.asarray(items)
  else:
    n_dev = mesh.shape[axis]
    pad = (-n_items) % n_dev
    if pad:
      items = np.concatenate([items, np.zeros((pad, items.shape[1]), np.float32)])
    fn = _sharded_fn(mesh, axis, k, n_items)
    items_dev = jax.device_put(items, NamedSharding(mesh, P(axis)))
  top = np.zeros((n_users, k), np.int32)
  vals = np.zeros((n_users, k), np.float32)
  for start in range(0, n_users, chunk_size):
    rows = np.arange(start, min(start + chunk_size, n_users))
    idx = np.concatenate([rows, np.full(chunk_size - len(rows), rows[-1])])  # fixed shape
    v, t = fn(jnp.asarray(users[idx]), items_dev, jnp.asarray(excl[idx]))
    vals[rows] = np.asarray(v)[:len(rows)]
    top[rows] = np.asarray(t)[:len(rows)]
  return top, vals


def full_ranking_eval(user_vecs: Any, item_vecs: Any, positives: Any, exclude: Any = None,
                      ks: Sequence[int] = (10,), **kw) -> dict[str, float]:
  """RecBole full-ranking metrics at each k in `ks` (Recall, MRR, NDCG, Hit, Precision), user means.

  positives: per-user positive item indices (list of arrays or a CSR), every user with >= 1.
  `kw` goes to `topk_items` (chunk_size, mesh, axis).
  """
  n_users = np.asarray(user_vecs).shape[0]
  pos = _lists(positives, n_users)
  top, _ = topk_items(user_vecs, item_vecs, exclude, max(ks), **kw)
  return ranking_lib.full_ranking_metrics(top, pos, ks)


def users_per_second(n_users: int, n_items: int, dim: int = 128, *, k: int = 10,
                     chunk_size: int = 256, exclude_per_user: int = 80, repeats: int = 3,
                     mesh: Mesh | None = None, seed: int = 0) -> dict[str, float]:
  """Throughput of `topk_items` on random vectors (compile excluded: one warm-up call)."""
  rng = np.random.default_rng(seed)
  users = rng.standard_normal((n_users, dim), np.float32)
  items = rng.standard_normal((n_items, dim), np.float32)
  excl = [rng.choice(n_items, min(exclude_per_user, n_items - k), replace=False)
          for _ in range(n_users)]
  topk_items(users[:chunk_size], items, excl[:chunk_size], k, chunk_size=chunk_size, mesh=mesh)
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    topk_items(users, items, excl, k, chunk_size=chunk_size, mesh=mesh)
    times.append(time.perf_counter() - t0)
  best = min(times)
  return {"users": n_users, "items": n_items, "dim": dim, "k": k, "seconds": best,
          "users_per_s": n_users / best}
