"""Batches for the bi-encoder: a shared item catalogue, user histories, positives and negatives.

Catalogue. Every domain's items are rows of one `ItemCatalogue`, keyed by item text (the template's
item fields): an item both domains describe identically (ML-1M and ML-100K share 1,127 such
titles) is one row, encoded once, and its vector (and id embedding, if any) serves both domains.
`catalogue.rows[name]` maps a domain's item codes to catalogue rows.

Item ids in batches. With `domain_table=True` (default) a batch carries 'item_rows' [I_d] (the
domain's catalogue rows) and every item id ('hist_item', 'pos_item', 'cand_item') is a domain
item code, i.e. an index into 'item_rows': the step projects the domain's I_d items once and
gathers, instead of the whole catalogue (the item MLP dominates a cached step). With
`domain_table=False` (huge catalogues) ids are catalogue rows and only the batch's items are
projected (`to_catalogue_rows`).

Histories. `DomainHistory` holds, per user, the visible interactions (e.g. the training rows) in
time order (item codes), with ratings scaled to [0, 1] by the domain's scale, and the training
count of every item (for log-Q).

Training batches (`train_batches`, fixed shapes, so a phase compiles once; see
`models/bi_encoder.py` for the keys), in one of two modes:
  * 'user' (the cached fast path): B users per batch (an epoch is a permutation of the users; the
    remainder is dropped, a different one each epoch). Each user's input history is a random
    `keep` fraction of its entries (at least 1, at most K, kept in time order: a denoising
    objective, as Mult-DAE); its positives are all its entries ('all') or the entries not in the
    input ('heldout'), at most P (a random subset beyond).
  * 'interaction': B random training interactions; the positive is the interaction's item (P = 1)
    and the history is up to K of the user's *other* entries (a random subset, in time order).
Negatives: 'catalogue' (all the domain's items compete: an exact softmax; flagged by the key
'cand_table', computed from one [B, I_d] product),
'uniform' / 'popularity' (N items shared by the batch, drawn with replacement uniformly or in
proportion to count ** alpha), or 'none' (in-batch negatives only). `cand_logq` / `pos_logq` hold
log expected counts (log N q_j for drawn negatives, log (B P f_j) for in-batch ones), the log-Q
correction of `objectives/retrieval.py`.

Through grain, per process: batch `step` is a pure function of (seed, stream, step), one grain
element each (resuming starts at the step), and a process builds only its `process_index`-th
slice of the rows of every global batch, as the cross-encoder's `pipeline.py` does. Per-row keys
are sliced; 'item_rows' and the shared negatives ('cand_item', 'cand_logq') are whole on every
process.

Evaluation batches (`history_batch`): each user's last K visible entries, no corruption.
Trainable tower: `with_item_tokens` adds the token ids of the positives (P == 1) and candidates.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Literal, Mapping, Sequence

import grain
import jax
import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import text as text_lib

__all__ = ["ItemCatalogue", "build_catalogue", "DomainHistory", "domain_history", "BiBatchConfig",
           "train_batches", "BiBatchIterator", "history_batch", "to_catalogue_rows",
           "with_item_tokens", "NEGATIVES", "MODES", "SHARED_KEYS"]

Batch = dict[str, np.ndarray]
NEGATIVES = ("catalogue", "uniform", "popularity", "none")
MODES = ("user", "interaction")
# The batch keys that are not per row: the domain's catalogue rows and the batch's shared drawn
# negatives (and their tokens). Every process builds them whole; a mesh replicates them
# (`pipeline.shard_batch(shared=...)`) where it splits the per-row keys over its data axes.
SHARED_KEYS = frozenset({"item_rows", "cand_table", "cand_item", "cand_logq", "cand_input_ids",
                         "cand_attention_mask"})


# ----------------------------------------------------------------------------- catalogue


@dataclasses.dataclass(frozen=True)
class ItemCatalogue:
  """texts: [G] unique item texts (object array); rows: domain name -> [I_d] int32 rows."""
  texts: np.ndarray
  rows: Mapping[str, np.ndarray]

  def __len__(self) -> int:
    return len(self.texts)

  def shared(self, a: str, b: str) -> int:
    """Number of catalogue rows used by both domains."""
    return len(np.intersect1d(self.rows[a], self.rows[b]))


def build_catalogue(domains: Sequence[schema.Domain],
                    template: str | text_lib.Template = "default") -> ItemCatalogue:
  """One row per distinct item text over the domains (first-seen order: domain by domain)."""
  fields = text_lib.get_template(template).item_fields
  index: dict[str, int] = {}
  rows = {}
  for dom in domains:
    if dom.name in rows:
      raise ValueError(f"two domains are both named {dom.name!r}")
    texts = text_lib.item_texts(dom.items, fields)
    rows[dom.name] = np.array([index.setdefault(t, len(index)) for t in texts.tolist()], np.int32)
  return ItemCatalogue(np.array(list(index), dtype=object), rows)


# ----------------------------------------------------------------------------- histories


@dataclasses.dataclass(frozen=True)
class DomainHistory:
  """Per-user visible entries in time order (domain item codes and ratings in [0, 1]).

  indptr [U + 1]; item [nnz] int32 item codes; rating [nnz] float32; catalogue_rows [I_d] int32
  (each item code's catalogue row); item_count [I_d] count of each item among the entries;
  user_offset: the domain's first row in a user table shared by the domains (batches' 'user_row'
  = user code + user_offset).
  """
  name: str
  indptr: np.ndarray
  item: np.ndarray
  rating: np.ndarray
  catalogue_rows: np.ndarray
  item_count: np.ndarray
  user_offset: int = 0

  @property
  def num_users(self) -> int:
    return len(self.indptr) - 1

  def entries(self, u: int) -> tuple[np.ndarray, np.ndarray]:
    a, b = self.indptr[u], self.indptr[u + 1]
    return self.item[a:b], self.rating[a:b]

  def lengths(self) -> np.ndarray:
    return np.diff(self.indptr)


def domain_history(domain: schema.Domain, rows: np.ndarray, catalogue: ItemCatalogue, *,
                   user_offset: int = 0) -> DomainHistory:
  """The visible `rows` of `domain` grouped by user, each user's in (time, item id, row) order."""
  inter = domain.interactions
  rows = np.asarray(rows, np.int64)
  id_rank = np.empty(domain.num_items, np.int64)
  id_rank[np.argsort(domain.items.ids.astype(str), kind="stable")] = np.arange(domain.num_items)
  order = rows[np.lexsort((rows, id_rank[inter.item[rows]], inter.time[rows], inter.user[rows]))]
  cat_rows = np.asarray(catalogue.rows[domain.name], np.int32)
  indptr = np.searchsorted(inter.user[order], np.arange(inter.num_users + 1)).astype(np.int64)
  item = inter.item[order].astype(np.int32)
  rating = domain.scale.normalise(inter.rating[order]).astype(np.float32)
  count = np.bincount(item, minlength=domain.num_items).astype(np.int64)
  return DomainHistory(domain.name, indptr, item, rating, cat_rows, count, int(user_offset))


