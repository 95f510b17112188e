"""User profiles from earlier rated interactions: the user effect a bias model reads, as facts.

For each example row r of user u, the profile summarises P(r): u's rows that the example may see
(`splits.visible_rows`) *with their rating shown* (labelled training rows, context rows, valid rows
for test examples with test_sees_valid: the `shown` mask of `examples.py`), strictly before r in
time. Rows tying with r in time, r itself and everything later are never read, exactly as for
histories. The facts (`ProfileStats`):
  count     |P(r)|
  mean      mean rating over P(r)
  domain    mean rating of every user's shown visible rows strictly before r in time (the domain
            mean at that time: a global mean over all rows would read r's own rating)
  liked     up to `max_genres` genres whose mean rating in P(r) is at least `threshold` above the
            user's mean (at least `min_genre_count` ratings), best first; `disliked` likewise below
  top       the `num_items` best rows of P(r) by (rating, recency), best first; `bottom` the
            worst by the reverse order (lowest, oldest first), so the two never share a row.
            Both only when |P(r)| >= 2 * num_items.
Genres are the item fields 'genres' / 'genre' (", "-joined) and 'category' (" > "-joined path), the
`max_vocab` most frequent labels. Everything is prefix sums over the user's rows sorted in
canonical order, so ML-1M's 1M rows take seconds (experiments/learning_curve.py measures it).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.data import text as text_lib

GENRE_FIELDS = (("genres", ", "), ("genre", ", "), ("category", " > "))


@dataclasses.dataclass(frozen=True)
class ProfileStats:
  """Per example row: see the module docstring. -1 marks an absent genre or row; NaN a mean of
  nothing. `genres` names the genre codes."""

  count: np.ndarray     # [R] int64
  mean: np.ndarray      # [R] float64
  domain: np.ndarray    # [R] float64
  liked: np.ndarray     # [R, G] int64 genre codes
  disliked: np.ndarray  # [R, G]
  top: np.ndarray       # [R, n] int64 interaction rows
  bottom: np.ndarray    # [R, n]
  genres: tuple[str, ...]


def genre_matrix(items: schema.Items, max_vocab: int = 32) -> tuple[tuple[str, ...], np.ndarray]:
  """(labels, [I, G] bool membership) from the items' genre/category fields (G = 0 without)."""
  labels_of = [set() for _ in range(len(items))]
  for field, sep in GENRE_FIELDS:
    if field in items.fields:
      for i, value in enumerate(items.fields[field]):
        labels_of[i].update(x.strip() for x in str(value).split(sep) if x.strip())
  counts: dict[str, int] = {}
  for labels in labels_of:
    for x in labels:
      counts[x] = counts.get(x, 0) + 1
  vocab = tuple(sorted(counts, key=lambda x: (-counts[x], x))[:max_vocab])
  code = {x: g for g, x in enumerate(vocab)}
  member = np.zeros((len(items), len(vocab)), bool)
  for i, labels in enumerate(labels_of):
    member[i, [code[x] for x in labels if x in code]] = True
  return vocab, member


