"""End to end through main.py: every experiment's tiny preset, overrides, unknown keys."""

import json
import pathlib
import re
import subprocess
import sys

import jax
import pytest
from absl import flags

from crossrec_jax import main as main_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
DANN = f"--config={REPO}/experiments/dann.py:tiny"
EXPERIMENTS = ("source_only", "target_only", "finetune", "dann", "joint", "joint_dann")
FLAGS = flags.FLAGS


def run_main(*args: str) -> None:
  """main.py's entry point in this process, flags parsed as on the command line.

  config_flags reads the `--config.*` overrides from sys.argv and defines one flag per override:
  both are reset here so that runs do not leak into each other.
  """
  argv = ["crossrec_jax.main", *args]
  for name in [n for n in FLAGS if n.startswith("config.")]:
    delattr(FLAGS, name)
  FLAGS.unparse_flags()
  saved, sys.argv = sys.argv, argv
  try:
    FLAGS(argv)
  finally:
    sys.argv = saved
  main_lib.main(["crossrec_jax.main"])


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_tiny_preset_runs_end_to_end(name, tmp_path, capsys):
  run_main(f"--config={REPO}/experiments/{name}.py:tiny", f"--workdir={tmp_path}",
           "--config.train.progress_bar=False")
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  config = json.loads((tmp_path / "config.json").read_text())
  steps = sum(p["steps"] for p in config["phases"])
  assert final["global_step"] == steps
  assert [p["phase"] for p in final["phases"]] == [p["name"] for p in config["phases"]]
  for split in ("target_valid", "target_test"):
    assert final[split]["n"] == 128.0 and 0.3 < final[split]["rmse"] < 3.0
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert lines[-1]["global_step"] == steps
  assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tensorboard").iterdir())
  printed = json.loads(capsys.readouterr().out)
  assert printed["global_step"] == steps
  # The experiment's docstring states this run's result (CPU runs are deterministic; the
  # tolerance allows for another CPU's vector instructions).
  doc = (REPO / "experiments" / f"{name}.py").read_text()
  stated = re.search(r"target_valid RMSE ([0-9.]+), MAE ([0-9.]+); target_test RMSE ([0-9.]+)",
                     doc)
  assert stated, f"experiments/{name}.py states no tiny result"
  assert abs(final["target_valid"]["rmse"] - float(stated[1])) < 0.01
  assert abs(final["target_valid"]["mae"] - float(stated[2])) < 0.01
  assert abs(final["target_test"]["rmse"] - float(stated[3])) < 0.01


def test_overrides_reach_the_config(tmp_path, monkeypatch):
  seen = {}

  def fake_train(config, workdir, *, partitioner):
    seen["config"], seen["workdir"], seen["partitioner"] = config, workdir, partitioner
    return {"global_step": 0}

  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(trainer, "train_and_evaluate", fake_train)
  run_main(f"--config={REPO}/experiments/finetune.py:cpu", f"--workdir={tmp_path}",
           "--config.optimizer.encoder.lr=3e-5", "--config.phases[1].steps=7",
           "--config.data.label_fraction=0.1", "--config.mesh.data=1", "--config.mesh.tensor=-1")
  config = seen["config"]
  # The mesh comes from config.mesh: every device on the tensor axis here.
  mesh = seen["partitioner"].mesh
  assert dict(mesh.shape) == {"data": 1, "fsdp": 1, "tensor": len(jax.devices())}
  assert config.preset == "cpu" and seen["workdir"] == str(tmp_path)
  assert config.optimizer.encoder.lr == 3e-5 and config.data.label_fraction == 0.1
  assert config.phases[1].steps == 7 and config.phases[0].steps == 500
  # Locked, phases included: a typo in code is an error naming the key.
  with pytest.raises(AttributeError, match="stepz"):
    config.phases[0].stepz = 1
  with pytest.raises(AttributeError, match="lrr"):
    config.optimizer.encoder.lrr = 1


def test_unknown_config_key_on_the_command_line_is_an_error(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "crossrec_jax.main", f"--config={REPO}/experiments/dann.py:tiny",
       f"--workdir={tmp_path}", "--config.train.learning_rate=3e-5"],
      capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
  assert result.returncode != 0
  assert "unknown config key 'learning_rate' in ['--config.train.learning_rate=3e-5']" in result.stderr
  assert 'Did you mean "log_every"' not in result.stderr  # no near key: no suggestion