# ----------------------------------------------------------------------------- batches


@dataclasses.dataclass(frozen=True)
class BiBatchConfig:
  """Shapes and sampling of bi-encoder training batches (module docstring)."""
  batch_size: int = 128
  history_len: int = 100  # K
  mode: Literal["user", "interaction"] = "user"
  num_positives: int = 100  # P in 'user' mode (1 in 'interaction' mode)
  keep: float = 0.3  # 'user' mode: fraction of the entries shown as input
  targets: Literal["all", "heldout"] = "all"
  negatives: Literal["catalogue", "uniform", "popularity", "none"] = "catalogue"
  num_negatives: int = 0  # N for 'uniform' / 'popularity'
  popularity_alpha: float = 0.75
  domain_table: bool = True  # ids index 'item_rows' (module docstring)

  def validate(self) -> None:
    if self.mode not in MODES:
      raise ValueError(f"bi batches: mode must be one of {MODES}, got {self.mode!r}")
    if self.negatives not in NEGATIVES:
      raise ValueError(f"bi batches: negatives must be one of {NEGATIVES}, got {self.negatives!r}")
    if self.targets not in ("all", "heldout"):
      raise ValueError(f"bi batches: targets must be 'all' or 'heldout', got {self.targets!r}")
    if min(self.batch_size, self.history_len, self.num_positives) < 1:
      raise ValueError("bi batches: batch_size, history_len and num_positives must be >= 1")
    if not 0.0 < self.keep <= 1.0:
      raise ValueError(f"bi batches: keep must be in (0, 1], got {self.keep}")
    if self.negatives in ("uniform", "popularity") and self.num_negatives < 1:
      raise ValueError(f"bi batches: negatives={self.negatives!r} needs num_negatives >= 1")

  @property
  def positives(self) -> int:
    return self.num_positives if self.mode == "user" else 1


