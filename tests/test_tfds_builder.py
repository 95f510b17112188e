"""Tests for data/tfds_builder.py: prepared examples written once, read back without the builder."""

import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from crossrec_jax.data import pipeline as pl
from crossrec_jax.data import tfds_builder as tb

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PREP = {"dataset": "ml-1m->ml-100k", "template": "default", "tokenizer_hash": "0123abcd",
        "max_len": 128, "history_k": 5, "label_fraction": 0.1, "seed": 0}


class FakeExampleSet:
  """The interface data/examples.py's ExampleSet will have: dict of columns, len, record(i)."""

  def __init__(self, n, seed, domain):
    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(50), 0.4, n).astype(int), 8, 128)
    self.columns = {
        "input_ids": [np.concatenate([[101], rng.integers(999, 30000, l - 2), [102]])
                      .astype(np.int32) for l in lengths],
        "segments": [rng.integers(0, 60, l).astype(np.int8) for l in lengths],
        "label": rng.random(n).astype(np.float32),
        "label_mask": (rng.random(n) < 0.5).astype(np.int32),
        "rating": rng.integers(1, 11, n).astype(np.float32),
        "domain": np.full(n, domain, np.int32),
        "user": rng.integers(0, 40, n).astype(np.int32),
        "item": rng.integers(0, 90, n).astype(np.int32),
        "row": np.arange(n, dtype=np.int64) * 7 + 2**33,  # beyond int32
    }

  def __len__(self):
    return len(self.columns["label"])

  def record(self, i):
    return {k: v[i] for k, v in self.columns.items()}


def example_sets():
  return {"source_train": FakeExampleSet(120, 0, 0), "target_train": FakeExampleSet(40, 1, 1),
          "target_valid": FakeExampleSet(17, 2, 1), "target_test": FakeExampleSet(23, 3, 1)}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  name = tb.config_name(PREP)
  sets = example_sets()
  path = tb.build_prepared_dataset(data_dir, name, sets, preparation=PREP)
  return data_dir, name, sets, path


def assert_same_records(got, want_set):
  assert len(got) == len(want_set)
  for i in range(len(want_set)):
    g, w = got[i], want_set.record(i)
    np.testing.assert_array_equal(np.asarray(g["input_ids"]), w["input_ids"])
    assert np.asarray(g["input_ids"]).dtype == np.int32
    np.testing.assert_array_equal(np.asarray(g["segments"]), w["segments"])
    assert np.asarray(g["segments"]).dtype == np.int8
    for k in tb.FIELDS:
      if k not in tb.VECTORS:
        assert np.asarray(g[k]) == w[k], (i, k)


def test_config_name_is_a_readable_content_hash():
  name = tb.config_name(PREP)
  assert name.startswith("ml-1m--ml-100k_L128_K5_") and tb._CONFIG_NAME.match(name)
  assert tb.config_name(dict(reversed(list(PREP.items())))) == name  # key order does not matter
  for key, value in [("tokenizer_hash", "ffff"), ("label_fraction", 0.01), ("seed", 1),
                     ("template", "short")]:
    assert tb.config_name({**PREP, key: value}) != name, key
  with pytest.raises(TypeError, match="JSON"):
    tb.config_name({"dataset": object()})


def test_built_dataset_reads_back_in_order_with_lengths(built):
  data_dir, name, sets, path = built
  assert path == tb.dataset_dir(data_dir, name) and (path / "dataset_info.json").exists()
  loaded = tb.load_prepared(data_dir, name)
  assert set(loaded) == set(sets)
  for split, source in loaded.items():
    assert "fast=True" in repr(source)
    assert_same_records(source, sets[split])  # our proto decoder
    assert_same_records(source.source, sets[split])  # TFDS's own decoder
    batch = source.__getitems__([5, 0, 3])
    np.testing.assert_array_equal(batch[0]["input_ids"], sets[split].columns["input_ids"][5])
    assert batch[2]["row"] == sets[split].columns["row"][3]
    np.testing.assert_array_equal(source.lengths,
                                  [len(x) for x in sets[split].columns["input_ids"]])
  assert tb.preparation_of(data_dir, name) == PREP
  only = tb.load_prepared(data_dir, name, splits=["target_test"])
  assert list(only) == ["target_test"]
  with pytest.raises(KeyError, match="target_nope"):
    tb.load_prepared(data_dir, name, splits=["target_nope"])


FRESH_READER = textwrap.dedent("""
  import sys
  import numpy as np
  import tensorflow_datasets as tfds
  data_dir, name, out = sys.argv[1:4]
  assert "crossrec_jax" not in sys.modules
  by_data_source = tfds.data_source("crossrec_prepared/" + name, data_dir=data_dir)
  builder = tfds.builder("crossrec_prepared/" + name, data_dir=data_dir)
  assert str(builder.info.version) == "1.1.0", builder.info.version
  by_builder = builder.as_data_source()
  arrays = {}
  for split in sorted(by_builder):
    for tag, sources in (("ds", by_data_source), ("b", by_builder)):
      recs = [sources[split][i] for i in range(len(sources[split]))]
      arrays[f"{tag}/{split}/input_ids"] = np.concatenate([r["input_ids"] for r in recs])
      arrays[f"{tag}/{split}/offsets"] = np.cumsum([len(r["input_ids"]) for r in recs])
      arrays[f"{tag}/{split}/segments"] = np.concatenate([r["segments"] for r in recs])
      for k in ("label", "label_mask", "rating", "domain", "user", "item", "row"):
        arrays[f"{tag}/{split}/{k}"] = np.array([r[k] for r in recs])
  np.savez(out, **arrays)
  print("READ_OK")
""")


