"""Split domain -> tokenised example records (the columns the TFDS builder and pipeline read).

One example per interaction row of the chosen split part. Its ids are
  [CLS] prefix history-entry ... history-entry [SEP] candidate [SEP]
with history entries the user's last K visible rows strictly before it (`splits.history_rows`),
oldest first. To fit `max_len`, whole history entries are dropped oldest first; the candidate is
cut (tail first) only when it alone does not fit, and such examples are counted in `info`.

Pieces are tokenised once per unique text (`tokenize.TokenCache`): each item's candidate text and
each distinct (item, shown rating) history entry, so assembling an example is a concatenation.

Labels. Training rows whose label is hidden by the label fraction (`Split.train_labelled`) get
label_mask 0, and their rating is kept out of the record (`label` and `rating` are 0) and out of
every history that shows them (rendered without a rating). Valid/test examples have label_mask 1.
Implicit domains: label 1.0, rating 1.0, no ratings in histories.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.data import text as text_lib
from crossrec_jax.data import tokenize as tokenize_lib

COLUMNS = ("input_ids", "label", "label_mask", "rating", "domain", "user", "item", "row")


class ExampleSet:
  """Columns of prepared examples: `es["label"]` is a column, `len(es)` the number of examples,
  `es.record(i)` example i as a dict. `input_ids` is an object array of 1-D int32 arrays.

  `info` holds counts from building (truncations, cache hits) and the settings used.
  """

  def __init__(self, columns: dict[str, np.ndarray], info: dict[str, Any] | None = None):
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
      raise ValueError(f"ExampleSet is missing columns {missing}")
    sizes = {name: len(col) for name, col in columns.items()}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"ExampleSet columns differ in length: {sizes}")
    self.columns = dict(columns)
    self.info = dict(info or {})

  def __len__(self) -> int:
    return len(self.columns["row"])

  def __getitem__(self, name: str) -> np.ndarray:
    return self.columns[name]

  def keys(self):
    return self.columns.keys()

  def items(self):
    return self.columns.items()

  def record(self, i: int) -> dict[str, Any]:
    return {name: col[i] for name, col in self.columns.items()}

  @property
  def lengths(self) -> np.ndarray:
    """[N] int32 token counts."""
    return np.fromiter((len(x) for x in self.columns["input_ids"]), np.int32, count=len(self))

  def __repr__(self) -> str:
    return f"ExampleSet(n={len(self)}, columns={list(self.columns)})"


def _domain_of(data: schema.CrossDomainData | schema.Domain, domain_id: int) -> schema.Domain:
  if domain_id not in (0, 1):
    raise ValueError(f"domain_id must be 0 (source) or 1 (target), got {domain_id}")
  return data if isinstance(data, schema.Domain) else data.domains()[domain_id]


def build_examples(data: schema.CrossDomainData | schema.Domain, split: splits_lib.Split, *,
                   domain_id: int, template: str | text_lib.Template, tokenizer: Any,
                   max_len: int, history_len: int, which: splits_lib.Which,
                   cache_dir: str | os.PathLike | None = None, test_sees_valid: bool = False,
                   noun: str | tuple[str, str] | None = None,
                   cache: tokenize_lib.TokenCache | None = None,
                   id_history_len: int = 0) -> ExampleSet:
  """Tokenised examples of one split part of one domain.

  Args:
    data: a CrossDomainData (the domain is picked by `domain_id`) or a single Domain.
    split: the domain's split; `which` picks train, valid or test rows.
    domain_id: 0 source, 1 target (stored in the `domain` column).
    template: a registered template name or a `text.Template`.
    tokenizer: a fast tokenizer (`tokenize.load_tokenizer()`).
    max_len: the most tokens of an example, [CLS] and [SEP]s included.
    history_len: K, the most history entries.
    cache_dir: where token ids persist across runs (None: in memory only).
    test_sees_valid: test histories may include valid rows (see `splits.visible_rows`).
    noun: override the domain's noun ("book" or ("book", "books")).
    cache: reuse a `TokenCache` across calls (it must wrap the same tokenizer).
    id_history_len: > 0 adds the ID history of models that read items by ID instead of text
      (`models/hybrid.py`): 'history_item' [R, K] int32, the last K visible items oldest first,
      left-padded with -1, and 'history_rating' [R, K] float32, their rating on the [0, 1] scale
      where the example may show it (the same rule as the text's ratings), else -1. K is
      independent of `history_len`: no token budget limits it.
  """
  domain = _domain_of(data, domain_id)
  inter = domain.interactions
  texts = text_lib.domain_text(template, domain, noun)
  if cache is None:
    cache = tokenize_lib.TokenCache(tokenizer, cache_dir)
  elif cache.identity != tokenize_lib.tokenizer_identity(tokenizer):
    raise ValueError("build_examples: `cache` wraps a different tokenizer than `tokenizer`")
  hits, misses = cache.hits, cache.misses
  cls_id, sep_id = tokenize_lib.special_ids(tokenizer)

  rows = split.rows(which)
  visible = splits_lib.visible_rows(split, which, test_sees_valid)
  history = splits_lib.history_rows(domain, visible, rows, history_len)  # [R, K], -1 padded

  # Which ratings a history may show: labelled training rows, and valid rows where visible.
  shown = np.zeros(len(inter), bool)
  if not domain.scale.implicit:
    shown[split.labelled_rows] = True
    shown[split.context] = True  # a source's context rows: history with ratings, never a label
    if which == "test" and test_sees_valid:
      shown[split.valid] = True

  # History entries: one text per distinct (item, shown rating or none).
  cells = history[history >= 0]
  values = np.unique(inter.rating)
  stride = len(values) + 1  # key = item * stride + (0: no rating shown, v + 1: values[v])
  code = np.where(shown[cells], np.searchsorted(values, inter.rating[cells]) + 1, 0)
  unique_keys, entry_index = np.unique(inter.item[cells].astype(np.int64) * stride + code,
                                       return_inverse=True)
  entry_texts = [texts.entry(int(k // stride), None if k % stride == 0 else values[k % stride - 1])
                 for k in unique_keys]
  entries_of = np.full(history.shape, -1, np.int64)
  entries_of[history >= 0] = entry_index.reshape(-1)

  cand_items, cand_index = np.unique(inter.item[rows], return_inverse=True)
  cand_index = cand_index.reshape(-1)
  special = [np.array([cls_id], np.int32), np.array([sep_id], np.int32)]
  pieces = special + cache.encode([texts.prefix(), texts.empty()] + entry_texts
                                  + [texts.candidate(int(i)) for i in cand_items])
  CLS, SEP, PREFIX, EMPTY, FIRST_ENTRY = 0, 1, 2, 3, 4  # pylint: disable=invalid-name
  first_cand = FIRST_ENTRY + len(entry_texts)
  piece_len = np.array([len(x) for x in pieces], np.int64)

  budget = max_len - 3 - piece_len[PREFIX]  # [CLS], [SEP], [SEP]
  if budget < 1:
    raise ValueError(f"max_len={max_len} leaves no room for a candidate after the template prefix "
                     f"({piece_len[PREFIX]} tokens) and 3 special tokens")
  # Fit max_len: the candidate is cut only beyond the whole budget; history entries are kept
  # newest first while they fit (a suffix of the oldest-first row), whole or not at all.
  cand = first_cand + cand_index
  cand_len = np.minimum(piece_len[cand], budget)
  room = budget - cand_len
  entry = np.where(entries_of >= 0, FIRST_ENTRY + entries_of, -1)
  entry_len = np.where(entry >= 0, piece_len[np.maximum(entry, 0)], 0)
  from_newest = np.cumsum(entry_len[:, ::-1], axis=1)[:, ::-1]
  keep = (entry >= 0) & (from_newest <= room[:, None])
  no_history = ~(entry >= 0).any(axis=1)
  use_empty = no_history & (piece_len[EMPTY] <= room)

  # Every example as a row of segments (piece id, length), absent ones with length 0; then one
  # gather from the concatenated pieces builds all token ids at once.
  n = len(rows)
  seg_piece = np.concatenate([
      np.full((n, 1), CLS), np.full((n, 1), PREFIX), np.where(use_empty, EMPTY, 0)[:, None],
      np.where(keep, entry, 0), np.full((n, 1), SEP), cand[:, None], np.full((n, 1), SEP)], axis=1)
  seg_len = np.concatenate([
      np.ones((n, 1), np.int64), np.full((n, 1), piece_len[PREFIX]),
      np.where(use_empty, piece_len[EMPTY], 0)[:, None], np.where(keep, entry_len, 0),
      np.ones((n, 1), np.int64), cand_len[:, None], np.ones((n, 1), np.int64)], axis=1)
  input_ids = _assemble(pieces, seg_piece, seg_len)
  n_cut = int((piece_len[cand] > budget).sum())
  n_dropped = int(((entry >= 0) & ~keep).sum())
  n_short = int(((entry >= 0) & ~keep).any(axis=1).sum())

  labelled = (split.train_labelled.astype(np.int32) if which == "train"
              else np.ones(len(rows), np.int32))
  rating = np.where(labelled == 1, inter.rating[rows], 0.0).astype(np.float32)
  label = np.where(labelled == 1, domain.scale.normalise(inter.rating[rows]), 0.0)
  label = label.astype(np.float32)
  columns = {
      "input_ids": input_ids,
      "label": label,
      "label_mask": labelled,
      "rating": rating,
      "domain": np.full(len(rows), domain_id, np.int32),
      "user": inter.user[rows].astype(np.int32),
      "item": inter.item[rows].astype(np.int32),
      "row": rows.astype(np.int64),
  }
  if id_history_len > 0:
    columns.update(_id_history(domain, visible, rows, shown, int(id_history_len)))
  info = dict(domain=domain.name, which=which, template=texts.template.name, max_len=max_len,
              history_len=history_len, test_sees_valid=test_sees_valid,
              tokenizer=cache.identity, candidates_truncated=n_cut,
              examples_with_history_dropped=n_short, history_entries_dropped=n_dropped,
              unique_pieces=len(pieces) - 2, cache_hits=cache.hits - hits,
              cache_misses=cache.misses - misses)
  return ExampleSet(columns, info)


def _id_history(domain: schema.Domain, visible: np.ndarray, rows: np.ndarray, shown: np.ndarray,
                k: int) -> dict[str, np.ndarray]:
  """'history_item' / 'history_rating' columns (see `build_examples`' id_history_len)."""
  inter = domain.interactions
  hist = splits_lib.history_rows(domain, visible, rows, k)  # [R, K] rows, -1 padded
  present = hist >= 0
  safe = np.maximum(hist, 0)
  items = np.where(present, inter.item[safe], -1).astype(np.int32)
  seen = present & shown[safe]
  ratings = np.where(seen, domain.scale.normalise(inter.rating[safe]), -1.0).astype(np.float32)
  return {"history_item": items, "history_rating": ratings}


def _assemble(pieces: list[np.ndarray], seg_piece: np.ndarray, seg_len: np.ndarray,
              chunk: int = 1 << 15) -> np.ndarray:
  """[n] object array of int32 ids: row i joins pieces[seg_piece[i, j]][:seg_len[i, j]] over j.

  One vectorised gather from the concatenated pieces per chunk of rows (chunks bound the index
  memory); each row is a view into its chunk's buffer.
  """
  pool = np.concatenate(pieces).astype(np.int32)
  piece_start = (np.cumsum([len(x) for x in pieces]) - [len(x) for x in pieces]).astype(np.int32)
  out = []
  for lo in range(0, len(seg_piece), chunk):
    start = piece_start[seg_piece[lo:lo + chunk]].reshape(-1)
    length = seg_len[lo:lo + chunk].reshape(-1).astype(np.int32)
    out_start = np.cumsum(length, dtype=np.int64) - length
    gather = np.repeat((start - out_start).astype(np.int64), length)
    gather += np.arange(len(gather))
    tokens = pool[gather]
    bounds = np.concatenate([[0], np.cumsum(seg_len[lo:lo + chunk].sum(axis=1))]).tolist()
    out.extend(tokens[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1))
  # fromiter, not `arr[:] = list`: equal-length rows must not broadcast into a 2-D array.
  return np.fromiter(out, dtype=object, count=len(out))


def example_text(examples: ExampleSet, i: int, tokenizer: Any) -> str:
  """Example i decoded back to text, special tokens included (for debugging)."""
  return tokenizer.decode(examples["input_ids"][i].tolist(), skip_special_tokens=False)