def _empty(b: int, k: int, p: int) -> Batch:
  return {"hist_item": np.full((b, k), -1, np.int32), "hist_rating": np.zeros((b, k), np.float32),
          "hist_mask": np.zeros((b, k), np.float32), "pos_item": np.full((b, p), -1, np.int32),
          "pos_rating": np.zeros((b, p), np.float32), "pos_mask": np.zeros((b, p), np.float32),
          "rating_mask": np.zeros((b, p), np.float32), "valid": np.zeros((b,), np.float32),
          "user": np.full((b,), -1, np.int32), "user_row": np.full((b,), -1, np.int32)}


def _fill_history(out: Batch, j: int, items: np.ndarray, ratings: np.ndarray) -> None:
  out["hist_item"][j, :len(items)] = items
  out["hist_rating"][j, :len(items)] = ratings
  out["hist_mask"][j, :len(items)] = 1.0


def _negatives(hist: DomainHistory, cfg: BiBatchConfig, rng: np.random.Generator,
               batch: Batch) -> None:
  n_pos = float(cfg.batch_size * cfg.positives)
  total = max(int(hist.item_count.sum()), 1)
  freq = hist.item_count[np.clip(batch["pos_item"], 0, None)] / total
  batch["pos_logq"] = np.where(batch["pos_item"] >= 0,
                               np.log(np.maximum(n_pos * freq, 1e-12)), 0.0).astype(np.float32)
  n_items = len(hist.catalogue_rows)
  if cfg.negatives == "catalogue":
    batch["cand_table"] = np.zeros((0,), np.int32)  # presence flag: all 'item_rows' compete
  elif cfg.negatives in ("uniform", "popularity"):
    if cfg.negatives == "uniform":
      q = np.full(n_items, 1.0 / n_items)
    else:
      w = hist.item_count.astype(np.float64) ** cfg.popularity_alpha
      q = w / w.sum() if w.sum() > 0 else np.full(n_items, 1.0 / n_items)
    pick = rng.choice(n_items, cfg.num_negatives, replace=True, p=q)
    batch["cand_item"] = pick.astype(np.int32)
    batch["cand_logq"] = np.log(cfg.num_negatives * q[pick]).astype(np.float32)


def _user_batch(hist: DomainHistory, cfg: BiBatchConfig, users: np.ndarray,
                rng: np.random.Generator) -> Batch:
  k, p = cfg.history_len, cfg.num_positives
  out = _empty(len(users), k, p)
  for j, u in enumerate(users):
    items, ratings = hist.entries(int(u))
    n = len(items)
    if n == 0:
      continue
    m = min(k, max(1, int(round(cfg.keep * n))))
    shown = np.sort(rng.choice(n, m, replace=False))
    _fill_history(out, j, items[shown], ratings[shown])
    target = np.arange(n)
    if cfg.targets == "heldout" and m < n:
      target = np.setdiff1d(target, shown)
    if len(target) > p:
      target = rng.choice(target, p, replace=False)
    out["pos_item"][j, :len(target)] = items[target]
    out["pos_rating"][j, :len(target)] = ratings[target]
    out["pos_mask"][j, :len(target)] = 1.0
    out["rating_mask"][j, :len(target)] = 1.0
    out["valid"][j] = 1.0
    out["user"][j] = u
    out["user_row"][j] = u + hist.user_offset
  return out


