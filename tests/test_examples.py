"""Tests for data/examples.py: columns, token assembly, truncation, hidden labels, caching."""

import dataclasses

import numpy as np
import pytest

from crossrec_jax.data import examples, schema, splits, text, tokenize


@pytest.fixture(scope="module")
def tok():
  return tokenize.load_tokenizer()


def _domain(name="ml-test", scale=schema.RatingScale(1, 5), n_users=4, per_user=6, seed=0):
  rng = np.random.default_rng(seed)
  titles = ["Toy Story", "Heat", "Fargo", "Casino", "Babe", "Se7en", "Clueless", "Ran"]
  items = schema.Items(ids=np.array([f"m{i}" for i in range(len(titles))], object),
                       fields={"title": np.array(titles, object),
                               "year": np.array([str(1990 + i) for i in range(len(titles))], object)})
  users, item_ids, times, ratings = [], [], [], []
  for u in range(n_users):
    for j, i in enumerate(rng.permutation(len(titles))[:per_user]):
      users.append(f"u{u}")
      item_ids.append(f"m{i}")
      times.append(10 * j)
      ratings.append(float(rng.integers(1, 6)))
  return schema.build_domain(name, user_ids=users, item_ids=item_ids,
                             ratings=None if scale.implicit else ratings, times=times, items=items,
                             scale=scale)


def _build(d, s, tok, which="train", **kw):
  args = dict(domain_id=1, template="default", tokenizer=tok, max_len=128, history_len=3, which=which)
  args.update(kw)
  return examples.build_examples(d, s, **args)


def _expected_ids(d, s, tok, which, rows, k, template="default", test_sees_valid=False):
  """Reference: render the whole text and tokenise it as a pair with special tokens."""
  dt = text.domain_text(template, d)
  inter = d.interactions
  hist = splits.history_rows(d, splits.visible_rows(s, which, test_sees_valid), rows, k)
  shown = set(s.labelled_rows.tolist())
  if which == "test" and test_sees_valid:
    shown |= set(s.valid.tolist())
  out = []
  for e, r in enumerate(rows):
    h = [(int(inter.item[x]), float(inter.rating[x]) if x in shown else None)
         for x in hist[e] if x >= 0]
    a, b = dt.example(h, int(inter.item[r]))
    out.append(tok(a, b, add_special_tokens=True, padding=False, truncation=False)["input_ids"])
  return out


def test_columns_dtypes_and_records(tok):
  d = _domain()
  s = splits.temporal_loo(d)
  es = _build(d, s, tok)
  assert list(es.keys()) == list(examples.COLUMNS) == [
      "input_ids", "segments", "label", "label_mask", "rating", "domain", "user", "item", "row"]
  assert len(es) == len(s.train)
  dtypes = {k: es[k].dtype for k in examples.COLUMNS if k not in ("input_ids", "segments")}
  assert dtypes == {"label": np.float32, "label_mask": np.int32, "rating": np.float32,
                    "domain": np.int32, "user": np.int32, "item": np.int32, "row": np.int64}
  assert es["input_ids"].dtype == object and all(x.dtype == np.int32 for x in es["input_ids"])
  assert all(x.dtype == np.int8 and x.shape == y.shape
             for x, y in zip(es["segments"], es["input_ids"]))
  inter = d.interactions
  assert (es["row"] == s.train).all() and (es["item"] == inter.item[s.train]).all()
  np.testing.assert_allclose(es["label"], (inter.rating[s.train] - 1) / 4)
  assert (es["domain"] == 1).all() and (es["label_mask"] == 1).all()
  rec = es.record(2)
  assert set(rec) == set(examples.COLUMNS) and rec["row"] == s.train[2]
  text0 = examples.example_text(es, 0, tok)
  assert text0.startswith("[CLS] the user rated these movies :") and text0.endswith("[SEP]")


@pytest.mark.parametrize("template,which,sees_valid", [
    ("default", "train", False), ("default", "test", False), ("tallrec", "test", True),
    ("default", "valid", False)])