def test_a_misspelt_config_key_is_one_line_with_a_suggestion(tmp_path):
  result = subprocess.run(
      [sys.executable, "-m", "crossrec_jax.main", DANN, f"--workdir={tmp_path / 'run'}",
       "--config.train.log_evry=3"],
      capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines() == [
      "FATAL: unknown config key 'log_evry' in ['--config.train.log_evry=3']. "
      'Did you mean "log_every" instead of "log_evry"?']
  assert not (tmp_path / "run").exists()
  assert not (tmp_path / "metrics.jsonl").exists()


def test_every_experiment_documents_its_command_and_result():
  for name in EXPERIMENTS:
    text = (REPO / "experiments" / f"{name}.py").read_text()
    assert f"--config=experiments/{name}.py:tiny" in text
    assert "Expected result" in text and "EXPECTED_TINY" not in text, name


# ---------------------------------------------------------------------------- one-line errors

@pytest.mark.parametrize("args,names", [
    ([DANN, "--config.train.log_every=abc"], "--config.train.log_every=abc"),
    ([f"--config={REPO}/experiments/dann.py:huge"], "unknown preset 'huge'"),
    (["--config=experiments/dan.py:tiny"], "no such file 'experiments/dan.py'"),
    ([DANN, "--config.phases[3].steps=5"], "--config.phases[3].steps=5"),
    ([DANN, "--config.train.log_every=0"], "config.train.log_every = 0"),
    ([DANN, "--config.train.log_every=-5"], "config.train.log_every = -5"),
    ([DANN, "--config.optimizer.encoder.lr=nan"], "config.optimizer.encoder.lr = nan"),
    ([DANN, "--config.phases[0].lr.encoder=inf"], "config.phases[0].lr.encoder = inf"),
    ([DANN, "--config.data.label_fraction=1.5"], "config.data.label_fraction = 1.5"),
    ([DANN, "--config.phases[0].alignment=dnn"], "phases[0].alignment: unknown alignment"),
])
def test_config_mistakes_are_one_line_exit_2_and_create_nothing(tmp_path, args, names):
  workdir = tmp_path / "run"
  result = subprocess.run([sys.executable, "-m", "crossrec_jax.main", *args,
                           f"--workdir={workdir}"],
                          capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("FATAL: ") and names in lines[0], lines
  assert "Traceback" not in result.stderr
  assert not workdir.exists()


@pytest.mark.parametrize("workdir,names", [
    (None, "--workdir is required"),
    ("FILE", "is a file, not a directory"),
    ("/proc/crossrec/run", "not writable"),  # not writable even for root
])
def test_workdir_mistakes_are_one_line_exit_2(tmp_path, workdir, names):
  args = [sys.executable, "-m", "crossrec_jax.main", DANN]
  if workdir == "FILE":
    workdir = tmp_path / "a_file"
    workdir.write_text("not a directory")
  if workdir is not None:
    args.append(f"--workdir={workdir}")
  result = subprocess.run(args, capture_output=True, text=True, cwd=REPO, timeout=300,
                          check=False)
  assert result.returncode == 2, result.stderr[-2000:]
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("FATAL: ") and names in lines[0], lines
  assert "Traceback" not in result.stderr
  if workdir is not None and str(workdir).startswith("/proc"):
    assert not pathlib.Path(workdir).exists()


@pytest.mark.slow
def test_a_failed_checkpoint_save_stops_the_run_with_one_error(tmp_path):
  workdir = tmp_path / "run"
  command = [sys.executable, "-m", "crossrec_jax.main",
             f"--config={REPO}/experiments/target_only.py:tiny", f"--workdir={workdir}",
             "--config.train.checkpoint_every=5", "--config.train.log_every=1",
             "--config.train.progress_bar=False", "--config.train.tensorboard=False"]
  # "Disk full": files over 2 MB fail with EFBIG ("File too large"); a shell sets the limit
  # (a preexec_fn would fork this multithreaded JAX process).
  result = subprocess.run(["bash", "-c", 'ulimit -f 2048 && exec "$@"', "bash", *command],
                          capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr
  errors = [l for l in result.stderr.splitlines() if not l.startswith(("I", " ", "-"))
            and ":" in l and not re.match(r"^[a-z_]+:", l)]
  assert len(errors) == 1, errors
  assert errors[0].startswith(f"FATAL: saving checkpoint 5 to {workdir / 'checkpoints' / '5'} "
                              "failed: ") and "File too large" in errors[0]
  # It stopped soon after the failed save, not at the next one (step 10).
  steps = [json.loads(l)["global_step"] for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  assert max(steps) < 10, steps
  assert not any(p.name.isdigit() for p in (workdir / "checkpoints").iterdir())
