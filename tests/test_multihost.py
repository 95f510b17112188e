"""Multi-process training: 2 processes x 4 CPU devices on 127.0.0.1 == 1 process x 8 devices.

Both runs train the tiny preset of experiments/joint_dann.py (its real data, model, optimiser and
train step) for a few steps on a (2, 2, 2) mesh. In the 2-process run each process loads only its
half of every global batch (`data.pipeline` slices by `jax.process_index()`), the processes meet
through `jax.distributed.initialize` (`train.distributed.maybe_initialize`, from JAX_* env vars)
and gloo CPU collectives, and write one orbax checkpoint together. The single-process run then
restores that checkpoint onto its own devices. Asserted:

  * the same per-step losses (1e-5) and the same final parameters;
  * the 2-process checkpoint restores in 1 process and equals the 1-process final state;
  * the step runs under `jax.transfer_guard('disallow')` (no implicit host<->device transfers);
  * only process 0 logs (`distributed.main_process_logger`).

The loop here is a minimal copy of trainer.py's (without its evaluation, which still gathers
predictions with `jax.device_get`: not possible across processes); every process is killed
when the test ends or times out.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

STEPS = 3
TIMEOUT_S = 240
MARKER = "MULTIHOST-FINAL-LOSS"


# ---------------------------------------------------------------------------- worker (subprocess)

def _worker(workdir: str, restore_from: str | None) -> None:
  import importlib.util  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import distributed
  distributed.maybe_initialize()  # JAX_COORDINATOR_ADDRESS etc.; no-op for one process
  import jax
  import numpy as np
  from flax import nnx
  from crossrec_jax.data import prepare
  from crossrec_jax.models import recommender
  from crossrec_jax.train import checkpoint, losses, schedules, sharding, trainer
  from crossrec_jax.train import state as state_lib
  from crossrec_jax.train import step as step_lib

  root = pathlib.Path(__file__).resolve().parents[1]
  spec = importlib.util.spec_from_file_location("joint_dann", root / "experiments/joint_dann.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("tiny")
  phase = config.phases[0]
  log = distributed.main_process_logger("multihost_test")

  data = prepare.prepare_data(config)
  build = lambda: recommender.build_recommender(config.model, rngs=nnx.Rngs(config.seed))
  # The model is built abstractly for its structure, and for real only inside the jitted init
  # (one compile instead of one per initialiser; each device materialises only its shards).
  parts = state_lib.split_model(nnx.eval_shape(build))
  opt = trainer.phase_optimizer(config, phase, trainer.optim.label_params(parts.params), "phase")
  partitioner = sharding.MeshPartitioner.from_config((2, 2, 2))
  rng = state_lib.make_rng(config.seed, 0, impl=config.train.dropout_rng_impl)
  init = lambda: state_lib.init_train_state(state_lib.split_model(build()).params, opt.tx, rng)
  state, shardings = sharding.create_sharded_state(init, partitioner.mesh, partitioner.rules)
  train_step = step_lib.make_train_step(
      parts.graphdef, parts.rng_state, opt,
      weights={k: schedules.loss_weight_schedule(phase.weights[k]) for k in phase.weights},
      lam=schedules.dann_lambda(phase.steps, phase.gamma, phase.lambda_max),
      alignment=losses.make_alignment(phase.alignment),
      rating_output=config.model.rating_head.output,
      rng_impl=config.train.dropout_rng_impl, state_sharding=shardings,
      batch_sharding=partitioner.batch_sharding())
  batches = data.train_batches(use_source=True, use_target=True, seed=config.seed)
  metrics = []
  for _ in range(STEPS):
    src, tgt = next(batches)
    local_rows = len(src["input_ids"])
    src, tgt = partitioner.put_batch(src), partitioner.put_batch(tgt)  # explicit transfers
    with jax.transfer_guard("disallow"):
      state, m = train_step(state, src, tgt)
    metrics.append(m)
  result = {"processes": jax.process_count(), "devices": jax.device_count(),
            "local_rows": local_rows,
            "losses": [float(m["loss"]) for m in metrics], "num_traces": train_step.num_traces}
  log.warning("%s %s", MARKER, result["losses"][-1])

  ckpt = checkpoint.Checkpointer(pathlib.Path(workdir) / "checkpoints")
  ckpt.save(STEPS, state, {"losses": result["losses"]})
  ckpt.close()
  if restore_from is not None:
    other = checkpoint.Checkpointer(restore_from)
    target = checkpoint.abstract_like(jax.eval_shape(lambda: state), shardings)
    restored = other.restore_state(STEPS, target)
    result["restored_losses"] = other.restore_meta(STEPS)["losses"]
    other.close()
    diffs = jax.tree.leaves(jax.tree.map(
        lambda a, b: float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
        if np.size(a) else 0.0, jax.device_get(restored), jax.device_get(state)))
    result["restored_state_diff"] = max(diffs)
  if jax.process_index() == 0:
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------- launcher

def _launch(num_processes: int, devices_per_process: int, workdir: pathlib.Path,
            restore_from: pathlib.Path | None = None) -> list[tuple[int, str, str]]:
  """Starts the processes, waits (bounded), kills any left; returns (rc, stdout, stderr)."""
  import portpicker  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(k, None)
  if num_processes > 1:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{portpicker.pick_unused_port()}",
               JAX_NUM_PROCESSES=str(num_processes))
  args = [sys.executable, __file__, str(workdir)] + ([str(restore_from)] if restore_from else [])
  ids = [{"JAX_PROCESS_ID": str(i)} if num_processes > 1 else {} for i in range(num_processes)]
  procs = [subprocess.Popen(args, env={**env, **ids[i]}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True) for i in range(num_processes)]
  results = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=TIMEOUT_S)
      results.append((p.returncode, out, err))
  finally:
    for p in procs:  # on a timeout or an error in one process, the others would wait forever
      if p.poll() is None:
        p.kill()
        p.wait()
  return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The 2-process run, then the 1-process run (which restores the 2-process checkpoint)."""
  two_dir = tmp_path_factory.mktemp("two_processes")
  two = _launch(2, 4, two_dir)
  for i, (rc, _, err) in enumerate(two):
    assert rc == 0, f"process {i} of 2 failed:\n{err[-4000:]}"
  one = _launch(1, 8, tmp_path_factory.mktemp("one_process"), two_dir / "checkpoints")
  assert one[0][0] == 0, one[0][2][-4000:]
  parse = lambda out: json.loads(out.strip().splitlines()[-1])
  return {"two": parse(two[0][1]), "one": parse(one[0][1]), "two_raw": two}


