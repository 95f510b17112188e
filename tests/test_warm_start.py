"""Warm start from a finished run (`model.init_from`, train/warm_start.py) and selection on any
evaluator metric, lower-is-better ones included (`train.select`, train/selection.py)."""

import json

import pytest

from crossrec_jax import config_base
from crossrec_jax.data import prepare
from crossrec_jax.train import selection
from crossrec_jax.train import trainer


@pytest.fixture(scope="module")
def tiny_data():
  return prepare.prepare_data(config_base.base_config("tiny"))


def tiny(steps, **train):
  config = config_base.base_config("tiny")
  config.phases = [config_base.phase("target", steps, target=1.0)]
  config.train.update(dict(progress_bar=False, tensorboard=False, **train))
  return config


def valid_evals(workdir):
  lines = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  return [l for l in lines if l["split"] == "target_valid" and l.get("phase") != "final"]


def test_selection_direction_follows_the_metric():
  assert selection.improves("rmse", 0.9, 1.0) and not selection.improves("rmse", 1.1, 1.0)
  assert selection.improves("NDCG@10", 0.3, 0.2) and selection.improves("target_valid/auc", 0.7, 0.6)
  assert not selection.improves("auc", 0.6, 0.6)  # ties keep the earlier evaluation


@pytest.mark.slow
def test_select_rmse_keeps_the_lowest_and_auc_is_selectable(tmp_path, tiny_data):
  config = tiny(8, eval_every=2, checkpoint_every=0, select="rmse", final_eval=("target_test",))
  for group in config_base.GROUPS:
    config.optimizer[group].lr = 3e-3  # big steps: the valid RMSE moves between evaluations
  final = trainer.train_and_evaluate(config, tmp_path / "rmse", data=tiny_data)
  rmses = [l["rmse"] for l in valid_evals(tmp_path / "rmse")]
  assert len(set(rmses)) > 1
  assert final["selected"]["value"] == pytest.approx(min(rmses))
  config.train.select = "auc"  # the trainer's target-valid evaluation reports AUC
  final = trainer.train_and_evaluate(config, tmp_path / "auc", data=tiny_data)
  aucs = [l["auc"] for l in valid_evals(tmp_path / "auc")]
  assert final["selected"]["value"] == pytest.approx(max(aucs)) and 0.0 <= max(aucs) <= 1.0


@pytest.mark.slow
def test_init_from_restores_the_best_or_the_final_parameters(tmp_path, tiny_data):
  first = tiny(6, eval_every=2, checkpoint_every=0, select="rmse", final_eval=("target_test",))
  for group in config_base.GROUPS:
    first.optimizer[group].lr = 3e-3
  done = trainer.train_and_evaluate(first, tmp_path / "first", data=tiny_data)
  last_valid = valid_evals(tmp_path / "first")[-1]["rmse"]

  def warm(which):
    config = tiny(1, checkpoint_every=0, final_eval=("target_valid", "target_test"))
    config.model.init_from = str(tmp_path / "first")
    config.model.init_checkpoint = which
    for group in config_base.GROUPS:
      config.optimizer[group].lr = 0.0  # one step that changes nothing: evaluate the start
    return trainer.train_and_evaluate(config, tmp_path / which, data=tiny_data)

  best = warm("best")
  assert best["target_test"]["rmse"] == pytest.approx(done["target_test"]["rmse"], rel=1e-5)
  assert best["target_valid"]["rmse"] == pytest.approx(done["selected"]["value"], rel=1e-5)
  final = warm("final")
  assert final["target_valid"]["rmse"] == pytest.approx(last_valid, rel=1e-5)
  with pytest.raises(FileNotFoundError, match="not a trainer run directory"):
    config = tiny(1)
    config.model.init_from = str(tmp_path / "nowhere")
    trainer.train_and_evaluate(config, tmp_path / "bad", data=tiny_data)
