"""Tests for data/pipeline.py: buckets, plans, batch format, resume, pairing, hosts, mesh."""

import itertools
import json
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT
from conftest import fake_devices_env
from conftest import run_on_fake_devices
from crossrec_jax.data import pipeline as pl

SCALARS = ("label", "label_mask", "rating", "domain", "user", "item")


def synth_columns(n, seed=0, domain=0, lo=8, hi=128):
  """Records like the tokeniser's: [CLS] ... [SEP], skewed (log-normal) lengths in [lo, hi]."""
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.lognormal(np.log(55), 0.45, n).astype(int), lo, hi)
  ids = [np.concatenate([[101], rng.integers(1000, 30000, l - 2), [102]]).astype(np.int32)
         for l in lengths]
  return {
      "input_ids": ids,
      "label": rng.random(n).astype(np.float32),
      "label_mask": (rng.random(n) < 0.7).astype(np.int32),
      "rating": rng.integers(1, 6, n).astype(np.float32),
      "domain": np.full(n, domain, np.int32),
      "user": rng.integers(0, 50, n).astype(np.int32),
      "item": rng.integers(0, 300, n).astype(np.int32),
      "row": np.arange(n, dtype=np.int64),
  }


def take(it, k):
  return [next(it) for _ in range(k)]


def assert_batches_equal(a, b):
  a = a if isinstance(a, tuple) else (a,)
  b = b if isinstance(b, tuple) else (b,)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


@pytest.fixture(scope="module")
def src():
  return pl.RecordSource(synth_columns(600, seed=0))


@pytest.fixture(scope="module")
def tgt():
  return pl.RecordSource(synth_columns(150, seed=1, domain=1))


# ---------------------------------------------------------------------------- sources, buckets
def test_record_source_round_trip_and_errors():
  cols = synth_columns(20)
  s = pl.RecordSource(cols)
  assert len(s) == 20
  np.testing.assert_array_equal(s[3]["input_ids"], cols["input_ids"][3])
  assert s[3]["user"] == cols["user"][3]
  np.testing.assert_array_equal(s.lengths, [len(x) for x in cols["input_ids"]])
  with pytest.raises(KeyError, match="label_mask"):
    pl.RecordSource({k: v for k, v in cols.items() if k != "label_mask"})
  with pytest.raises(ValueError, match="differ in length"):
    pl.RecordSource({**cols, "user": cols["user"][:5]})
  with pytest.raises(IndexError):
    s[20]


def test_as_source_accepts_record_method_and_scans_lengths():
  cols = synth_columns(10)

  class ExampleSetLike:  # the `len` + `record(i)` interface of data/examples.py

    def __len__(self):
      return 10

    def record(self, i):
      return {k: v[i] for k, v in cols.items()}

  s = pl.as_source(ExampleSetLike())
  np.testing.assert_array_equal(s[4]["input_ids"], cols["input_ids"][4])
  np.testing.assert_array_equal(pl.source_lengths(s), [len(x) for x in cols["input_ids"]])
  assert isinstance(pl.as_source(cols), pl.RecordSource)
  with pytest.raises(TypeError, match="record source"):
    pl.as_source(42)


def test_bucket_of_picks_smallest_fitting_and_rejects_too_long():
  np.testing.assert_array_equal(pl.bucket_of([1, 32, 33, 64, 100], (32, 64, 128)),
                                [32, 32, 64, 64, 128])
  with pytest.raises(ValueError, match="index 2, 129 tokens"):
    pl.bucket_of([5, 10, 129], (32, 64, 128))


def test_choose_buckets_matches_exhaustive_search():
  rng = np.random.default_rng(0)
  lengths = rng.integers(3, 60, 200)
  cands = np.arange(8, 65, 8)

  def padded(bk):
    return np.asarray(bk)[np.searchsorted(bk, lengths)].sum()

  for k in (1, 2, 3, 4):
    got = pl.choose_buckets(lengths, k, multiple=8)
    assert len(got) <= k and got[-1] >= lengths.max()
    best = min(padded(c + (64,)) for c in itertools.combinations(cands[:-1], k - 1))
    assert padded(got) == best