def test_fresh_process_reads_identical_records_without_our_code(built, tmp_path):
  data_dir, name, sets, _ = built
  out = tmp_path / "records.npz"
  proc = subprocess.run([sys.executable, "-c", FRESH_READER, str(data_dir), name, str(out)],
                        cwd=tmp_path, capture_output=True, text=True, timeout=300,
                        env={**os.environ, "JAX_PLATFORMS": "cpu"})
  assert proc.returncode == 0 and "READ_OK" in proc.stdout, proc.stderr[-3000:]
  arrays = np.load(out)
  for tag in ("ds", "b"):
    for split, want in sets.items():
      ids = want.columns["input_ids"]
      np.testing.assert_array_equal(arrays[f"{tag}/{split}/input_ids"], np.concatenate(ids))
      np.testing.assert_array_equal(arrays[f"{tag}/{split}/offsets"],
                                    np.cumsum([len(x) for x in ids]))
      np.testing.assert_array_equal(arrays[f"{tag}/{split}/segments"],
                                    np.concatenate(want.columns["segments"]))
      for k in tb.FIELDS:
        if k not in tb.VECTORS:
          np.testing.assert_array_equal(arrays[f"{tag}/{split}/{k}"], want.columns[k], err_msg=k)


def test_rebuilding_is_a_no_op_and_another_config_gets_another_dir(built):
  data_dir, name, sets, path = built
  stamps = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
  again = tb.build_prepared_dataset(data_dir, name, sets, preparation=PREP)
  assert again == path and {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == stamps
  with pytest.raises(ValueError, match="already prepared"):
    tb.build_prepared_dataset(data_dir, name, {"source_train": sets["source_train"]})
  other_prep = {**PREP, "history_k": 3}
  other = tb.build_prepared_dataset(data_dir, tb.config_name(other_prep),
                                    {"target_test": sets["target_test"]}, preparation=other_prep)
  assert other != path and other.parent.parent == path.parent.parent
  assert list(tb.load_prepared(data_dir, tb.config_name(other_prep))) == ["target_test"]


def test_pipeline_batches_from_prepared_equal_in_memory_batches(built):
  data_dir, name, sets, _ = built
  loaded = tb.load_prepared(data_dir, name)
  cfg = pl.BatchConfig(batch_size=8)
  from_disk = list(pl.paired_batches(loaded["source_train"], loaded["target_train"], cfg,
                                     num_steps=12))
  in_memory = list(pl.paired_batches(sets["source_train"], sets["target_train"], cfg, num_steps=12))
  for a, b in zip(from_disk, in_memory):
    for x, y in zip(a, b):
      for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
  ev = list(pl.eval_batches(loaded["target_test"], cfg))
  assert sorted(np.concatenate([b["index"][b["valid"] == 1] for b in ev])) == list(range(23))


def test_bad_records_name_split_index_and_field(tmp_path):
  sets = {"target_test": FakeExampleSet(5, 0, 1)}
  del sets["target_test"].columns["rating"]
  with pytest.raises(KeyError, match=r"'target_test': missing field\(s\) \['rating'\]"):
    tb.build_prepared_dataset(tmp_path, "bad_a", sets)
  records = [FakeExampleSet(3, 0, 1).record(i) for i in range(3)]
  del records[1]["user"]
  with pytest.raises(KeyError, match=r"'target_test' record 1: missing field\(s\) \['user'\]"):
    tb.build_prepared_dataset(tmp_path, "bad_c", {"target_test": records})
  sets = {"target_test": FakeExampleSet(5, 0, 1)}
  sets["target_test"].columns["input_ids"][3] = np.array([101, 2**31, 102])
  with pytest.raises(ValueError, match="record 3 field 'input_ids': 2147483648 does not fit int32"):
    tb.build_prepared_dataset(tmp_path, "bad_d", sets)
  sets = {"target_test": FakeExampleSet(5, 0, 1)}
  sets["target_test"].columns["segments"][4] = sets["target_test"].columns["segments"][4][:-1]
  with pytest.raises(ValueError, match="record 4 field 'segments': shape"):
    tb.build_prepared_dataset(tmp_path, "bad_e", sets)
  sets = {"target_test": FakeExampleSet(5, 0, 1)}
  seg = sets["target_test"].columns["segments"]
  seg[2] = np.concatenate([[300], seg[2][1:]])  # int64 now: one value beyond int8
  with pytest.raises(ValueError, match="record 2 field 'segments': 300 does not fit int8"):
    tb.build_prepared_dataset(tmp_path, "bad_f", sets)
  sets = {"target_test": FakeExampleSet(5, 0, 1)}
  sets["target_test"].columns["label_mask"] = np.array([1, 0, 0.5, 1, 1])
  with pytest.raises(ValueError, match="record 2 field 'label_mask': non-integer"):
    tb.build_prepared_dataset(tmp_path, "bad_b", sets)
  with pytest.raises(ValueError, match="config name"):
    tb.build_prepared_dataset(tmp_path, "has space", {})
  with pytest.raises(FileNotFoundError, match="build_prepared_dataset"):
    tb.load_prepared(tmp_path, "never_built")