def _interaction_batch(hist: DomainHistory, cfg: BiBatchConfig, entries: np.ndarray,
                       rng: np.random.Generator, user_of: np.ndarray) -> Batch:
  k = cfg.history_len
  out = _empty(len(entries), k, 1)
  for j, e in enumerate(entries):
    u = int(user_of[e])
    a, b = hist.indptr[u], hist.indptr[u + 1]
    others = np.delete(np.arange(a, b), e - a)
    if len(others) > k:
      others = np.sort(rng.choice(others, k, replace=False))
    _fill_history(out, j, hist.item[others], hist.rating[others])
    out["pos_item"][j, 0] = hist.item[e]
    out["pos_rating"][j, 0] = hist.rating[e]
    out["pos_mask"][j, 0] = 1.0
    out["rating_mask"][j, 0] = 1.0
    out["valid"][j] = 1.0
    out["user"][j] = u
    out["user_row"][j] = u + hist.user_offset
  return out


# ----------------------------------------------------------------------------- grain, per process
# As the cross-encoder's `pipeline.py`: one grain `MapDataset` element is one batch, a pure
# function of the step, so resuming is `dataset[step:]` (no replay), and every process computes
# the same global batch plan and builds only its `process_index`-th slice of the rows. Each row
# draws from its own generator (seed, stream, step, row) and the batch's shared negatives from
# (seed, stream, step), so the slices of all processes put together are the global batch.