# ---------------------------------------------------------------------------- plans
def test_train_plan_is_a_seeded_epoch_permutation():
  lengths = np.random.default_rng(0).integers(8, 129, 1003)
  b, buckets = 32, (32, 64, 96, 128)
  p0 = pl.train_plan(lengths, b, buckets, seed=3, epoch=0, window=4)
  assert p0.indices.shape == (1003 // b, b)
  assert len(np.unique(p0.indices)) == p0.indices.size  # no example twice, remainder dropped
  longest = lengths[p0.indices].max(axis=1)
  np.testing.assert_array_equal(p0.seq_len, pl.bucket_of(longest, buckets))
  again = pl.train_plan(lengths, b, buckets, seed=3, epoch=0, window=4)
  np.testing.assert_array_equal(p0.indices, again.indices)
  p1 = pl.train_plan(lengths, b, buckets, seed=3, epoch=1, window=4)
  other_seed = pl.train_plan(lengths, b, buckets, seed=4, epoch=0, window=4)
  assert not np.array_equal(p0.indices, p1.indices)
  assert not np.array_equal(p0.indices, other_seed.indices)
  with pytest.raises(ValueError, match="batch_size 32"):
    pl.train_plan(lengths[:10], b, buckets, seed=0, epoch=0)


def test_length_sorted_windows_reach_85_percent_padding_efficiency(src):
  cfg = pl.BatchConfig(batch_size=16)  # default buckets and window
  eff, n = pl.padding_efficiency(pl.train_batches(src, cfg, num_epochs=1))
  assert n == (len(src) // 16) * 16
  assert eff >= 0.85
  max_len_eff = src.lengths.sum() / (len(src) * 128)
  assert eff > max_len_eff + 0.3
  unsorted, _ = pl.padding_efficiency(
      pl.train_batches(src, pl.BatchConfig(batch_size=16, window=1), num_epochs=1))
  assert eff > unsorted + 0.1


# ---------------------------------------------------------------------------- batches
def test_train_batch_format_and_content(src):
  cfg = pl.BatchConfig(batch_size=16, buckets=(32, 64, 96, 128))
  batches = list(pl.train_batches(src, cfg, num_epochs=1))
  assert len(batches) == len(src) // 16
  seen = set()
  for batch in batches:
    lb = batch["input_ids"].shape[1]
    assert lb in cfg.buckets
    for key in ("input_ids", "attention_mask", "token_type_ids"):
      assert batch[key].shape == (16, lb) and batch[key].dtype == np.int32
    for key, dt in [("label", np.float32), ("label_mask", np.float32), ("rating", np.float32),
                    ("valid", np.float32), ("domain", np.int32), ("user", np.int32),
                    ("item", np.int32), ("index", np.int32)]:
      assert batch[key].shape == (16,) and batch[key].dtype == dt, key
    assert not batch["token_type_ids"].any()
    assert (batch["valid"] == 1).all()
    # The smallest bucket that fits: the next smaller one would cut the longest example.
    longest = batch["attention_mask"].sum(1).max()
    smaller = [b for b in cfg.buckets if b < lb]
    assert longest <= lb and (not smaller or longest > max(smaller))
    for k, i in enumerate(batch["index"]):
      rec = src[int(i)]
      n = len(rec["input_ids"])
      np.testing.assert_array_equal(batch["input_ids"][k, :n], rec["input_ids"])
      assert batch["attention_mask"][k, :n].all() and not batch["attention_mask"][k, n:].any()
      assert not batch["input_ids"][k, n:].any()
      for key in SCALARS:
        assert batch[key][k] == pytest.approx(float(rec[key])), key
      seen.add(int(i))
  assert len(seen) == len(batches) * 16


def test_eval_sees_every_example_once_with_fixed_batch(src):
  cfg = pl.BatchConfig(batch_size=64, buckets=(32, 64, 96, 128))
  batches = list(pl.eval_batches(src, cfg))
  assert len(batches) == -(-len(src) // 64)
  assert all(b["input_ids"].shape[0] == 64 for b in batches)
  index = np.concatenate([b["index"] for b in batches])
  valid = np.concatenate([b["valid"] for b in batches])
  assert sorted(index[valid == 1]) == list(range(len(src)))
  assert (index[valid == 0] == -1).all() and (valid == 0).sum() == 64 * len(batches) - len(src)
  last = batches[-1]
  pad = last["valid"] == 0
  assert (last["label_mask"][pad] == 0).all()
  assert (last["attention_mask"][pad].sum(1) > 0).all()  # copies of a real row: no empty rows
  label_mask = np.concatenate([b["label_mask"] for b in batches])
  assert label_mask.sum() == src.columns["label_mask"].sum()


def test_grain_threads_do_not_change_batches(src):
  cfg0 = pl.BatchConfig(batch_size=16, num_threads=0, prefetch_batches=0)
  cfg2 = pl.BatchConfig(batch_size=16, num_threads=2, prefetch_batches=3)
  for a, b in zip(take(pl.train_batches(src, cfg0), 50), take(pl.train_batches(src, cfg2), 50)):
    assert_batches_equal(a, b)


def test_compiles_once_per_bucket_not_per_batch(src):
  step = jax.jit(lambda b: (b["input_ids"] * b["attention_mask"]).sum() + b["label"].sum())
  cfg = pl.BatchConfig(batch_size=16, buckets=(32, 64, 96, 128))
  batches = list(pl.train_batches(src, cfg, num_epochs=2))
  for batch in batches:
    step(batch)
  shapes = {b["input_ids"].shape for b in batches}
  assert step._cache_size() == len(shapes) <= len(cfg.buckets)


# ---------------------------------------------------------------------------- resume
@pytest.mark.parametrize("stop", [5, 37, 80])  # mid-epoch, the boundary (37 per epoch), later
def test_resumed_train_iterator_yields_the_uninterrupted_batches(src, stop):
  cfg = pl.BatchConfig(batch_size=16)
  reference = take(pl.train_batches(src, cfg), stop + 12)
  interrupted = pl.train_batches(src, cfg)
  take(interrupted, stop)
  state = json.loads(json.dumps(interrupted.get_state()))  # plain ints survive JSON
  assert all(type(v) is int for v in state.values())
  assert state["step"] == stop
  assert divmod(stop, len(src) // 16) == (state["epoch"], state["position"])
  resumed = pl.train_batches(src, cfg)
  resumed.set_state(state)
  for a, b in zip(reference[stop:], take(resumed, 12)):
    assert_batches_equal(a, b)


def test_set_state_rejects_another_pipeline(src):
  it = pl.train_batches(src, pl.BatchConfig(batch_size=16, seed=1))
  take(it, 3)
  state = it.get_state()
  with pytest.raises(ValueError, match="seed"):
    pl.train_batches(src, pl.BatchConfig(batch_size=16, seed=2)).set_state(state)
  with pytest.raises(ValueError, match="batch_size"):
    pl.train_batches(src, pl.BatchConfig(batch_size=8, seed=1)).set_state(state)
  with pytest.raises(ValueError, match="inconsistent"):
    pl.train_batches(src, pl.BatchConfig(batch_size=16, seed=1)).set_state({**state, "epoch": 4})


def test_device_prefetch_state_counts_returned_batches_only(src):
  cfg = pl.BatchConfig(batch_size=16)
  reference = take(pl.train_batches(src, cfg), 10)
  pre = pl.DevicePrefetch(pl.train_batches(src, cfg), put=jax.device_put, size=3)
  got = take(pre, 4)
  assert isinstance(got[0]["input_ids"], jax.Array)
  state = pre.get_state()
  assert state["step"] == 4  # not 4 + prefetched
  resumed = pl.DevicePrefetch(pl.train_batches(src, cfg), put=jax.device_put, size=3)
  resumed.set_state(state)
  for a, b in zip(reference[4:], take(resumed, 6)):
    assert_batches_equal(a, jax.tree.map(np.asarray, b))


# ---------------------------------------------------------------------------- paired
def test_paired_batches_share_a_length_and_cycle_domains_independently(src, tgt):
  cfg = pl.BatchConfig(batch_size=16, pair_window=9)  # target: 150 // 16 = 9 batches per epoch
  pairs = take(pl.paired_batches(src, tgt, cfg), 27)
  for s, t in pairs:
    assert s["input_ids"].shape[1] == t["input_ids"].shape[1]
    assert (s["domain"] == 0).all() and (t["domain"] == 1).all()
  # Each window of 9 steps is one target epoch, in a length-matched order: as sets of batches
  # (sorted index tuples), windows 0, 1, 2 are exactly the target plans of epochs 0, 1, 2.
  for epoch in range(3):
    plan = pl.train_plan(tgt.lengths, 16, cfg.buckets, seed=cfg.seed, epoch=epoch,
                         window=cfg.window, stream=pl.TARGET_STREAM)
    want = sorted(tuple(sorted(row)) for row in plan.indices)
    got = sorted(tuple(sorted(t["index"])) for _, t in pairs[9 * epoch:9 * (epoch + 1)])
    assert got == want
  # The source is in its first epoch throughout: no source example repeats.
  src_index = np.concatenate([s["index"] for s, _ in pairs])
  assert len(np.unique(src_index)) == src_index.size


def test_length_matched_pairing_pads_less_than_independent(src, tgt):
  matched, _ = pl.padding_efficiency(
      pl.paired_batches(src, tgt, pl.BatchConfig(batch_size=16), num_steps=72))
  independent, _ = pl.padding_efficiency(
      pl.paired_batches(src, tgt, pl.BatchConfig(batch_size=16, pair_window=1), num_steps=72))
  assert matched > independent + 0.05


def test_resumed_paired_iterator_matches(src, tgt):
  cfg = pl.BatchConfig(batch_size=16)
  tcfg = pl.BatchConfig(batch_size=8)
  reference = take(pl.paired_batches(src, tgt, cfg, tcfg), 40)
  it = pl.paired_batches(src, tgt, cfg, tcfg)
  take(it, 23)
  state = it.get_state()
  assert state["target_batch_size"] == 8 and state["source_batch_size"] == 16
  resumed = pl.paired_batches(src, tgt, cfg, tcfg)
  resumed.set_state(state)
  for a, b in zip(reference[23:], take(resumed, 17)):
    assert_batches_equal(a, b)


# ---------------------------------------------------------------------------- hosts, mesh
@pytest.mark.parametrize("kind", ["train", "eval"])
def test_processes_read_disjoint_slices_of_the_same_global_batch(kind):
  source = pl.RecordSource(synth_columns(70, seed=2))  # eval: the last batch has 6 real rows
  cfg = pl.BatchConfig(batch_size=32, buckets=(32, 64, 96, 128))
  make = (lambda **kw: pl.train_batches(source, cfg, **kw)) if kind == "train" else (
      lambda **kw: pl.eval_batches(source, cfg, **kw))
  whole = take(make(process_index=0, process_count=1), 3 if kind == "eval" else 4)
  parts = [take(make(process_index=p, process_count=4), len(whole)) for p in range(4)]
  for step, global_batch in enumerate(whole):
    for key, value in global_batch.items():
      if key == "index" or kind == "train":
        np.testing.assert_array_equal(np.concatenate([p[step][key] for p in parts]), value)
      else:  # padding rows copy a real row of their own slice: only the real rows must agree
        valid = global_batch["valid"] == 1
        np.testing.assert_array_equal(np.concatenate([p[step][key] for p in parts])[valid],
                                      value[valid])
  with pytest.raises(ValueError, match="not divisible by 3 processes"):
    pl.train_batches(source, cfg, process_index=0, process_count=3)


MESH_SCRIPT = textwrap.dedent("""
  import jax, numpy as np
  from jax.sharding import AxisType
  from crossrec_jax.data import pipeline as pl
  assert jax.device_count() == 8, jax.devices()
  mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  rng = np.random.default_rng(0)
  n = 40
  cols = {"input_ids": [np.arange(1, l + 1, dtype=np.int32) for l in rng.integers(4, 60, n)],
          "label": rng.random(n), "label_mask": np.ones(n, np.int32), "rating": np.ones(n),
          "domain": np.zeros(n, np.int32), "user": np.arange(n), "item": np.arange(n)}
  it = pl.train_batches(pl.RecordSource(cols), pl.BatchConfig(batch_size=16))
  batch = next(it)
  out = pl.shard_batch(batch, mesh)
  for k, v in out.items():
    assert v.shape == batch[k].shape, k
    np.testing.assert_array_equal(np.asarray(v), batch[k])
    assert v.sharding.spec[0] == ("data", "fsdp"), v.sharding
    assert {s.data.shape[0] for s in v.addressable_shards} == {2}, k
  source = pl.RecordSource(cols)
  pair = next(pl.paired_batches(source, source, pl.BatchConfig(batch_size=8)))
  placed = pl.shard_batch(pair, mesh, data_axes=("data",))
  assert placed[1]["input_ids"].sharding.spec[0] in ("data", ("data",))
  shards = placed[1]["input_ids"].addressable_shards
  assert {s.data.shape for s in shards} == {(2, pair[1]["input_ids"].shape[1])}
  try:
    pl.shard_batch({"x": np.zeros((6,))}, mesh)
    raise SystemExit("expected an error for 6 rows over 8 devices")
  except ValueError as e:
    assert "multiple of 8" in str(e), e
  pre = pl.DevicePrefetch(pl.train_batches(pl.RecordSource(cols), pl.BatchConfig(batch_size=16)),
                          put=lambda b: pl.shard_batch(b, mesh), size=2)
  first = next(pre)
  np.testing.assert_array_equal(np.asarray(first["input_ids"]), batch["input_ids"])
  assert len(first["label"].sharding.device_set) == 8
  print("MESH_OK")
""")


def test_shard_batch_on_an_8_device_mesh():
  proc = run_on_fake_devices(MESH_SCRIPT, devices=8, timeout=300)
  assert proc.returncode == 0 and "MESH_OK" in proc.stdout, proc.stderr[-3000:]


MULTIHOST_SCRIPT = textwrap.dedent("""
  import sys
  import jax
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[2], num_processes=2,
                             process_id=int(sys.argv[1]))
  import numpy as np
  from jax.sharding import AxisType
  from crossrec_jax.data import pipeline as pl
  assert jax.process_count() == 2 and jax.device_count() == 8
  mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  rng = np.random.default_rng(0)
  n = 100
  cols = {"input_ids": [np.arange(1, l + 1, dtype=np.int32) for l in rng.integers(4, 60, n)],
          "label": rng.random(n), "label_mask": np.ones(n, np.int32), "rating": np.ones(n),
          "domain": np.zeros(n, np.int32), "user": np.arange(n), "item": np.arange(n)}
  cfg = pl.BatchConfig(batch_size=16)
  whole = next(pl.train_batches(pl.RecordSource(cols), cfg, process_index=0, process_count=1))
  local = next(pl.train_batches(pl.RecordSource(cols), cfg))  # this process's half, from jax
  assert local["input_ids"].shape[0] == 8
  g = pl.shard_batch(local, mesh)
  assert g["input_ids"].shape == whole["input_ids"].shape, g["input_ids"].shape
  total = jax.jit(lambda b: (b["input_ids"].astype(np.float32) * b["index"][:, None]).sum())(g)
  assert float(total) == float((whole["input_ids"] * whole["index"][:, None]).sum())
  print("MULTIHOST_OK")
""")


@pytest.mark.slow
def test_two_processes_assemble_the_global_batch():
  import socket
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = str(s.getsockname()[1])
  procs = [subprocess.Popen([sys.executable, "-c", MULTIHOST_SCRIPT, str(p), port], cwd=REPO_ROOT,
                            env=fake_devices_env(4), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for p in range(2)]
  try:
    outs = [p.communicate(timeout=300) for p in procs]
  finally:
    for p in procs:  # a hung peer must not outlive the test
      if p.poll() is None:
        p.kill()
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0 and "MULTIHOST_OK" in out, err[-3000:]
