"""explain/segments.py: per-token units of real examples, and the edits that remove entries."""

import numpy as np
import pytest

from crossrec_jax.data import splits, text, tokenize
from crossrec_jax.explain import edits, segments as seg_lib
from test_examples import _build, _domain


@pytest.fixture(scope="module")
def tok():
  return tokenize.load_tokenizer()


@pytest.mark.parametrize("max_len", [128, 40])  # 40: older entries are dropped to fit
def test_segments_mark_each_history_entry_and_the_candidate(tok, max_len):
  d = _domain(n_users=4, per_user=6)
  s = splits.temporal_loo(d)
  ex = _build(d, s, tok, which="test", max_len=max_len, history_len=4)
  segs = seg_lib.example_segments(ex)
  texts = text.domain_text("default", d)
  cache = tokenize.TokenCache(tok)
  inter = d.interactions
  hist = splits.history_rows(d, splits.visible_rows(s, "test", False), s.rows("test"), 4)
  seen_entries = 0
  for i, (ids, seg) in enumerate(zip(ex["input_ids"], segs)):
    assert len(seg) == len(ids) and seg[0] == seg_lib.SPECIAL and seg[-1] == seg_lib.SPECIAL
    cand = cache.encode([texts.candidate(int(ex["item"][i]))])[0]
    np.testing.assert_array_equal(ids[seg == seg_lib.CANDIDATE], cand)
    n = seg_lib.num_entries(seg)
    seen_entries += n
    past = [r for r in hist[i] if r >= 0][::-1]  # newest first
    for k in range(n):
      item, rating = int(inter.item[past[k]]), float(inter.rating[past[k]])
      options = cache.encode([texts.entry(item, rating), texts.entry(item, None)])
      got = ids[seg == seg_lib.HISTORY + k]
      assert any(np.array_equal(got, o) for o in options), (i, k)
    hist_pos = np.flatnonzero(seg >= seg_lib.HISTORY)
    assert np.all(np.diff(seg[hist_pos]) <= 0)  # oldest first in the text: k decreases
  assert seen_entries > 0
  if max_len == 40:
    assert ex.info["history_entries_dropped"] > 0


def test_examples_without_segments_are_an_error():
  with pytest.raises(ValueError, match="no 'segments' column"):
    seg_lib.example_segments({"input_ids": [np.arange(3)]})


def test_profile_facts_are_cut_at_sentence_and_list_ends():
  segs = np.array([0, 1, 1, 1, 1, 1, 1, 0, 3])
  tokens = ["[CLS]", "likes", "drama", ".", "a", ";", "b", "the", "x"]
  assert [s.tolist() for s in seg_lib.fact_spans(segs, tokens)] == [[1, 2, 3], [4, 5], [6]]


def test_drop_entries_on_history_arrays_numbers_entries_from_the_newest():
  batch = {"hist_item": np.array([[-1, 7, 8, 9], [3, 4, -1, -1]]),
           "hist_rating": np.ones((2, 4), np.float32), "hist_mask": np.array([[0, 1, 1, 1],
                                                                             [1, 1, 0, 0]])}
  np.testing.assert_array_equal(edits.entry_counts(batch), [3, 2])
  drop = np.array([[True, False, True], [False, True, False]])  # row 0: newest and oldest
  out = edits.drop_entries(batch, drop)
  np.testing.assert_array_equal(out["hist_item"], [[-1, -1, 8, -1], [-1, 4, -1, -1]])
  np.testing.assert_array_equal(out["hist_mask"], [[0, 0, 1, 0], [0, 1, 0, 0]])
  assert batch["hist_item"][0, 3] == 9  # the input is not modified
  ids = {"history_item": np.array([[5, 6]]), "history_rating": np.array([[0.2, 0.9]])}
  out = edits.drop_entries(ids, np.array([[True, False]]))
  np.testing.assert_array_equal(out["history_item"], [[5, -1]])
  np.testing.assert_array_equal(out["history_rating"], [[0.2, -1.0]])  # the builder's pad
  # Text and an ID history in one batch: entry k goes from both.
  both = {"segments": np.array([[0, 4, 4, 3, 3, 2, -1]]), "input_ids": np.array([[1, 2, 3, 4, 5, 6, 0]]),
          "attention_mask": np.array([[1, 1, 1, 1, 1, 1, 0]]),
          "history_item": np.array([[-1, 8, 9]]), "history_rating": np.array([[-1.0, 0.5, 0.75]])}
  np.testing.assert_array_equal(edits.entry_counts(both), [2])
  out = edits.drop_entries(both, np.array([[True, False]]))  # the newest
  np.testing.assert_array_equal(out["input_ids"], [[1, 2, 3, 6, 0, 0, 0]])
  np.testing.assert_array_equal(out["segments"], [[0, 4, 4, 2, -1, -1, -1]])
  np.testing.assert_array_equal(out["attention_mask"], [[1, 1, 1, 1, 0, 0, 0]])
  np.testing.assert_array_equal(out["history_item"], [[-1, 8, -1]])
  with pytest.raises(KeyError, match="segments"):
    edits.layout({"input_ids": np.zeros((1, 3))})