@pytest.mark.slow
def test_topologies(runs):
  assert runs["two"]["processes"] == 2 and runs["two"]["devices"] == 8
  assert runs["one"]["processes"] == 1 and runs["one"]["devices"] == 8
  # Each of the 2 processes held half of the 16-row global batch.
  assert runs["two"]["local_rows"] * 2 == runs["one"]["local_rows"] == 16


@pytest.mark.slow
def test_two_processes_train_to_the_same_loss_as_one(runs):
  two, one = runs["two"]["losses"], runs["one"]["losses"]
  assert len(two) == len(one) == STEPS
  assert two[0] != two[-1]  # it trained
  for a, b in zip(two, one):
    assert abs(a - b) < 1e-5, (two, one)
  assert runs["two"]["num_traces"] == runs["one"]["num_traces"] == 1


@pytest.mark.slow
def test_two_process_checkpoint_restores_in_one_process(runs):
  assert runs["one"]["restored_losses"] == runs["two"]["losses"]
  assert runs["one"]["restored_state_diff"] < 1e-5


@pytest.mark.slow
def test_only_process_zero_logs(runs):
  (_, out0, err0), (_, out1, err1) = runs["two_raw"]
  assert MARKER in err0 and MARKER not in err1
  # Results printed by process 0 only (gloo itself prints "[Gloo] Rank 1 is connected...").
  assert any(l.startswith("{") for l in out0.splitlines())
  assert not any(l.startswith("{") for l in out1.splitlines())


# ---------------------------------------------------------------------------- in-process checks

@pytest.fixture
def no_jax_env(monkeypatch):
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    monkeypatch.delenv(k, raising=False)


def test_single_process_needs_no_initialisation(no_jax_env):
  from crossrec_jax.train import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.maybe_initialize() is False


def test_partial_settings_name_what_is_missing(no_jax_env, monkeypatch):
  from crossrec_jax.train import distributed  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
  with pytest.raises(ValueError, match=r"--num_processes \(or \$JAX_NUM_PROCESSES\)"):
    distributed.maybe_initialize(process_id=0)
  with pytest.raises(ValueError, match=r"--process_id=2 must be in \[0, --num_processes=2\)"):
    distributed.maybe_initialize(num_processes=2, process_id=2)


def test_flags_parse_and_default_to_a_single_process(no_jax_env):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import distributed
  fv = flags.FlagValues()
  distributed.add_distributed_flags(fv)
  distributed.add_distributed_flags(fv)  # idempotent
  fv(["prog", "--num_processes=2", "--process_id=1"])
  assert (fv.num_processes, fv.process_id, fv.coordinator_address) == (2, 1, None)
  with pytest.raises(ValueError, match="--coordinator_address"):
    distributed.initialize_from_flags(fv)
  fv2 = flags.FlagValues()
  distributed.add_distributed_flags(fv2)
  fv2(["prog"])
  assert distributed.initialize_from_flags(fv2) is False


def test_main_process_logger_passes_records_in_process_zero(caplog):
  import logging  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import distributed
  log = distributed.main_process_logger("crossrec_test_main_only")
  assert distributed.main_process_logger("crossrec_test_main_only").filters == log.filters
  with caplog.at_level(logging.INFO, logger="crossrec_test_main_only"):
    log.info("hello from process 0")
  assert distributed.is_main_process()
  assert "hello from process 0" in caplog.text


if __name__ == "__main__":
  sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
  _worker(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None)
