"""A run SIGKILLed after a checkpoint and restarted ends bitwise equal to an uninterrupted run."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 400


def command(workdir: pathlib.Path, cache: pathlib.Path) -> list[str]:
  # finetune's tiny preset with phase 0 turned into joint training + DANN: the resumed phase
  # uses paired batches, dropout and gradient reversal; then a phase change with a new optimiser.
  return [sys.executable, "-m", "crossrec_jax.main",
          f"--config={REPO}/experiments/finetune.py:tiny", f"--workdir={workdir}",
          "--config.phases[0].weights.target=1.0", "--config.phases[0].weights.domain=0.1",
          "--config.phases[0].alignment=dann", "--config.train.checkpoint_every=5",
          "--config.train.progress_bar=False", f"--config.train.compilation_cache_dir={cache}"]


def checkpoints(workdir: pathlib.Path) -> list[int]:
  root = workdir / "checkpoints"
  if not root.is_dir():
    return []
  return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())  # finalised only


def final_state(workdir: pathlib.Path):
  step = max(checkpoints(workdir))
  with ocp.CheckpointManager(workdir / "checkpoints") as manager:
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return step, restored.state


def metric_keys(workdir: pathlib.Path) -> list[tuple[str, str, int]]:
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [(l["split"], l["phase"], l["global_step"]) for l in lines]


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_equal(tmp_path):
  cache = tmp_path / "xla_cache"  # shared: the three runs compile the same programs once
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  reference, resumed = tmp_path / "reference", tmp_path / "resumed"
  subprocess.run(command(reference, cache), check=True, env=env, timeout=TIMEOUT_S,
                 capture_output=True)

  proc = subprocess.Popen(command(resumed, cache), env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  deadline = time.time() + TIMEOUT_S
  while not checkpoints(resumed):
    assert proc.poll() is None, "the run ended before writing its first checkpoint"
    assert time.time() < deadline, "no checkpoint in time"
    time.sleep(0.02)
  proc.send_signal(signal.SIGKILL)
  proc.wait(timeout=60)
  killed_at = checkpoints(resumed)
  assert not (resumed / "final_metrics.json").exists(), "killed too late: the run had finished"
  assert max(killed_at) < 40

  subprocess.run(command(resumed, cache), check=True, env=env, timeout=TIMEOUT_S,
                 capture_output=True)

  step_a, state_a = final_state(reference)
  step_b, state_b = final_state(resumed)
  assert step_a == step_b == 40
  leaves_a, tree_a = jax.tree.flatten(state_a)
  leaves_b, tree_b = jax.tree.flatten(state_b)
  assert tree_a == tree_b and len(leaves_a) > 10
  for a, b in zip(leaves_a, leaves_b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()  # bitwise, not allclose
  final_a = json.loads((reference / "final_metrics.json").read_text())
  final_b = json.loads((resumed / "final_metrics.json").read_text())
  assert final_a["target_valid"] == final_b["target_valid"]
  assert final_a["target_test"] == final_b["target_test"]
  assert [p["target_valid"] for p in final_a["phases"]] == [p["target_valid"]
                                                            for p in final_b["phases"]]
  # metrics.jsonl: the steps replayed after the resume are logged once, as in the reference.
  keys_a, keys_b = metric_keys(reference), metric_keys(resumed)
  assert keys_b == keys_a and len(set(keys_b)) == len(keys_b)