def test_assembly_equals_tokenising_the_whole_text(tok, template, which, sees_valid):
  d = _domain()
  s = splits.with_label_fraction(splits.temporal_ratio(d, 0.2, 0.2), 0.5, seed=1)
  es = _build(d, s, tok, which=which, template=template, test_sees_valid=sees_valid)
  expect = _expected_ids(d, s, tok, which, s.rows(which), 3, template, sees_valid)
  assert [x.tolist() for x in es["input_ids"]] == expect
  assert es.info["history_entries_dropped"] == 0 and es.info["candidates_truncated"] == 0


def test_truncation_drops_oldest_entries_whole(tok):
  d = _domain(per_user=8)
  s = splits.temporal_loo(d)
  full = _build(d, s, tok, history_len=5)
  max_len = int(np.median(full.lengths)) - 4
  short = _build(d, s, tok, history_len=5, max_len=max_len)
  assert short.lengths.max() <= max_len and short.info["history_entries_dropped"] > 0
  sep = tok.sep_token_id
  for a, b in zip(full["input_ids"], short["input_ids"]):
    # The candidate segment is intact; the history kept is a suffix (newest) of the full one.
    cut_a, cut_b = a.tolist().index(sep), b.tolist().index(sep)
    assert a[cut_a:].tolist() == b[cut_b:].tolist()
    prefix_len = len(tok("The user rated these movies:", add_special_tokens=False)["input_ids"]) + 1
    kept = b[prefix_len:cut_b].tolist()
    assert a[prefix_len:cut_a].tolist()[len(a[prefix_len:cut_a]) - len(kept):] == kept
  assert short.info["examples_with_history_dropped"] == int((full.lengths > max_len).sum())
  tiny = _build(d, s, tok, history_len=5, max_len=14)  # prefix 6 + 3 specials: 5 left for the item
  assert (tiny.lengths <= 14).all() and tiny.info["candidates_truncated"] > 0
  with pytest.raises(ValueError, match="max_len=9 leaves no room"):
    _build(d, s, tok, max_len=9)


def test_hidden_labels_stay_hidden(tok):
  d = _domain(n_users=6, per_user=8)
  s = splits.with_label_fraction(splits.temporal_loo(d), 0.3, seed=0)
  es = _build(d, s, tok, history_len=7)
  hidden = es["label_mask"] == 0
  assert hidden.sum() == (~s.train_labelled).sum() > 0
  assert (es["label"][hidden] == 0).all() and (es["rating"][hidden] == 0).all()
  assert (es["rating"][~hidden] == d.interactions.rating[s.train[s.train_labelled]]).all()
  # A hidden row appears in later histories of its user without its rating.
  inter = d.interactions
  decoded = [examples.example_text(es, i, tok) for i in range(len(es))]
  checked = 0
  for r in s.train[~s.train_labelled]:
    fields = d.items.row(int(inter.item[r]))
    item = f"{fields['title']} ( {fields['year']} )".lower()
    later = (inter.user[s.train] == inter.user[r]) & (inter.time[s.train] > inter.time[r])
    for i in np.flatnonzero(later):
      assert f"{item}. " in decoded[i] and f"{item} :" not in decoded[i]
      checked += 1
  assert checked > 0
  eval_set = _build(d, s, tok, which="test")
  assert (eval_set["label_mask"] == 1).all()


def test_implicit_domain_and_source_selection(tok):
  d = _domain(name="amazon_food", scale=schema.IMPLICIT)
  s = splits.temporal_loo(d)
  pair = schema.CrossDomainData(source=d, target=_domain())
  es = examples.build_examples(pair, s, domain_id=0, template="default", tokenizer=tok, max_len=128,
                               history_len=2, which="valid")
  assert (es["label"] == 1).all() and (es["rating"] == 1).all() and (es["domain"] == 0).all()
  assert "chose these products" in examples.example_text(es, 0, tok)
  assert "out of" not in " ".join(examples.example_text(es, i, tok) for i in range(len(es)))


