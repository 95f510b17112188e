"""Tests for data/prepare.py: deterministic subsampling, single-domain pairs, the TFDS path."""

import numpy as np

from crossrec_jax import config_base
from crossrec_jax.data import examples as examples_lib
from crossrec_jax.data import prepare
from crossrec_jax.data import schema


def toy_domain(num_users=10, per_user=5):
  items = schema.Items(ids=np.array([f"i{k}" for k in range(8)], object),
                       fields={"title": np.array([f"item {k}" for k in range(8)], object)})
  users = [f"u{u}" for u in range(num_users) for _ in range(per_user)]
  item_ids = [f"i{(u + t) % 8}" for u in range(num_users) for t in range(per_user)]
  times = [t for _ in range(num_users) for t in range(per_user)]
  return schema.build_domain("movies", user_ids=users, item_ids=item_ids,
                             ratings=np.ones(len(users)) * 3, times=times, items=items,
                             scale=schema.RatingScale(1, 5))


def toy_examples(n):
  ids = np.empty(n, dtype=object)
  ids[:] = [np.arange(3 + i % 4, dtype=np.int32) for i in range(n)]
  return examples_lib.ExampleSet({
      "input_ids": ids,
      "label": np.linspace(0, 1, n).astype(np.float32), "label_mask": np.ones(n, np.int32),
      "rating": np.ones(n, np.float32), "domain": np.zeros(n, np.int32),
      "user": np.arange(n, dtype=np.int32), "item": np.arange(n, dtype=np.int32),
      "row": np.arange(n, dtype=np.int64)})


def test_subsample_users_keeps_whole_histories_and_is_seeded():
  domain = toy_domain()
  a = prepare.subsample_users(domain, 3, seed=0)
  b = prepare.subsample_users(domain, 3, seed=0)
  c = prepare.subsample_users(domain, 3, seed=1)
  kept = np.unique(a.interactions.user)
  assert len(kept) == 3 and len(a.interactions) == 15  # every row of each kept user
  np.testing.assert_array_equal(a.interactions.user, b.interactions.user)
  assert not np.array_equal(kept, np.unique(c.interactions.user))
  assert prepare.subsample_users(domain, 0, seed=0) is domain
  assert prepare.subsample_users(domain, 99, seed=0) is domain


def test_subsample_examples_keeps_order_and_reports():
  ex = toy_examples(20)
  sub = prepare.subsample_examples(ex, 5, seed=3)
  assert len(sub) == 5 and sub.info["subsampled_from"] == 20
  assert (np.diff(sub["row"]) > 0).all()
  for i in range(5):
    np.testing.assert_array_equal(sub["input_ids"][i], ex["input_ids"][sub["row"][i]])
  assert prepare.subsample_examples(ex, 0, seed=3) is ex


def test_single_domain_phase_yields_the_batch_twice_and_resumes():
  data = prepare.PreparedData(
      sources={"source_train": toy_examples(40), "target_train": toy_examples(24)},
      scales={}, report={}, batch_size=4, target_batch_size=8, eval_batch_size=8,
      buckets=(8,))
  it = data.train_batches(use_source=False, use_target=True, seed=0)
  assert isinstance(it, prepare.SamePair)
  first = [next(it) for _ in range(3)]
  assert all(a is b for a, b in first) and first[0][0]["input_ids"].shape == (8, 8)
  state = it.get_state()
  expected = next(it)[0]
  again = data.train_batches(use_source=False, use_target=True, seed=0)
  again.set_state(state)
  np.testing.assert_array_equal(next(again)[0]["index"], expected["index"])
  paired = data.train_batches(use_source=True, use_target=True, seed=0)
  src, tgt = next(paired)
  assert src["input_ids"].shape[0] == 4 and tgt["input_ids"].shape[0] == 8


def test_tfds_materialisation_matches_in_memory(tmp_path):
  config = config_base.base_config("tiny")
  config.data.users.update(dict(source=8, target=8))
  config.data.max_examples.update(dict(source_train=64, target_train=32, target_valid=16,
                                       target_test=16))
  memory = prepare.prepare_data(config)
  config.data.use_tfds = True
  config.data.tfds_dir = str(tmp_path)
  built = prepare.prepare_data(config)    # writes the array_record dataset
  loaded = prepare.prepare_data(config)   # reads it back without building examples
  assert "tfds" in loaded.report and loaded.report["examples"] == built.report["examples"]
  for name in prepare.EXAMPLE_SETS:
    a = list(memory.eval_batches(name))
    b = list(loaded.eval_batches(name))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
      for key in ("input_ids", "attention_mask", "label", "label_mask", "rating", "valid"):
        np.testing.assert_array_equal(x[key], y[key])
  # The loaded sets are TFDS data sources, not the in-memory example sets.
  assert not isinstance(loaded.sources["target_valid"], examples_lib.ExampleSet)
