"""Tests for crossrec_jax/eval/run_baselines.py on hand-made domains (the real data: test_yardsticks)."""

import numpy as np
import pytest

from crossrec_jax.data import schema
from crossrec_jax.data import splits
from crossrec_jax.eval import evaluate
from crossrec_jax.eval import run_baselines as rb


def make_domain(name, rows, titles, years=None, scale=(1.0, 5.0)):
  """rows: (user, item index, rating, time) tuples; titles: the item titles (ids = 'i<k>')."""
  ids = [f"i{k}" for k in range(len(titles))]
  fields = {"title": np.array(titles, object)}
  if years is not None:
    fields["year"] = np.array(years, object)
  items = schema.Items(ids=np.array(ids, object), fields=fields)
  u, i, r, t = zip(*rows)
  return schema.build_domain(name, user_ids=[f"u{x}" for x in u], item_ids=[ids[x] for x in i],
                             ratings=r, times=t, items=items, scale=schema.RatingScale(*scale))


def test_title_keys_and_source_means():
  src = make_domain("ml-src", [(0, 0, 5.0, 1), (1, 0, 3.0, 1), (0, 1, 2.0, 2), (0, 2, 1.0, 3)],
                    ["Heat", "Jaws  ", "Heat"], ["1995", "1975", "1986"])
  tgt = make_domain("ml-tgt", [(0, 0, 4.0, 1), (0, 1, 3.0, 2), (0, 2, 3.0, 3)],
                    ["heat", "Jaws", "Alien"], ["1995", "1975", "1979"])
  assert rb.title_keys(src.items).tolist() == ["heat (1995)", "jaws (1975)", "heat (1986)"]
  np.testing.assert_allclose(rb.source_item_means(src, tgt), [4.0, 2.0, np.nan])
  # Without years both 'Heat' films pool into one key: (5 + 3 + 1) / 3.
  np.testing.assert_allclose(rb.source_item_means(src, tgt, with_year=False), [3.0, 2.0, np.nan])


def test_zero_shot_title_prior_maps_source_scale():
  src = make_domain("books", [(0, 0, 10.0, 1), (1, 1, 1.0, 1), (2, 1, 4.0, 1)], ["Dune", "Emma"],
                    scale=(1.0, 10.0))
  tgt = make_domain("movies", [(0, 0, 4.0, 1), (0, 1, 2.0, 2), (1, 2, 5.0, 1), (1, 0, 1.0, 2)],
                    ["Dune", "Heat", "Up"])
  split = splits.with_label_fraction(splits.temporal_loo(tgt), 0.0)
  model = rb.fit_baseline("title_prior", tgt, split, src, title_with_year=False)
  assert isinstance(model, rb.ZeroShotTitlePrior)
  # Dune: 10 on 1-10 is 5 on 1-5; unmatched items get the source mean 5 -> 1 + 4 * 4 / 9.
  np.testing.assert_allclose(model.predict([0, 1, 1], [0, 1, 2]), [5.0, 1 + 16 / 9, 1 + 16 / 9])


def test_label_fraction_controls_what_rating_baselines_see():
  rows = [(u, i, float(1 + (u + i) % 5), t) for u in range(6) for t, i in enumerate(range(u, u + 5))]
  tgt = make_domain("ml", rows, [f"t{k}" for k in range(11)])
  split = splits.temporal_ratio(tgt, 0.2, 0.2)
  part = splits.with_label_fraction(split, 0.5, seed=3)
  inter = tgt.interactions
  gm = rb.fit_baseline("global_mean", tgt, part)
  assert gm.mu == pytest.approx(inter.rating[part.labelled_rows].mean())
  assert gm.mu != pytest.approx(inter.rating[split.train].mean())
  pop = rb.fit_baseline("popularity", tgt, splits.with_label_fraction(split, 0.0))
  # Popularity counts interactions, labelled or not.
  np.testing.assert_array_equal(pop.counts, np.bincount(inter.item[split.train], minlength=11))
  for name in ("global_mean", "bias", "mf"):
    with pytest.raises(rb.NeedsLabels, match="label"):
      rb.fit_baseline(name, tgt, splits.with_label_fraction(split, 0.0))
  with pytest.raises(ValueError, match="source"):
    rb.fit_baseline("title_prior", tgt, split)
  with pytest.raises(ValueError, match="unknown baseline"):
    rb.fit_baseline("knn", tgt, split)


def test_run_baselines_flat_metrics():
  rng = np.random.default_rng(0)
  rows = [(u, i, float(rng.integers(1, 6)), t) for u in range(30)
          for t, i in enumerate(rng.choice(40, 12, replace=False))]
  tgt = make_domain("ml", rows, [f"t{k}" for k in range(40)])
  src = make_domain("ml-src", [(0, k, 4.0, k) for k in range(10)], [f"t{k}" for k in range(10)])
  split = splits.temporal_ratio(tgt)
  spec = evaluate.EvalSpec(num_negatives=9, ks=(1, 5))
  # MF is left out: its compile alone takes ~4 s (test_baselines covers it).
  methods = tuple(m for m in rb.BASELINES if m != "mf")
  out = rb.run_baselines(tgt, split, spec, src, methods, seed=0)
  assert set(out) == set(methods)
  assert "test/rmse" not in out["popularity"] and "test/HR@5" in out["popularity"]
  for name in ("global_mean", "bias", "title_prior"):
    assert {"valid/rmse", "test/rmse", "test/mae", "test/auc", "test/HR@1", "test/MRR"} <= set(out[name])
  assert out["title_prior"]["train/title_matches"] == 10
  # A constant predictor ties every candidate: HR@1 = 1/10, HR@5 = 1/2 in expectation.
  assert out["global_mean"]["test/HR@1"] == pytest.approx(0.1)
  assert out["global_mean"]["test/HR@5"] == pytest.approx(0.5)
  zero = rb.run_baselines(tgt, splits.with_label_fraction(split, 0.0), spec, src, methods)
  assert set(zero) == set(rb.ZERO_LABEL_BASELINES)
