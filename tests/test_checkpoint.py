"""Tests for train/checkpoint.py: exact round trips with types, metadata, retention; the
integrity record, the fallback past damaged checkpoints and failed asynchronous saves."""

import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from crossrec_jax.models import heads
from crossrec_jax.train import checkpoint as checkpoint_lib
from crossrec_jax.train import optim
from crossrec_jax.train import state as state_lib

REPO = pathlib.Path(__file__).resolve().parents[1]


class Tiny(nnx.Module):
  def __init__(self, rngs):
    self.encoder = nnx.Linear(3, 4, rngs=rngs)
    self.rating_head = heads.RatingHead(4, (2,), output="regression", rngs=rngs)
    self.discriminator = heads.DomainDiscriminator(4, (2,), rngs=rngs)


def make_state(frozen=False, seed=0):
  parts = state_lib.split_model(Tiny(nnx.Rngs(seed)))
  opt = optim.make_optimizer(optim.label_params(parts.params), {
      "encoder": {"lr": 1e-3, "frozen": frozen}, "rating_head": {"lr": 1e-3},
      "discriminator": {"lr": 1e-3}})
  state = state_lib.init_train_state(parts.params, opt.tx, state_lib.make_rng(seed), parts.rest)
  # One real update so the Adam moments are non-zero.
  grads = jax.tree.map(lambda p: p * 0.5 + 1.0, state.params)
  updates, opt_state = opt.tx.update(grads, state.opt_state, state.params)
  return state.replace(params=optax.apply_updates(state.params, updates), opt_state=opt_state,
                       step=state.step + 1, opt_step=state.opt_step + 1)


def assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    assert np.asarray(x).dtype == np.asarray(y).dtype
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_keeps_optax_types(tmp_path):
  state = make_state()
  meta = {"phase_index": 1, "step": 1, "data_state": {"step": 7, "seed": 0}, "config_hash": "x"}
  ckpt = checkpoint_lib.Checkpointer(tmp_path / "ck", keep=2)
  ckpt.save(5, state, meta)
  ckpt.wait()
  assert ckpt.latest_step() == 5
  assert ckpt.restore_meta() == meta
  target = checkpoint_lib.abstract_like(jax.eval_shape(lambda: make_state(seed=1)))
  restored = ckpt.restore_state(5, target)
  assert isinstance(restored, state_lib.TrainState)
  assert_trees_equal(restored, state)
  adam = [s for s in jax.tree.leaves(restored.opt_state,
                                     is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
          if isinstance(s, optax.ScaleByAdamState)]
  assert adam, "optax states must come back as their NamedTuples, not dicts"
  ckpt.close()


def test_keeps_the_last_k_and_resumes_after_reopen(tmp_path):
  state = make_state()
  ckpt = checkpoint_lib.Checkpointer(tmp_path, keep=2)
  for step in (10, 20, 30):
    ckpt.save(step, state, {"step": step})
  ckpt.close()
  again = checkpoint_lib.Checkpointer(tmp_path, keep=2)
  assert again.all_steps() == [20, 30] and again.latest_step() == 30
  assert again.restore_meta(20) == {"step": 20}
  again.close()


def test_structure_mismatch_is_an_error(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(tmp_path)
  ckpt.save(1, make_state(frozen=False), {})
  ckpt.wait()
  frozen_target = checkpoint_lib.abstract_like(jax.eval_shape(lambda: make_state(frozen=True)))
  with pytest.raises(Exception):  # a frozen group has no Adam state: the trees differ
    ckpt.restore_state(1, frozen_target)
  ckpt.close()


def test_empty_directory_and_bad_keep(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(tmp_path)
  assert ckpt.latest_step() is None
  with pytest.raises(FileNotFoundError, match="no checkpoint"):
    ckpt.restore_meta()
  ckpt.close()
  with pytest.raises(ValueError, match="keep_checkpoints"):
    checkpoint_lib.Checkpointer(tmp_path, keep=0)


def test_abstract_like_attaches_shardings():
  tree = {"a": np.zeros((2, 3), np.float32), "b": np.zeros((), np.int32)}
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  out = checkpoint_lib.abstract_like(tree, sharding)
  assert out["a"].shape == (2, 3) and out["b"].dtype == np.int32
  assert out["a"].sharding == sharding and out["b"].sharding == sharding


# ---------------------------------------------------------------------------- integrity

def damage(path, how):
  """Deletes, truncates (to half) or overwrites (same size) the file or directory `path`."""
  if how == "delete":
    shutil.rmtree(path) if path.is_dir() else path.unlink()
  elif how == "truncate":
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
  else:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte: the silent -2.4e30 case of issue 14
    path.write_bytes(bytes(data))


def saved(tmp_path, steps=(10, 20, 30)):
  ckpt = checkpoint_lib.Checkpointer(tmp_path, keep=len(steps))
  state = make_state()
  for step in steps:
    ckpt.save(step, state, {"step": step})
  ckpt.close()
  return state


def test_every_checkpoint_holds_a_record_that_covers_its_files(tmp_path):
  saved(tmp_path)
  for step in (10, 20, 30):
    record = json.loads((tmp_path / str(step) / checkpoint_lib.INTEGRITY_FILE).read_text())
    names = set(record["files"])
    assert "meta/metadata" in names and any(n.startswith("state/") for n in names)
    assert checkpoint_lib.check_record(tmp_path / str(step)) is None


def test_damage_to_any_recorded_file_is_detected(tmp_path):
  saved(tmp_path, steps=(10,))
  ck = tmp_path / "10"
  names = sorted(json.loads((ck / checkpoint_lib.INTEGRITY_FILE).read_text())["files"])
  assert len(names) >= 8, names
  for name in names:
    for how in ("delete", "truncate", "overwrite"):
      if how != "delete" and not (ck / name).stat().st_size:
        continue
      copy = tmp_path / f"copy-{how}"
      shutil.copytree(ck, copy)
      damage(copy / name, how)
      problem = checkpoint_lib.check_record(copy)
      assert problem is not None and name in problem, (name, how, problem)
      shutil.rmtree(copy)


@pytest.mark.parametrize("target,how", [
    ("state/data", "delete"), ("state/data", "truncate"), ("state/data", "overwrite"),
    ("meta/metadata", "truncate"), ("state", "delete"),
    (checkpoint_lib.INTEGRITY_FILE, "delete"), (checkpoint_lib.INTEGRITY_FILE, "truncate")])
def test_a_damaged_newest_checkpoint_falls_back_with_one_warning(tmp_path, caplog, target, how):
  state = saved(tmp_path)
  path = tmp_path / "30" / target
  if target == "state/data":  # the largest array file (the embedding's bytes)
    path = max((p for p in (tmp_path / "30" / "state").rglob("*") if p.is_file()
                and "/d/" in str(p)), key=lambda p: p.stat().st_size)
  damage(path, how)
  ckpt = checkpoint_lib.Checkpointer(tmp_path, keep=3)
  with caplog.at_level(logging.WARNING, logger=checkpoint_lib.__name__):
    assert ckpt.intact_step() == 20
  # Ours only: orbax warns on its own when a save waited on a slow disk (seen under load).
  warnings = [r.getMessage() for r in caplog.records
              if r.name == checkpoint_lib.__name__ and r.levelno == logging.WARNING]
  assert len(warnings) == 1 and "checkpoint 30" in warnings[0] and str(tmp_path) in warnings[0]
  assert ckpt.all_steps() == [10, 20] and ckpt.latest_step() == 20
  kept = [p.name for p in tmp_path.iterdir() if p.name.startswith("30.corrupt")]
  assert len(kept) == 1 and not (tmp_path / "30").exists()  # kept for inspection
  assert ckpt.restore_meta(ckpt.intact_step()) == {"step": 20}
  target_ = checkpoint_lib.abstract_like(jax.eval_shape(lambda: make_state(seed=1)))
  assert_trees_equal(ckpt.restore_state(20, target_), state)
  ckpt.save(30, state, {"step": 30})  # the run goes on: a new 30 beside the kept one
  ckpt.close()
  assert checkpoint_lib.check_record(tmp_path / "30") is None


def test_no_intact_checkpoint_is_one_error_naming_the_directory(tmp_path):
  saved(tmp_path, steps=(10, 20))
  damage(tmp_path / "10" / "meta" / "metadata", "truncate")
  damage(tmp_path / "20" / "state", "delete")
  ckpt = checkpoint_lib.Checkpointer(tmp_path, keep=2)
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=rf"no intact checkpoint in {tmp_path}: 20: .*state/.* is missing; "
                           r"10: meta/metadata has"):
    ckpt.intact_step()
  ckpt.close()


def test_an_empty_directory_has_no_intact_step(tmp_path):
  ckpt = checkpoint_lib.Checkpointer(tmp_path)
  assert ckpt.intact_step() is None
  ckpt.close()


_DISK_FULL = """
import resource, sys
import numpy as np
from crossrec_jax.train import checkpoint as checkpoint_lib
directory = sys.argv[1]
state = {"w": np.arange(200_000, dtype=np.float32)}  # 800 kB in one array file
ckpt = checkpoint_lib.Checkpointer(directory, keep=3)
ckpt.save(5, state, {"step": 5})
ckpt.wait()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, hard))  # "disk full" from now on
ckpt.save(10, state, {"step": 10})
try:
  for _ in range(100_000):  # the train loop: a step, then the cheap check
    ckpt.check()
  ckpt.wait()
  print("NO ERROR")
except checkpoint_lib.CheckpointError as e:
  print("ERROR", e)
ckpt.close()
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
again = checkpoint_lib.Checkpointer(directory, keep=3)
print("INTACT", again.intact_step(), again.restore_meta(again.intact_step()))
again.close()
"""


def test_a_failed_asynchronous_save_is_one_error_and_keeps_the_previous(tmp_path):
  proc = subprocess.run([sys.executable, "-c", _DISK_FULL, str(tmp_path / "ck")],
                        capture_output=True, text=True, timeout=300,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"), cwd=REPO)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  error = next(l for l in lines if l.startswith(("ERROR", "NO ERROR")))
  assert error.startswith("ERROR saving checkpoint 10 to ") and str(tmp_path / "ck" / "10") in error
  assert "File too large" in error and "previous checkpoint (5) is unchanged" in error
  assert "INTACT 5 {'step': 5}" in lines


def test_checkpoints_from_before_integrity_records_still_resume(tmp_path, caplog):
  saved(tmp_path, steps=(10, 20))
  for step in (10, 20):
    (tmp_path / str(step) / checkpoint_lib.INTEGRITY_FILE).unlink()
  ckpt = checkpoint_lib.Checkpointer(tmp_path, keep=2)
  with caplog.at_level(logging.WARNING, logger=checkpoint_lib.__name__):
    assert ckpt.intact_step() == 20
  assert "before integrity records" in caplog.text and ckpt.all_steps() == [10, 20]
  ckpt.close()