def test_cache_dir_reuse_and_mismatch(tok, tmp_path):
  d = _domain()
  s = splits.temporal_loo(d)
  first = _build(d, s, tok, cache_dir=tmp_path)
  second = _build(d, s, tok, cache_dir=tmp_path)
  assert first.info["cache_misses"] > 0 and first.info["cache_hits"] == 0
  assert second.info["cache_misses"] == 0 and second.info["cache_hits"] == first.info["cache_misses"]
  assert [x.tolist() for x in first["input_ids"]] == [x.tolist() for x in second["input_ids"]]
  import tokenizers  # pylint: disable=g-import-not-at-top
  other = tokenizers.Tokenizer.from_str(tok.backend_tokenizer.to_str())
  other.add_tokens(["qqq"])
  with pytest.raises(ValueError, match="different tokenizer"):
    _build(d, s, tok, cache=tokenize.TokenCache(other))


def test_empty_history_text_for_first_interactions(tok):
  d = _domain()
  s = splits.temporal_loo(d)
  es = _build(d, s, tok)
  first = [i for i, r in enumerate(es["row"]) if d.interactions.time[r] == 0]
  assert first and all("none yet." in examples.example_text(es, i, tok) for i in first)
  custom = dataclasses.replace(text.TEMPLATES["default"], name="x", empty="nothing so far.")
  es2 = _build(d, s, tok, template=custom)
  assert "nothing so far." in examples.example_text(es2, first[0], tok)


def test_equal_length_examples_stay_one_dimensional(tok):
  # One interaction per user, same-length titles: every example has the same number of tokens.
  items = schema.Items(ids=np.array(["a", "b"], object),
                       fields={"title": np.array(["Heat", "Babe"], object)})
  d = schema.build_domain("ml-eq", user_ids=["u1", "u2", "u3"], item_ids=["a", "b", "a"],
                          ratings=[1.0, 2.0, 3.0], times=[0, 0, 0], items=items,
                          scale=schema.RatingScale(1, 5))
  es = _build(d, splits.temporal_loo(d), tok)
  assert len(set(es.lengths.tolist())) == 1 and es["input_ids"].shape == (3,)
  assert es["input_ids"].dtype == object and es["input_ids"][0].ndim == 1
  empty = _build(d, splits.temporal_loo(d), tok, which="valid")  # nobody has a valid row
  assert len(empty) == 0 and all(len(col) == 0 for col in empty.columns.values())
  with pytest.raises(ValueError, match="domain_id must be 0"):
    _build(d, splits.temporal_loo(d), tok, domain_id=2)


def test_assemble_chunks_agree():
  pieces = [np.array([101], np.int32), np.array([5, 6, 7], np.int32), np.array([9], np.int32)]
  seg_piece = np.array([[0, 1, 2], [0, 2, 1], [1, 1, 0], [2, 0, 0], [0, 1, 1]])
  seg_len = np.array([[1, 3, 1], [1, 1, 2], [3, 1, 0], [1, 0, 1], [1, 3, 3]])
  expect = [[101, 5, 6, 7, 9], [101, 9, 5, 6], [5, 6, 7, 5], [9, 101], [101, 5, 6, 7, 5, 6, 7]]
  for chunk in (1, 2, 5, 100):
    got = examples._assemble(  # pylint: disable=protected-access
        pieces, seg_piece, seg_len, np.array([0, 3, 2], np.int8), chunk=chunk)
    assert [x.tolist() for x in got[0]] == expect
    assert [x.tolist() for x in got[1]] == [[0, 3, 3, 3, 2], [0, 3, 2, 2], [0, 0, 0, 3], [0, 2],
                                            [0, 3, 3, 3, 2, 2, 2]]


@pytest.mark.parametrize("which", ["train", "valid", "test"])
def test_id_history_matches_history_rows_and_hides_labels(tok, which):
  d = _domain(n_users=5, per_user=7)
  s = splits.make_split(d, "ratio", seed=0, label_fraction=0.5)
  es = _build(d, s, tok, which=which, id_history_len=4)
  rows = s.rows(which)
  hist = splits.history_rows(d, splits.visible_rows(s, which, False), rows, 4)
  inter = d.interactions
  want_items = np.where(hist >= 0, inter.item[np.maximum(hist, 0)], -1)
  np.testing.assert_array_equal(es["history_item"], want_items)
  assert es["history_item"].dtype == np.int32 and es["history_item"].shape == (len(rows), 4)
  shown = np.isin(hist, s.labelled_rows) & (hist >= 0)
  want_r = np.where(shown, d.scale.normalise(inter.rating[np.maximum(hist, 0)]), -1.0)
  np.testing.assert_allclose(es["history_rating"], want_r, rtol=0, atol=1e-6)
  # Some history entries hide their (unlabelled) rating, and no hidden one leaks.
  assert (hist >= 0).sum() > shown.sum() > 0
  # The text's own history is unchanged by the ID history.
  plain = _build(d, s, tok, which=which)
  assert all(np.array_equal(a, b) for a, b in zip(plain["input_ids"], es["input_ids"]))
  assert "history_item" not in plain.columns