def unique_inverse(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """`np.unique(keys, axis=0, return_inverse=True)` for int rows [n, c] (or [n]), in O(n) when the
  key space is small: rows become one mixed-radix int64 and a dense table maps it (np.unique's
  sort of 40M history cells took most of an ML-1M build)."""
  keys = np.asarray(keys, np.int64)
  keys = keys.reshape(len(keys), keys.shape[1] if keys.ndim == 2 else 1)
  if not len(keys):
    return keys, np.zeros(0, np.int64)
  low = keys.min(axis=0)
  radix = keys.max(axis=0) - low + 1
  if float(np.prod(radix.astype(np.float64))) >= 2.0**62:
    return np.unique(keys, axis=0, return_inverse=True)
  flat = np.zeros(len(keys), np.int64)
  for j in range(keys.shape[1]):
    flat = flat * radix[j] + (keys[:, j] - low[j])
  space = int(np.prod(radix))
  if space > 4 * len(keys) + (1 << 20):
    uniq, inverse = np.unique(flat, return_inverse=True)
  else:
    present = np.zeros(space, bool)
    present[flat] = True
    uniq = np.flatnonzero(present)
    code = np.cumsum(present) - 1
    inverse = code[flat]
  rows = np.empty((len(uniq), keys.shape[1]), np.int64)
  for j in range(keys.shape[1] - 1, -1, -1):
    rows[:, j] = uniq % radix[j] + low[j]
    uniq = uniq // radix[j]
  return rows, inverse.reshape(-1)


def _pick(score: np.ndarray, ok: np.ndarray, k: int) -> np.ndarray:
  """[R, k] column indices of the k highest scores where ok (ties: lower index), -1 padded."""
  order = np.lexsort((np.broadcast_to(np.arange(score.shape[1]), score.shape),
                      -np.where(ok, score, -np.inf)), axis=1)[:, :k]
  taken = np.take_along_axis(ok, order, axis=1)
  out = np.where(taken, order, -1)
  return np.pad(out, ((0, 0), (0, k - out.shape[1])), constant_values=-1)


def profile_stats(domain: schema.Domain, visible: np.ndarray, shown: np.ndarray, rows: np.ndarray,
                  *, num_items: int = 2, max_genres: int = 2, threshold: float = 0.2,
                  min_genre_count: int = 2, max_vocab: int = 32,
                  chunk: int = 1 << 16) -> ProfileStats:
  """Profiles of `rows` from the `visible` rows whose `shown` ([N] bool) rating they may read.

  `threshold` is in rating units of the domain's scale per (high - low) = 4 (so 0.2 on 1-5, 0.45
  on 1-10).
  """
  inter = domain.interactions
  rows = np.asarray(rows, np.int64)
  visible = np.asarray(visible, np.int64)
  rated = visible[shown[visible]] if len(visible) else visible
  order = splits_lib.canonical_order(domain, rated)
  _, time_rank = np.unique(inter.time, return_inverse=True)
  span = np.int64(time_rank.max() + 1) if len(inter) else np.int64(1)
  key = inter.user[order].astype(np.int64) * span + time_rank[order]
  user = inter.user[rows].astype(np.int64)
  end = np.searchsorted(key, user * span + time_rank[rows], side="left")
  start = np.searchsorted(key, user * span, side="left")
  count = end - start
  rating = inter.rating[order].astype(np.float64)
  csum = np.concatenate([[0.0], np.cumsum(rating)])
  with np.errstate(invalid="ignore", divide="ignore"):
    mean = (csum[end] - csum[start]) / count
  # The domain mean at the example's time: every user's rated rows strictly earlier.
  by_time = np.argsort(time_rank[rated], kind="stable")
  t_sorted = time_rank[rated][by_time]
  t_csum = np.concatenate([[0.0], np.cumsum(inter.rating[rated][by_time].astype(np.float64))])
  before = np.searchsorted(t_sorted, time_rank[rows], side="left")
  with np.errstate(invalid="ignore", divide="ignore"):
    dmean = t_csum[before] / before

  vocab, member = genre_matrix(domain.items, max_vocab)
  liked = np.full((len(rows), max_genres), -1, np.int64)
  disliked = liked.copy()
  if len(vocab) and max_genres > 0:
    m = member[inter.item[order]].astype(np.float64)
    g_sum = np.concatenate([np.zeros((1, len(vocab))), np.cumsum(m * rating[:, None], axis=0)])
    g_cnt = np.concatenate([np.zeros((1, len(vocab))), np.cumsum(m, axis=0)])
    thr = threshold * (domain.scale.high - domain.scale.low) / 4.0
    for lo in range(0, len(rows), chunk):
      e, s = end[lo:lo + chunk], start[lo:lo + chunk]
      cnt = g_cnt[e] - g_cnt[s]
      with np.errstate(invalid="ignore", divide="ignore"):
        score = (g_sum[e] - g_sum[s]) / cnt - mean[lo:lo + chunk, None]
      enough = cnt >= min_genre_count
      liked[lo:lo + chunk] = _pick(score, enough & (score >= thr), max_genres)
      disliked[lo:lo + chunk] = _pick(-score, enough & (score <= -thr), max_genres)

  top = np.full((len(rows), num_items), -1, np.int64)
  bottom = top.copy()
  if num_items > 0 and len(order):
    top_pos, bottom_pos = _extremes(inter.user[order], rating, start, end, num_items, chunk)
    show = (count >= 2 * num_items)[:, None]
    top = np.where(show & (top_pos >= 0), order[np.maximum(top_pos, 0)], -1)
    bottom = np.where(show & (bottom_pos >= 0), order[np.maximum(bottom_pos, 0)], -1)
  return ProfileStats(count=count, mean=mean, domain=dmean, liked=liked, disliked=disliked,
                      top=top, bottom=bottom, genres=vocab)


def _extremes(user: np.ndarray, rating: np.ndarray, start: np.ndarray, end: np.ndarray, n: int,
              chunk: int) -> tuple[np.ndarray, np.ndarray]:
  """Positions (into the canonically ordered rated rows) of each prefix [start, end)'s n best rows
  by (rating desc, position desc) and n worst by (rating asc, position asc); -1 padded.

  Per rating value v: the last n positions of v before `end` (a running maximum per value, then
  each position's previous same-value position) give the best candidates, the user's first n
  positions of v the worst ones; ranking those [R, n * values] candidates is a sort per row.
  """
  values, code = np.unique(rating, return_inverse=True)
  if len(values) > 64:
    raise ValueError(f"profile: {len(values)} distinct ratings; top/bottom items need a discrete "
                     "scale (at most 64 values)")
  v_count = len(values)
  pos = np.arange(len(rating))
  group = user.astype(np.int64) * v_count + code
  by_group = np.lexsort((pos, group))
  same = np.diff(group[by_group]) == 0
  prev_same = np.full(len(rating), -1, np.int64)
  prev_same[by_group[1:][same]] = by_group[:-1][same]
  next_same = np.full(len(rating), -1, np.int64)
  next_same[by_group[:-1][same]] = by_group[1:][same]
  # first[g]: the first position of group g = (user, value) among the rated rows.
  groups, first_idx = np.unique(group[by_group], return_index=True)
  first_of = by_group[first_idx]
  # run[p, v]: the last position <= p holding value v (any user: callers check >= start).
  run = np.maximum.accumulate(np.where(code[:, None] == np.arange(v_count), pos[:, None], -1),
                              axis=0)
  top = np.full((len(start), n), -1, np.int64)
  bottom = top.copy()
  for lo in range(0, len(start), chunk):
    s, e = start[lo:lo + chunk], end[lo:lo + chunk]
    has = e > s
    u = user[np.minimum(np.maximum(e - 1, 0), len(user) - 1)]
    # Best: for each value, the last n positions < e (walking prev_same from the value's last).
    last = np.where(has[:, None], run[np.maximum(e - 1, 0)], -1)
    cands, cur = [], last
    for _ in range(n):
      cur = np.where(cur >= s[:, None], cur, -1)
      cands.append(cur)
      cur = np.where(cur >= 0, prev_same[np.maximum(cur, 0)], -1)
    cand = np.stack(cands, axis=2)  # [r, V, n]
    val = np.broadcast_to(np.arange(v_count)[None, :, None], cand.shape)
    flat_c, flat_v = cand.reshape(len(s), -1), val.reshape(len(s), -1)
    rank = np.lexsort((-flat_c, -flat_v, flat_c < 0), axis=1)[:, :n]
    top[lo:lo + chunk] = np.take_along_axis(flat_c, rank, axis=1)
    # Worst: each value's first n positions of the user, kept when < e.
    gid = u[:, None].astype(np.int64) * v_count + np.arange(v_count)[None, :]
    at = np.searchsorted(groups, gid)
    found = (at < len(groups)) & (groups[np.minimum(at, len(groups) - 1)] == gid) & has[:, None]
    cur = np.where(found, first_of[np.minimum(at, len(groups) - 1)], -1)
    cands = []
    for _ in range(n):
      cur = np.where((cur >= 0) & (cur < e[:, None]), cur, -1)
      cands.append(cur)
      cur = np.where(cur >= 0, next_same[np.maximum(cur, 0)], -1)
    flat_c = np.stack(cands, axis=2).reshape(len(s), -1)
    rank = np.lexsort((flat_c, flat_v, flat_c < 0), axis=1)[:, :n]
    bottom[lo:lo + chunk] = np.take_along_axis(flat_c, rank, axis=1)
  return top, bottom


def profile_pieces(stats: ProfileStats, template: text_lib.ProfileTemplate,
                   domain_text: text_lib.DomainText, items: schema.Items,
                   item_of_row: np.ndarray) -> tuple[list[str], np.ndarray]:
  """(texts, [R, P] slots): each example's profile as indices into `texts` (-1 = no piece), in
  reading order head, mean, likes, dislikes, top intro, top items, bottom intro, bottom items.

  `template` is a `text.ProfileTemplate`, `domain_text` the `text.DomainText` of the domain (its
  nouns and scale), `items` its catalogue (named by `template.item_fields`), `item_of_row` the
  item code of each interaction row.
  """
  names_of_items = text_lib.item_texts(items, template.item_fields)
  r = len(stats.count)
  nouns = dict(noun=domain_text.noun, nouns=domain_text.nouns)
  high = f"{float(domain_text.scale.high):g}"
  texts: list[str] = []
  columns: list[np.ndarray] = []

  def add(keys: np.ndarray, render, present: np.ndarray) -> None:
    """One slot: a piece per distinct key (rows of `keys`) where `present`."""
    keys = keys.reshape(r, -1)
    slot = np.full(r, -1, np.int64)
    if present.any():
      uniq, inverse = unique_inverse(keys[present])
      slot[present] = len(texts) + inverse.reshape(-1)
      texts.extend(render(k) for k in uniq)
    columns.append(slot)

  has = stats.count > 0
  add(np.zeros(r, np.int64), lambda k: template.empty.format(**nouns), ~has)
  add(stats.count, lambda k: template.head.format(count=int(k[0]), **nouns), has)
  tenths = np.stack([np.round(np.nan_to_num(stats.mean) * 10),
                     np.round(np.nan_to_num(stats.mean - stats.domain) * 10)], 1).astype(np.int64)
  add(tenths, lambda k: template.mean.format(mean=f"{k[0] / 10:.1f}", offset=f"{k[1] / 10:+.1f}",
                                             high=high, **nouns), has)
  names = lambda k: ", ".join(stats.genres[g] for g in k if g >= 0)
  add(stats.liked, lambda k: template.likes.format(genres=names(k), **nouns),
      has & (stats.liked[:, 0] >= 0))
  add(stats.disliked, lambda k: template.dislikes.format(genres=names(k), **nouns),
      has & (stats.disliked[:, 0] >= 0))
  for intro, picked in ((template.top, stats.top), (template.bottom, stats.bottom)):
    if not picked.shape[1]:
      continue
    add(np.zeros(r, np.int64), lambda k, intro=intro: intro.format(**nouns), picked[:, 0] >= 0)
    for j in range(picked.shape[1]):
      item = np.where(picked[:, j] >= 0, item_of_row[np.maximum(picked[:, j], 0)], -1)
      add(item, lambda k: template.item.format(item=names_of_items[int(k[0])], **nouns),
          item >= 0)
  slots = np.stack(columns, 1) if columns else np.zeros((r, 0), np.int64)
  # Head first: the empty text and the head are never both present, so keep one column.
  slots = np.concatenate([np.maximum(slots[:, :1], slots[:, 1:2]), slots[:, 2:]], axis=1)
  return texts, slots
