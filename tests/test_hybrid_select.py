"""experiments/hybrid_select.py: candidates merge, and each becomes a valid-only study config."""

import pytest

from conftest import experiment_module
from crossrec_jax import config_base

select = experiment_module("hybrid_select")


def test_candidates_merge_and_unknown_names_fail():
  merged = select.candidate("init_biases+head_lr1e-3+steps800")
  assert merged["model"]["hybrid"]["init_biases"] is True
  assert merged["optimizer"]["rating_head"]["lr"] == 1e-3 and merged["__phase_steps__"] == 800
  assert select.candidate("base") == {}
  with pytest.raises(SystemExit, match="unknown candidate 'nope'"):
    select.candidate("init_biases+nope")


def test_a_candidate_is_the_demo_study_on_valid_only():
  study = select.study_config("init_biases+steps800", (1.0, 0.1), ("joint", "source_only"),
                              preset="tiny", baselines=("bias",))
  assert tuple(study.eval.which) == ("valid",) and tuple(study.seeds) == (0,)
  assert tuple(study.label_fractions) == (1.0, 0.1, 0.0)  # source_only runs at 0 only
  assert study.phase_steps == 800 and tuple(study.baselines) == ("bias",)
  assert study.run.model.hybrid.init_biases is True
  assert study.run.data.users.source == 30  # the preset's own overrides are kept
  assert "test" not in study.eval.which


def test_dev_restores_the_settings_before_the_selection(monkeypatch):
  monkeypatch.setattr(config_base, "HYBRID_STEPS",
                      {k: dict(v) for k, v in config_base.HYBRID_STEPS.items()})
  study = select.study_config("dev+init_biases", (1.0,), ("joint",), preset="cpu")
  assert config_base.HYBRID_STEPS["cpu"] == {"source": 400, "target": 400, "joint": 500}
  assert study.run.model.hybrid.init_biases is True  # the later part of the name wins
  assert study.run.train.select == "" and study.run.train.eval_every == 0
  select.study_config("base", (1.0,), ("joint",), preset="cpu")
  assert config_base.HYBRID_STEPS["cpu"] == select._PACKAGED_STEPS["cpu"]  # pylint: disable=protected-access