def test_id_history_batches_through_the_pipeline(tok):
  from crossrec_jax.data import pipeline
  d = _domain()
  s = splits.temporal_loo(d)
  es = _build(d, s, tok, id_history_len=3)
  batch = next(iter(pipeline.eval_batches(es, pipeline.BatchConfig(batch_size=4, buckets=(128,)))))
  assert batch["history_item"].shape == (4, 3) and batch["history_rating"].shape == (4, 3)
  idx = batch["index"][0]
  np.testing.assert_array_equal(batch["history_item"][0], es["history_item"][idx])


def _entry_tokens(dt, tok, item, rating):
  return tok(dt.entry(item, rating), add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("max_len", [128, 40])
def test_segments_mark_template_entries_newest_first_and_candidate(tok, max_len):
  d = _domain(per_user=8)
  s = splits.with_label_fraction(splits.temporal_loo(d), 0.5, seed=3)
  es = _build(d, s, tok, history_len=5, max_len=max_len)
  dt = text.domain_text("default", d)
  inter = d.interactions
  hist = splits.history_rows(d, splits.visible_rows(s, "train"), s.train, 5)
  shown = set(s.labelled_rows.tolist())
  prefix = len(tok(dt.prefix(), add_special_tokens=False)["input_ids"])
  for e in range(len(es)):
    ids, seg = es["input_ids"][e], es["segments"][e]
    assert seg[0] == 0 and (seg[1:1 + prefix] == 0).all()  # [CLS] and the prefix
    cand = tok(dt.candidate(int(inter.item[s.train[e]])), add_special_tokens=False)["input_ids"]
    assert ids[seg == 2].tolist() == cand and seg[-1] == 0 and seg[-len(cand) - 2] == 0
    # History entry k (0 = newest) holds exactly that entry's tokens, newest k kept.
    kept = sorted(set(seg.tolist()) - {0, 1, 2})
    assert kept == list(range(3, 3 + len(kept)))
    rows = [x for x in hist[e] if x >= 0][::-1]  # newest first
    for k in range(len(kept)):
      r = rows[k]
      want = _entry_tokens(dt, tok, int(inter.item[r]), float(inter.rating[r]) if r in shown
                           else None)
      assert ids[seg == 3 + k].tolist() == want
    if not rows:  # the empty-history text is template text
      assert (seg[:-len(cand) - 2] == 0).all()
  if max_len == 40:
    assert es.info["history_entries_dropped"] > 0


def test_token_types_equal_the_tokenizer_pair_encoding(tok):
  from crossrec_jax.data import pipeline
  d = _domain()
  s = splits.temporal_ratio(d, 0.2, 0.2)
  es = _build(d, s, tok, which="test")
  dt = text.domain_text("default", d)
  inter = d.interactions
  hist = splits.history_rows(d, splits.visible_rows(s, "test"), s.test, 3)
  batch = next(iter(pipeline.eval_batches(es, pipeline.BatchConfig(batch_size=4, buckets=(128,)))))
  assert batch["token_type_ids"].any()
  for k, idx in enumerate(batch["index"]):
    h = [(int(inter.item[x]), float(inter.rating[x])) for x in hist[idx] if x >= 0]
    a, b = dt.example(h, int(inter.item[s.test[idx]]))
    want = tok(a, b, add_special_tokens=True)["token_type_ids"]
    n = len(want)
    assert batch["token_type_ids"][k, :n].tolist() == want
    assert not batch["token_type_ids"][k, n:].any()  # padding: type 0
  # Records without segments (prepared before they existed) keep all-zero types.
  old = {k: v for k, v in es.columns.items() if k != "segments"}
  batch = next(iter(pipeline.eval_batches(old, pipeline.BatchConfig(batch_size=4, buckets=(128,)))))
  assert not batch["token_type_ids"].any()



def _shown_entries(es):
  """History entries shown per example, read from the segments."""
  return np.array([len(set(x[x >= 3].tolist())) for x in es["segments"]])


def test_token_budget_shows_as_many_newest_entries_as_fit(tok):
  d = _domain(n_users=5, per_user=8)
  s = splits.with_label_fraction(splits.temporal_loo(d), 0.6, seed=2)
  count = _build(d, s, tok, history_len=3, max_len=72)
  assert [x.tolist() for x in count["input_ids"]] == [
      x.tolist() for x in _build(d, s, tok, history_len=3, max_len=72,
                                 history_budget="count")["input_ids"]]  # the default
  assert _shown_entries(count).max() == 3
  by_tokens = _build(d, s, tok, history_len=3, max_len=72, history_budget="tokens", history_cap=50)
  shown = _shown_entries(by_tokens)
  assert shown.max() > 3 and (by_tokens.lengths <= 72).all()
  dt = text.domain_text("default", d)
  inter = d.interactions
  hist = splits.history_rows(d, splits.visible_rows(s, "train"), s.train, 50)
  labelled = set(s.labelled_rows.tolist())
  for e in range(len(by_tokens)):
    older = [x for x in hist[e] if x >= 0][::-1][shown[e]:]  # entries left out, newest first
    if older:  # the next older entry would not have fit
      r = older[0]
      extra = len(_entry_tokens(dt, tok, int(inter.item[r]),
                                float(inter.rating[r]) if r in labelled else None))
      assert by_tokens.lengths[e] + extra > 72
  capped = _build(d, s, tok, max_len=128, history_budget="tokens", history_cap=2)
  assert _shown_entries(capped).max() == 2
  info = by_tokens.info["history_shown"]
  assert info["histogram"] == np.bincount(shown).tolist() and info["max"] == shown.max()
  assert info["min"] == shown.min() and info["median"] == float(np.median(shown))
  assert by_tokens.info["history_budget"] == "tokens" and count.info["history_cap"] is None
  with pytest.raises(ValueError, match="data.history_budget must be"):
    _build(d, s, tok, history_budget="items")


def test_profile_segment_is_leak_free_text_of_the_profile_facts(tok):
  from crossrec_jax.data import profile
  d = _domain(n_users=5, per_user=8)
  s = splits.with_label_fraction(splits.temporal_loo(d), 0.7, seed=4)
  es = _build(d, s, tok, which="valid", profile="default", max_len=128)
  inter = d.interactions
  shown = np.zeros(len(inter), bool)
  shown[s.labelled_rows] = True
  stats = profile.profile_stats(d, splits.visible_rows(s, "valid"), shown, s.valid)
  for e in range(len(es)):
    seg, ids = es["segments"][e], es["input_ids"][e]
    got = tok.decode(ids[seg == 1].tolist())
    assert got.startswith(f"user profile : {stats.count[e]} movies rated" if stats.count[e]
                          else "user profile : no rated movies yet")
    assert np.flatnonzero(seg == 1).tolist() == list(range(1, 1 + (seg == 1).sum()))  # after [CLS]
  # Changing the ratings of the example's row and of every later row leaves its input unchanged.
  for e in range(len(es)):
    r = s.valid[e]
    later = inter.time >= inter.time[r]
    changed = dataclasses.replace(d, interactions=dataclasses.replace(
        inter, rating=np.where(later, 6.0 - inter.rating, inter.rating).astype(np.float32)))
    again = _build(changed, s, tok, which="valid", profile="default", max_len=128)
    assert again["input_ids"][e].tolist() == es["input_ids"][e].tolist()
  with pytest.raises(ValueError, match="unknown profile template 'nope' \\(data.profile\\)"):
    _build(d, s, tok, profile="nope")
  implicit = _domain(name="amazon_food", scale=schema.IMPLICIT)
  es = _build(implicit, splits.temporal_loo(implicit), tok, profile="default")
  assert not any((x == 1).any() for x in es["segments"])  # no ratings: no profile
  with pytest.raises(ValueError, match="unknown profile template"):
    _build(implicit, splits.temporal_loo(implicit), tok, profile="nope")
