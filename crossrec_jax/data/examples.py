"""Split domain -> tokenised example records (the columns the TFDS builder and pipeline read).

One example per interaction row of the chosen split part. Its ids are
  [CLS] profile prefix history-entry ... history-entry [SEP] candidate [SEP]
with history entries the user's last K visible rows strictly before it (`splits.history_rows`),
oldest first: K = `history_len` (history_budget 'count', the default), or as many as fit in
`max_len` up to `history_cap` ('tokens'); `info['history_shown']` has their distribution. The
profile (off unless `profile` names a template) summarises the user's earlier rated rows
(`data/profile.py`). To fit `max_len` the candidate comes first (cut, tail first, only when it
alone does not fit; counted in `info`), then the profile's pieces in reading order, then whole
history entries newest first.

Segments. Each example has a per-token int8 'segments' column (the length of its input_ids): 0 for
special tokens and the template text (prefix, the empty-history text), 1 for the user-profile
segment, 2 for the candidate, and 3 + k for history entry k, k = 0 the newest entry shown (entries
from the 125th newest on share 127, the int8 maximum). The pipeline derives BERT's token types
from it (`pipeline.token_types`); explanations attribute scores to its segments.

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

from crossrec_jax.data import profile as profile_lib
from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.data import text as text_lib
from crossrec_jax.data import tokenize as tokenize_lib

COLUMNS = ("input_ids", "segments", "label", "label_mask", "rating", "domain", "user", "item",
           "row")
# Values of the 'segments' column (see the module docstring).
SEG_TEMPLATE, SEG_PROFILE, SEG_CANDIDATE, SEG_HISTORY = 0, 1, 2, 3
SEG_MAX = np.iinfo(np.int8).max
# Columns an ExampleSet must have ('segments' is optional for sets assembled by hand).
REQUIRED = tuple(c for c in COLUMNS if c != "segments")


class ExampleSet:
  """Columns of prepared examples: `es["label"]` is a column, `len(es)` the number of examples,
  `es.record(i)` example i as a dict. `input_ids` is an object array of 1-D int32 arrays and
  `segments` one of 1-D int8 arrays of the same lengths.

  `info` holds counts from building (truncations, cache hits) and the settings used.
  """

  def __init__(self, columns: dict[str, np.ndarray], info: dict[str, Any] | None = None):
    missing = [c for c in REQUIRED if c not in columns]
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


def config_kw(data_cfg: Any) -> dict[str, Any]:
  """The `build_examples` keywords a run's `config.data` sets (the one place that reads them, so
  that training and every evaluation build examples alike)."""
  get = data_cfg.get
  return dict(template=data_cfg.template, max_len=int(data_cfg.max_len),
              history_len=int(data_cfg.history_len), id_history_len=int(get("id_history_len", 0)),
              history_budget=get("history_budget", "count"),
              history_cap=int(get("history_cap", 50)), profile=get("profile", ""))


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
                   id_history_len: int = 0, history_budget: str = "count",
                   history_cap: int = 50,
                   profile: str | text_lib.ProfileTemplate = "") -> ExampleSet:
  """Tokenised examples of one split part of one domain.

  Args:
    data: a CrossDomainData (the domain is picked by `domain_id`) or a single Domain.
    split: the domain's split; `which` picks train, valid or test rows.
    domain_id: 0 source, 1 target (stored in the `domain` column).
    template: a registered template name or a `text.Template`.
    tokenizer: a fast tokenizer (`tokenize.load_tokenizer()`).
    max_len: the most tokens of an example, [CLS] and [SEP]s included.
    history_len: K, the most history entries (history_budget 'count').
    cache_dir: where token ids persist across runs (None: in memory only).
    test_sees_valid: test histories may include valid rows (see `splits.visible_rows`).
    noun: override the domain's noun ("book" or ("book", "books")).
    cache: reuse a `TokenCache` across calls (it must wrap the same tokenizer).
    id_history_len: > 0 adds the ID history of models that read items by ID instead of text
      (`models/hybrid.py`): 'history_item' [R, K] int32, the last K visible items oldest first,
      left-padded with -1, and 'history_rating' [R, K] float32, their rating on the [0, 1] scale
      where the example may show it (the same rule as the text's ratings), else -1. K is
      independent of `history_len`: no token budget limits it.
    history_budget: 'count' (the last `history_len` entries, fewer only where max_len cuts them)
      or 'tokens' (as many of the newest entries as fit in max_len, at most `history_cap`).
    history_cap: the most entries under history_budget 'tokens'.
    profile: '' (none) or a `text.PROFILES` name / `text.ProfileTemplate`: a user-profile segment
      after [CLS] from the user's earlier rated rows (`data/profile.py`), kept whole slot by slot
      while it fits after the candidate; history entries fill the room it leaves. Implicit
      domains have no ratings to summarise: no profile.
  """
  if history_budget not in ("count", "tokens"):
    raise ValueError(f"data.history_budget must be 'count' or 'tokens', got {history_budget!r}")
  k_hist = int(history_len if history_budget == "count" else history_cap)
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
  history = splits_lib.history_rows(domain, visible, rows, k_hist)  # [R, K], -1 padded

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
  unique_keys, entry_index = profile_lib.unique_inverse(
      inter.item[cells].astype(np.int64) * stride + code)
  unique_keys = unique_keys[:, 0]
  entry_texts = [texts.entry(int(k // stride), None if k % stride == 0 else values[k % stride - 1])
                 for k in unique_keys]
  entries_of = np.full(history.shape, -1, np.int64)
  entries_of[history >= 0] = entry_index.reshape(-1)

  cand_items, cand_index = np.unique(inter.item[rows], return_inverse=True)
  cand_index = cand_index.reshape(-1)
  profile_texts, profile_slots = [], np.full((len(rows), 0), -1, np.int64)
  ptemplate = text_lib.get_profile_template(profile) if profile else None
  if ptemplate is not None and not domain.scale.implicit:  # implicit: no ratings to summarise
    stats = profile_lib.profile_stats(domain, visible, shown, rows, num_items=ptemplate.num_items,
                                      max_genres=ptemplate.max_genres)
    profile_texts, profile_slots = profile_lib.profile_pieces(stats, ptemplate, texts,
                                                              domain.items, inter.item)
  special = [np.array([cls_id], np.int32), np.array([sep_id], np.int32)]
  pieces = special + cache.encode([texts.prefix(), texts.empty()] + entry_texts
                                  + [texts.candidate(int(i)) for i in cand_items] + profile_texts)
  CLS, SEP, PREFIX, EMPTY, FIRST_ENTRY = 0, 1, 2, 3, 4  # pylint: disable=invalid-name
  first_cand = FIRST_ENTRY + len(entry_texts)
  first_profile = first_cand + len(cand_items)
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
  # The profile next, whole pieces in reading order while they fit; the history gets the rest.
  prof = np.where(profile_slots >= 0, first_profile + profile_slots, -1)
  prof_len = np.where(prof >= 0, piece_len[np.maximum(prof, 0)], 0)
  prof_keep = (prof >= 0) & (np.cumsum(prof_len, axis=1) <= room[:, None])
  room = room - np.where(prof_keep, prof_len, 0).sum(axis=1)
  entry = np.where(entries_of >= 0, FIRST_ENTRY + entries_of, -1)
  entry_len = np.where(entry >= 0, piece_len[np.maximum(entry, 0)], 0)
  from_newest = np.cumsum(entry_len[:, ::-1], axis=1)[:, ::-1]
  keep = (entry >= 0) & (from_newest <= room[:, None])
  no_history = ~(entry >= 0).any(axis=1)
  use_empty = no_history & (piece_len[EMPTY] <= room)

  # Every example as a row of slots (piece id, length, segment), absent ones with length 0; then
  # one gather from the concatenated pieces builds all token ids (and segments) at once.
  n = len(rows)
  entry_seg = np.minimum(SEG_HISTORY + (k_hist - 1 - np.arange(k_hist)), SEG_MAX)  # newest: 3
  seg_piece = np.concatenate([
      np.full((n, 1), CLS), np.where(prof_keep, prof, 0), np.full((n, 1), PREFIX), np.where(use_empty, EMPTY, 0)[:, None],
      np.where(keep, entry, 0), np.full((n, 1), SEP), cand[:, None], np.full((n, 1), SEP)], axis=1)
  seg_len = np.concatenate([
      np.ones((n, 1), np.int64), np.where(prof_keep, prof_len, 0),
      np.full((n, 1), piece_len[PREFIX]),
      np.where(use_empty, piece_len[EMPTY], 0)[:, None], np.where(keep, entry_len, 0),
      np.ones((n, 1), np.int64), cand_len[:, None], np.ones((n, 1), np.int64)], axis=1)
  seg_value = np.concatenate([[SEG_TEMPLATE], [SEG_PROFILE] * prof.shape[1], [SEG_TEMPLATE] * 2,
                              entry_seg,
                              [SEG_TEMPLATE, SEG_CANDIDATE, SEG_TEMPLATE]]).astype(np.int8)
  input_ids, segments = _assemble(pieces, seg_piece, seg_len, seg_value)
  n_cut = int((piece_len[cand] > budget).sum())
  n_dropped = int(((entry >= 0) & ~keep).sum())
  n_short = int(((entry >= 0) & ~keep).any(axis=1).sum())
  shown_entries = keep.sum(axis=1)

  labelled = (split.train_labelled.astype(np.int32) if which == "train"
              else np.ones(len(rows), np.int32))
  rating = np.where(labelled == 1, inter.rating[rows], 0.0).astype(np.float32)
  label = np.where(labelled == 1, domain.scale.normalise(inter.rating[rows]), 0.0)
  label = label.astype(np.float32)
  columns = {
      "input_ids": input_ids,
      "segments": segments,
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
              history_len=history_len, history_budget=history_budget,
              history_cap=int(history_cap) if history_budget == "tokens" else None,
              profile=getattr(profile, "name", profile), test_sees_valid=test_sees_valid,
              tokenizer=cache.identity, candidates_truncated=n_cut,
              examples_with_history_dropped=n_short, history_entries_dropped=n_dropped,
              unique_pieces=len(pieces) - 2, cache_hits=cache.hits - hits,
              cache_misses=cache.misses - misses,
              history_shown=history_distribution(shown_entries),
              profile_pieces_dropped=int(((prof >= 0) & ~prof_keep).sum()))
  return ExampleSet(columns, info)


def history_distribution(counts: np.ndarray) -> dict[str, Any]:
  """min / median / mean / max and the histogram (index = entries shown) of history entries per
  example, JSON-serialisable (`ExampleSet.info['history_shown']`)."""
  counts = np.asarray(counts, np.int64)
  if not len(counts):
    return dict(min=0, median=0.0, mean=0.0, max=0, histogram=[])
  return dict(min=int(counts.min()), median=float(np.median(counts)),
              mean=round(float(counts.mean()), 3), max=int(counts.max()),
              histogram=np.bincount(counts).tolist())


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
              seg_value: np.ndarray, chunk: int = 1 << 15) -> tuple[np.ndarray, np.ndarray]:
  """([n] object array of int32 ids, [n] object array of int8 segments): row i joins
  pieces[seg_piece[i, j]][:seg_len[i, j]] over slots j, each token of slot j marked seg_value[j].

  One vectorised gather from the concatenated pieces per chunk of rows (chunks bound the index
  memory); each row is a view into its chunk's buffer.
  """
  pool = np.concatenate(pieces).astype(np.int32)
  piece_start = (np.cumsum([len(x) for x in pieces]) - [len(x) for x in pieces]).astype(np.int32)
  ids, segs = [], []
  for lo in range(0, len(seg_piece), chunk):
    start = piece_start[seg_piece[lo:lo + chunk]].reshape(-1)
    length = seg_len[lo:lo + chunk].reshape(-1).astype(np.int32)
    out_start = np.cumsum(length, dtype=np.int64) - length
    gather = np.repeat((start - out_start).astype(np.int64), length)
    gather += np.arange(len(gather))
    tokens = pool[gather]
    values = np.repeat(np.broadcast_to(seg_value, seg_len[lo:lo + chunk].shape).reshape(-1),
                       length)
    bounds = np.concatenate([[0], np.cumsum(seg_len[lo:lo + chunk].sum(axis=1))]).tolist()
    ids.extend(tokens[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1))
    segs.extend(values[bounds[i]:bounds[i + 1]] for i in range(len(bounds) - 1))
  # fromiter, not `arr[:] = list`: equal-length rows must not broadcast into a 2-D array.
  return (np.fromiter(ids, dtype=object, count=len(ids)),
          np.fromiter(segs, dtype=object, count=len(segs)))


def example_text(examples: ExampleSet, i: int, tokenizer: Any) -> str:
  """Example i decoded back to text, special tokens included (for debugging)."""
  return tokenizer.decode(examples["input_ids"][i].tolist(), skip_special_tokens=False)
