"""Fault injection: damage each kind of file in the newest checkpoint of a tiny run; the rerun
falls back to the newest intact checkpoint and finishes bitwise equal to the uninterrupted run.

One uninterrupted reference run is shared by every case (module fixture); each case copies its
workdir, damages checkpoint 6 (the last of 2, 4, 6), and runs the same config again in it.
"""

import json
import logging
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from crossrec_jax import config_base
from crossrec_jax.data import prepare
from crossrec_jax.train import checkpoint as checkpoint_lib
from crossrec_jax.train import trainer
from crossrec_jax.train.metric_writer import line_key

from test_checkpoint import damage

STEPS = 6


def tiny_config(cache):
  config = config_base.base_config("tiny")
  config.phases = [config_base.phase("target", STEPS, target=1.0)]
  config.train.update(dict(progress_bar=False, tensorboard=False, log_every=2, checkpoint_every=2,
                           keep_checkpoints=3, compilation_cache_dir=str(cache)))
  return config


def final_state(workdir):
  with ocp.CheckpointManager(workdir / "checkpoints") as manager:
    restored = manager.restore(STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return restored.state


def metric_keys(workdir):
  return [line_key(json.loads(l)) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """(data, config, workdir) of one uninterrupted run with checkpoints 2, 4 and 6."""
  root = tmp_path_factory.mktemp("faults")
  config = tiny_config(root / "xla_cache")
  data = prepare.prepare_data(config)
  trainer.train_and_evaluate(config, root / "reference", data=data)
  assert sorted(int(p.name) for p in (root / "reference" / "checkpoints").iterdir()) == [2, 4, 6]
  return data, config, root / "reference"


def newest_file(workdir, target):
  ck = workdir / "checkpoints" / str(STEPS)
  if target.startswith("state data"):  # the array files of the OCDBT store, largest first
    files = sorted((p for p in (ck / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
                   key=lambda p: -p.stat().st_size)
    assert len(files) >= 2
    return files[0] if target == "state data (largest)" else files[-1]
  return ck / target


@pytest.mark.slow
@pytest.mark.parametrize("target,how", [
    ("state data (largest)", "overwrite"),  # the word embeddings: silent garbage before
    ("state data (largest)", "truncate"),
    ("state data (smallest)", "delete"),
    ("state/_METADATA", "truncate"),
    ("meta/metadata", "truncate"),
    (checkpoint_lib.INTEGRITY_FILE, "delete"),
    (checkpoint_lib.INTEGRITY_FILE, "overwrite"),
    ("state", "delete"),
])
def test_damaged_newest_checkpoint_falls_back_and_finishes_bitwise(reference, tmp_path, caplog,
                                                                   target, how):
  data, config, ref = reference
  run = tmp_path / "run"
  shutil.copytree(ref, run)
  (run / "final_metrics.json").unlink()
  damage(newest_file(run, target), how)
  with caplog.at_level(logging.WARNING, logger=checkpoint_lib.__name__):
    trainer.train_and_evaluate(config, run, data=data)
  warnings = [r.getMessage() for r in caplog.records
              if r.name == checkpoint_lib.__name__ and r.levelno == logging.WARNING]
  assert len(warnings) == 1, warnings
  assert f"checkpoint {STEPS} in {run / 'checkpoints'}" in warnings[0]
  assert "resuming from checkpoint 4" in warnings[0]
  kept = [p.name for p in (run / "checkpoints").iterdir() if p.name.startswith(f"{STEPS}.corrupt")]
  assert len(kept) == 1
  leaves_a, tree_a = jax.tree.flatten(final_state(ref))
  leaves_b, tree_b = jax.tree.flatten(final_state(run))
  assert tree_a == tree_b and len(leaves_a) > 10
  for a, b in zip(leaves_a, leaves_b):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()  # bitwise
  final_a = json.loads((ref / "final_metrics.json").read_text())
  final_b = json.loads((run / "final_metrics.json").read_text())
  assert final_a["target_valid"] == final_b["target_valid"]
  assert final_a["target_test"] == final_b["target_test"]
  keys = metric_keys(run)
  assert keys == metric_keys(ref) and len(keys) == len(set(keys))


@pytest.mark.slow
def test_every_checkpoint_damaged_is_one_error_naming_the_directory(reference, tmp_path):
  data, config, ref = reference
  run = tmp_path / "run"
  shutil.copytree(ref, run)
  for step in (2, 4, 6):
    damage(run / "checkpoints" / str(step) / "meta" / "metadata", "truncate")
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=rf"no intact checkpoint in {run / 'checkpoints'}: 6: .*; 4: .*; 2: "):
    trainer.train_and_evaluate(config, run, data=data)


@pytest.mark.slow
def test_a_damaged_best_checkpoint_is_one_error_naming_its_directory(reference, tmp_path):
  data, config, _ = reference
  config = config.copy_and_resolve_references()
  config.train.update(dict(select="target_valid/n", eval_every=2))  # n is constant: one best
  run = tmp_path / "run"
  trainer.train_and_evaluate(config, run, data=data)
  best = run / "checkpoints_best"
  assert [p.name for p in best.iterdir()] == ["1"]
  damage(best / "1" / "meta" / "metadata", "truncate")
  with pytest.raises(checkpoint_lib.CheckpointError,
                     match=rf"no intact checkpoint in {best}: 1: meta/metadata has"):
    trainer.train_and_evaluate(config, run, data=data)