class _BiStream:
  """step -> this process's rows of global batch `step` of the (seed, stream) stream."""

  def __init__(self, hist: DomainHistory, cfg: BiBatchConfig, seed: int, stream: int,
               process_index: int, process_count: int):
    cfg.validate()
    if cfg.batch_size % process_count:
      raise ValueError(f"bi batches: batch_size {cfg.batch_size} is not divisible by "
                       f"{process_count} processes")
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
    self.hist, self.cfg, self.seed, self.stream = hist, cfg, int(seed), int(stream)
    lengths = hist.lengths()
    self.pool = (np.flatnonzero(lengths > 0) if cfg.mode == "user"
                 else np.arange(len(hist.item)))
    self.user_of = np.repeat(np.arange(hist.num_users), lengths)
    if len(self.pool) < cfg.batch_size:
      raise ValueError(f"domain {hist.name!r}: {len(self.pool)} training {cfg.mode}s, fewer "
                       f"than batch_size={cfg.batch_size}")
    self.per_epoch = len(self.pool) // cfg.batch_size  # the remainder is dropped, per epoch
    local = cfg.batch_size // process_count
    self.rows = range(process_index * local, (process_index + 1) * local)
    self._perm: tuple[int, np.ndarray] | None = None  # the current epoch's permutation

  def _epoch_perm(self, epoch: int) -> np.ndarray:
    cached = self._perm  # one read: grain may call from several threads
    if cached is None or cached[0] != epoch:
      cached = (epoch, np.random.default_rng([self.seed, self.stream, epoch]).permutation(self.pool))
      self._perm = cached
    return cached[1]

  def __call__(self, step: int) -> Batch:
    cfg, step = self.cfg, int(step)
    epoch, pos = divmod(step, self.per_epoch)
    chosen = self._epoch_perm(epoch)[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
    parts = []
    for j in self.rows:
      rng = np.random.default_rng([self.seed, self.stream, step, 1 + j])
      if cfg.mode == "user":
        parts.append(_user_batch(self.hist, cfg, chosen[j:j + 1], rng))
      else:
        parts.append(_interaction_batch(self.hist, cfg, chosen[j:j + 1], rng, self.user_of))
    batch = {k: np.concatenate([part[k] for part in parts]) for k in parts[0]}
    _negatives(self.hist, cfg, np.random.default_rng([self.seed, self.stream, step]), batch)
    batch["item_rows"] = self.hist.catalogue_rows
    return batch if cfg.domain_table else to_catalogue_rows(batch)


class BiBatchIterator:
  """Endless, checkpointable batches of one stream through grain; state {'seed', 'stream', 'step'}."""

  def __init__(self, stream: _BiStream):
    self._stream, self._step, self._it = stream, 0, None

  def __iter__(self) -> "BiBatchIterator":
    return self

  def __next__(self) -> Batch:
    if self._it is None:
      ds = grain.MapDataset.range(self._step, sys.maxsize).map(self._stream)
      self._it = iter(ds.to_iter_dataset())
    batch = next(self._it)
    self._step += 1
    return batch

  def get_state(self) -> dict[str, int]:
    return {"seed": self._stream.seed, "stream": self._stream.stream, "step": self._step}

  def set_state(self, state: Mapping[str, int]) -> None:
    mine = self.get_state()
    for key in ("seed", "stream"):
      if int(state[key]) != mine[key]:
        raise ValueError(f"bi batch state {key}={state[key]} but this stream has {mine[key]}")
    self._it, self._step = None, int(state["step"])


def train_batches(hist: DomainHistory, cfg: BiBatchConfig, *, seed: int, stream: int = 0,
                  process_index: int | None = None,
                  process_count: int | None = None) -> BiBatchIterator:
  """Endless training batches, deterministic from (seed, stream); this process's rows of each
  global batch (default: `jax.process_index()` of `jax.process_count()`)."""
  return BiBatchIterator(_BiStream(
      hist, cfg, seed, stream,
      jax.process_index() if process_index is None else int(process_index),
      jax.process_count() if process_count is None else int(process_count)))


def history_batch(hist: DomainHistory, users: np.ndarray, history_len: int,
                  batch_size: int | None = None) -> Batch:
  """Evaluation input: each user's last `history_len` visible entries (time order), padded with
  invalid rows (valid 0, user -1) to `batch_size` when given."""
  users = np.asarray(users, np.int64)
  b = len(users) if batch_size is None else batch_size
  if b < len(users):
    raise ValueError(f"{len(users)} users do not fit batch_size={batch_size}")
  out = _empty(b, history_len, 1)
  for j, u in enumerate(users):
    items, ratings = hist.entries(int(u))
    _fill_history(out, j, items[-history_len:], ratings[-history_len:])
    out["valid"][j] = 1.0
    out["user"][j] = u
    out["user_row"][j] = u + hist.user_offset
  out["item_rows"] = hist.catalogue_rows
  return out


def to_catalogue_rows(batch: Batch) -> Batch:
  """Item codes -> catalogue rows ('item_rows' is consumed; -1 padding stays -1)."""
  out = dict(batch)
  rows = out.pop("item_rows")
  if out.pop("cand_table", None) is not None:  # the domain's items, now as explicit candidates
    out["cand_item"] = np.arange(len(rows), dtype=np.int32)
    out["cand_logq"] = np.zeros(len(rows), np.float32)
  for key in ("hist_item", "pos_item", "cand_item"):
    if key in out:
      ids = out[key]
      out[key] = np.where(ids >= 0, rows[np.clip(ids, 0, None)], -1).astype(np.int32)
  return out


def with_item_tokens(batch: Batch, input_ids: np.ndarray, attention_mask: np.ndarray) -> Batch:
  """Adds the token ids of the batch's positives (P must be 1) and candidates, for a trainable
  item tower. input_ids / attention_mask: [G, L] of the whole catalogue (`item_cache.ItemTokens`)."""
  if batch["pos_item"].shape[1] != 1:
    raise ValueError("item tokens need one positive per row (mode='interaction')")
  if "cand_table" in batch:
    raise ValueError("a trainable item tower needs sampled negatives ('uniform', 'popularity' or "
                     "'none'), not negatives='catalogue' (that would encode every item each step)")
  out = dict(batch)
  rows = batch.get("item_rows")
  to_row = (lambda ids: rows[np.clip(ids, 0, None)]) if rows is not None else (
      lambda ids: np.clip(ids, 0, None))
  pos = to_row(batch["pos_item"][:, 0])
  out["pos_input_ids"], out["pos_attention_mask"] = input_ids[pos], attention_mask[pos]
  if "cand_item" in batch:
    cand = to_row(batch["cand_item"])
    out["cand_input_ids"], out["cand_attention_mask"] = input_ids[cand], attention_mask[cand]
  return out
