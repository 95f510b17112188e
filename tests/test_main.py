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
CONFIGS = REPO / "crossrec_jax" / "configs"
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
  run_main(f"--config={name}:tiny", f"--workdir={tmp_path}",
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
  doc = (CONFIGS / f"{name}.py").read_text()
  stated = re.search(r"target_valid RMSE ([0-9.]+), MAE ([0-9.]+); target_test RMSE ([0-9.]+)",
                     doc)
  assert stated, f"configs/{name}.py states no tiny result"
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
  run_main(f"--config={CONFIGS}/finetune.py:cpu", f"--workdir={tmp_path}",
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
      [sys.executable, "-m", "crossrec_jax.main", "--config=dann:tiny",
       f"--workdir={tmp_path}", "--config.train.learning_rate=3e-5"],
      capture_output=True, text=True, cwd=REPO, timeout=300, check=False)
  assert result.returncode != 0
  assert "unknown config key 'learning_rate' in ['--config.train.learning_rate=3e-5']" in result.stderr
  assert not (tmp_path / "metrics.jsonl").exists()


def test_every_experiment_documents_its_command_and_result():
  for name in EXPERIMENTS:
    text = (CONFIGS / f"{name}.py").read_text()
    assert f"--config={name}:tiny" in text
    assert "Expected result" in text and "EXPECTED_TINY" not in text, name
