"""Multi-process training: 2 processes x 4 CPU devices on 127.0.0.1 == 1 process x 8 devices.

The real command line (`python -m crossrec_jax.main`) trains the tiny preset of
the packaged joint_dann config (its data, model, optimiser, phase loop, evaluation, checkpoints) for
a few steps on a (2, 2, 2) mesh, two ways at once:

  * two processes x 4 devices, joined through `--coordinator_address / --num_processes /
    --process_id` (main.py -> `train.distributed`) and gloo CPU collectives, one shared workdir;
  * one process x 8 devices.

Asserted: the same per-step losses (1e-5) and evaluation metrics, one compile of the step,
only process 0 writing metrics / printing / logging, and the checkpoints written once by the
two processes together. (Restoring a checkpoint onto another mesh is
tests/test_sharding_equivalence.py's.) The trainer runs every step under `jax.transfer_guard('disallow')`
and evaluates by gathering predictions across processes, so both are exercised here. Every
process is killed when the test ends or times out.
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 4
TIMEOUT_S = 240
PATCHED_TASK_MAIN = REPO / "tests" / "fixtures" / "patched_task_main.py"
# Longer than the 30 s that XLA's CPU (gloo) collectives wait for a peer to join a communicator.
LATE_PROCESS_DELAY_S = 40
MESH_LINE = "mesh {{'data': 2, 'fsdp': 2, 'tensor': 2}} over 8 devices in {} processes"


def _args(workdir: pathlib.Path, config: str) -> list[str]:
  return [sys.executable, "-m", "crossrec_jax.main",
          f"--config={config}", f"--workdir={workdir}",
          "--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2",
          f"--config.phases[0].steps={STEPS}", "--config.train.log_every=1",
          "--config.train.checkpoint_every=2", "--config.train.keep_checkpoints=3",
          "--config.train.progress_bar=False", "--config.train.tensorboard=False"]


def _start(num_processes: int, devices_per_process: int, workdir: pathlib.Path,
           config: str = "joint_dann:tiny", patch: dict[int, str] | None = None,
           ) -> list[tuple[subprocess.Popen, pathlib.Path]]:
  """Starts the processes of one run (a free coordinator port for more than one).

  `patch` {process: 'delay=SECONDS' | 'fail'}: that process builds its task so much later, or
  fails to build it (tests/fixtures/patched_task_main.py).

  Each process writes stdout and stderr to files beside the workdir, not to pipes: a pipe read
  one process at a time lets another's fill up and block it inside a collective, which then
  blocks every process. PYTHONFAULTHANDLER makes SIGABRT print every thread's Python stack,
  which `_wait` asks for when the run overruns.
  """
  import portpicker  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONFAULTHANDLER="1",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}")
  for k in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
    env.pop(k, None)
  extra = [[] for _ in range(num_processes)]
  if num_processes > 1:
    address = f"127.0.0.1:{portpicker.pick_unused_port()}"
    extra = [[f"--coordinator_address={address}", f"--num_processes={num_processes}",
              f"--process_id={i}"] for i in range(num_processes)]
  started = []
  for i in range(num_processes):
    log = workdir.parent / f"{workdir.name}.process{i}"
    args = _args(workdir, config) + extra[i]
    if i in (patch or {}):
      args = [sys.executable, str(PATCHED_TASK_MAIN), patch[i]] + args[3:]
    with open(f"{log}.out", "w") as out, open(f"{log}.err", "w") as err:
      started.append((subprocess.Popen(args, env=env, cwd=REPO,
                                       stdout=out, stderr=err, stdin=subprocess.DEVNULL), log))
  return started


def _read(log: pathlib.Path) -> tuple[str, str]:
  return pathlib.Path(f"{log}.out").read_text(), pathlib.Path(f"{log}.err").read_text()


def _wait(procs: list[tuple[subprocess.Popen, pathlib.Path]], must_succeed: bool = True,
          ) -> list[tuple[int, str, str]]:
  """(rc, stdout, stderr) of every process, waiting at most TIMEOUT_S in all; with
  `must_succeed`, every rc must be 0.

  On an overrun every process still running is made to print its Python stacks (SIGABRT under
  PYTHONFAULTHANDLER), then killed, and the test fails showing them: a hang names where it hung.
  """
  deadline = time.monotonic() + TIMEOUT_S
  try:
    for p, _ in procs:
      try:
        p.wait(timeout=max(1.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        break
    hung = [i for i, (p, _) in enumerate(procs) if p.poll() is None]
    for i in hung:
      procs[i][0].send_signal(signal.SIGABRT)
    for i in hung:
      try:
        procs[i][0].wait(timeout=10)
      except subprocess.TimeoutExpired:
        pass
    if hung:
      stacks = "\n".join(f"--- process {i} of {len(procs)}, stderr tail:\n{_read(procs[i][1])[1][-6000:]}"
                         for i in hung)
      pytest.fail(f"{len(hung)} of {len(procs)} processes still running after {TIMEOUT_S} s:\n{stacks}")
  finally:
    for p, _ in procs:  # on a timeout or an error in one process, the others would wait forever
      if p.poll() is None:
        p.kill()
        p.wait()
  results = [(p.returncode, *_read(log)) for p, log in procs]
  for i, (rc, _, err) in enumerate(results):
    assert rc == 0 or not must_succeed, f"process {i} of {len(procs)} failed:\n{err[-4000:]}"
  return results


def _train_lines(workdir: pathlib.Path) -> list[dict]:
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l for l in lines if l["split"] == "train"]


def _both_runs(tmp_path_factory, config: str) -> dict:
  """Both runs at once (three processes): the wall time of one, on a 2-core CPU."""
  name = config.split(":")[0]
  dirs = {"two": tmp_path_factory.mktemp(f"{name}_two_processes"),
          "one": tmp_path_factory.mktemp(f"{name}_one_process")}
  procs = {"two": _start(2, 4, dirs["two"], config), "one": _start(1, 8, dirs["one"], config)}
  try:
    raw = {name: _wait(p) for name, p in procs.items()}
  finally:
    for p, _ in procs["one"]:  # when the two-process run failed first
      if p.poll() is None:
        p.kill()
        p.wait()
  return {"dirs": dirs, "raw": raw}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  return _both_runs(tmp_path_factory, "joint_dann:tiny")


@pytest.mark.slow
def test_two_process_bi_encoder_trains_as_one(tmp_path_factory):
  """The bi-encoder's batches carry keys that are not per row (the catalogue rows every process
  holds whole): replicated, not concatenated over processes (once, the softmax saw every item
  twice and the loss was log 2 higher)."""
  bi = _both_runs(tmp_path_factory, "bi_joint:tiny")
  two, one = _train_lines(bi["dirs"]["two"]), _train_lines(bi["dirs"]["one"])
  assert len(two) == len(one) >= STEPS
  for a, b in zip(two, one):
    assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)


@pytest.mark.slow
def test_a_process_that_builds_its_task_late_is_waited_for(tmp_path_factory):
  """Process 1 reaches the first collective 40 s after process 0 (as after an item-vector
  cache miss beside a hit, the stop-21 CI failure): without the trainer's barrier, process 0's
  gloo communicator times out after 30 s and the run hangs."""
  workdir = tmp_path_factory.mktemp("late_process")
  _wait(_start(2, 4, workdir, "bi_joint:tiny", patch={1: f"delay={LATE_PROCESS_DELAY_S}"}))
  assert [l["step"] for l in _train_lines(workdir)] == list(range(1, STEPS + 1))


@pytest.mark.slow
def test_a_process_that_fails_ends_the_run(tmp_path_factory):
  """Process 1 fails while process 0 waits for it at the trainer's first barrier: process 1
  exits at once with its error (not waiting in jax's shutdown for a peer that never comes),
  and process 0 is ended by the coordination service instead of waiting out the barrier's
  30 minutes (once, a failed process left the job hanging)."""
  workdir = tmp_path_factory.mktemp("failed_process")
  start = time.monotonic()
  (rc0, _, err0), (rc1, _, err1) = _wait(_start(2, 4, workdir, "target_only:tiny",
                                                patch={1: "fail"}), must_succeed=False)
  assert rc1 == 1, err1[-4000:]
  assert "process 1 of 2 failed:" in err1 and "fails to build (on purpose)" in err1, err1[-4000:]
  assert rc0 != 0, err0[-4000:]
  assert time.monotonic() - start < TIMEOUT_S


@pytest.mark.slow
def test_topologies(runs):
  (_, _, err0), (_, _, err1) = runs["raw"]["two"]
  assert MESH_LINE.format(2) in err0 and "mesh {" not in err1
  assert MESH_LINE.format(1) in runs["raw"]["one"][0][2]


@pytest.mark.slow
def test_two_processes_train_to_the_same_loss_as_one(runs):
  two, one = _train_lines(runs["dirs"]["two"]), _train_lines(runs["dirs"]["one"])
  assert [l["step"] for l in two] == [l["step"] for l in one] == list(range(1, STEPS + 1))
  assert two[0]["loss"] != two[-1]["loss"]  # it trained
  for a, b in zip(two, one):
    assert abs(a["loss"] - b["loss"]) < 1e-5, (a, b)
    assert abs(a["grad_norm"] - b["grad_norm"]) < 1e-4, (a, b)
  assert all(l["tflops_per_s"] > 0 and "mfu" not in l for l in two)  # no peak for a CPU
  final_two = json.loads((runs["dirs"]["two"] / "final_metrics.json").read_text())
  final_one = json.loads((runs["dirs"]["one"] / "final_metrics.json").read_text())
  assert final_two["phases"][0]["step_traces"] == final_one["phases"][0]["step_traces"] == 1
  # Evaluation gathers every process's rows: all 128 examples, the same metrics.
  for split in ("target_valid", "target_test"):
    assert final_two[split]["n"] == final_one[split]["n"] == 128.0
    assert abs(final_two[split]["rmse"] - final_one[split]["rmse"]) < 1e-4


@pytest.mark.slow
def test_two_processes_write_one_checkpoint(runs):
  # orbax writes each checkpoint once, cooperatively: the steps of checkpoint_every=2.
  steps = sorted(int(p.name) for p in (runs["dirs"]["two"] / "checkpoints").iterdir()
                 if p.name.isdigit())
  assert steps == [2, STEPS]


@pytest.mark.slow
def test_only_process_zero_writes_and_prints(runs):
  (_, out0, _), (_, out1, _) = runs["raw"]["two"]
  # One line per step in the shared workdir, not one per process.
  assert len(_train_lines(runs["dirs"]["two"])) == STEPS
  # The summary is printed by process 0 only (gloo itself prints "[Gloo] Rank 1 is connected").
  assert json.loads(out0[out0.index("{"):])["global_step"] == STEPS
  assert "{" not in out1


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
  log = distributed.main_process_logger("crossrec_jax.test_main_only")
  assert distributed.main_process_logger("crossrec_jax.test_main_only").filters == log.filters
  with caplog.at_level(logging.INFO, logger="crossrec_jax.test_main_only"):
    log.info("hello from process 0")
  assert distributed.is_main_process()
  assert "hello from process 0" in caplog.text
