"""The bi-encoder through `python -m crossrec_jax.main`: the packaged `bi_*` configs take the
same `--config=NAME:PRESET` form and `--config.key=value` overrides as every other config."""

import json

import pytest

from test_main import run_main

# The bi-encoder configs the suite runs through main.py at their tiny preset (test_readme checks
# that every README/docs command `--config=bi_...:tiny` is one of them).
CONFIGS = ("bi_joint",)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONFIGS)
def test_tiny_bi_encoder_config_runs_end_to_end_through_main(name, tmp_path, capsys):
  run_main(f"--config={name}:tiny", f"--workdir={tmp_path}", "--config.train.tensorboard=False",
           "--config.model.bi_encoder.temperature=0.5")
  config = json.loads((tmp_path / "config.json").read_text())
  assert config["model"]["kind"] == "bi_encoder" and config["method"] == name[len("bi_"):]
  assert config["model"]["bi_encoder"]["temperature"] == 0.5
  final = json.loads((tmp_path / "final_metrics.json").read_text())
  assert final["global_step"] == sum(p["steps"] for p in config["phases"])
  for split in ("target_valid", "target_test"):  # full ranking over the target catalogue
    assert 0.0 <= final[split]["NDCG@10"] <= 1.0 and final[split]["Recall@10"] > 0.0
  printed = json.loads(capsys.readouterr().out)
  assert printed["global_step"] == final["global_step"]
