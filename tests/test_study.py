"""End-to-end test of the transfer study (crossrec_jax/study/, also importable as eval.study) on its
`tiny` preset, plus its pure parts."""

import csv

import numpy as np
import pytest

from crossrec_jax.eval import study


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
  config = study.load_experiment("transfer_study", "tiny")
  workdir = tmp_path_factory.mktemp("study")
  lines = []
  md = study.run_study(config, workdir, log=lines.append)
  return config, workdir, md, lines


def test_cells_follow_the_label_rules():
  config = study.load_experiment("transfer_study", "cpu")
  grid = study.cells(config)
  lm = {(m, f) for k, m, f, _ in grid if k == "lm"}
  assert ("target_only", 0.0) not in lm and ("target_only", 0.1) in lm
  assert ("dann", 0.0) in lm and ("dann", 1.0) not in lm  # label-free: 0% only
  base = {(m, f) for k, m, f, _ in grid if k == "baseline"}
  assert ("mf", 0.0) not in base and ("title_prior", 0.0) in base and ("popularity", 0.0) in base
  assert len({s for *_, s in grid}) >= 3


@pytest.mark.slow
def test_tiny_study_end_to_end(tiny_study, monkeypatch):
  config, workdir, md, lines = tiny_study
  for name in ("results.csv", "results.md", "learning_curves.png", "pca_features.png",
               "test_rmse_vs_labels.png", "test_HR10_vs_labels.png"):
    path = workdir / name
    assert path.exists() and path.stat().st_size > 1000 or name.endswith((".csv", ".md")), name
  with open(workdir / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  expected = {(k, m, f, s) for k, m, f, s in study.cells(config)}
  assert {(r["kind"], r["method"], float(r["label_fraction"]), int(r["seed"])) for r in rows} == expected
  assert len(rows) == len(expected)
  for r in rows:
    if r["method"] != "popularity":
      assert np.isfinite(float(r["test/rmse"])) and float(r["test/rmse"]) > 0
    assert 0 <= float(r["test/HR@10"]) <= 1
  # The header says what was truncated; each table marks its best cell per column.
  assert "random BERT, 2 layers, hidden 64" in md and "max_len 64" in md and "users subsampled" in md
  assert "| test/rmse (lower is better) | 100% labels | 0% labels |" in md
  assert md.count("**") >= 4 and "proxy A-distance" in md
  assert sum(line.lstrip().startswith(("target_only", "dann")) for line in lines) == 2
  # The header reports the rating rows every cell scored (the cap draws whole users: fewer).
  scored = {int(float(r["test/n_ratings"])) for r in rows if r["test/n_ratings"]}
  assert len(scored) == 1 and f"rating on {scored.pop()} target test ratings" in md
  # One progress line per run that ran: 'run k of N, elapsed, ETA'.
  progress = [line for line in lines if line.startswith("[run ")]
  assert len(progress) == len(expected) and progress[-1].startswith(f"[run {len(expected)} of "
                                                                     f"{len(expected)}, elapsed")
  assert "ETA" in progress[-1]
  # Re-invoking reuses every finished run: training must not be called again.
  from crossrec_jax.train import trainer
  monkeypatch.setattr(trainer, "train_and_evaluate", lambda *a, **k: pytest.fail("retrained"))
  again = study.run_study(config, workdir, log=lambda line: pytest.fail(f"reran: {line}"))
  strip = lambda text: [l for l in text.splitlines() if "wall time" not in l]
  assert strip(again) == strip(md)


def test_markdown_table_marks_the_best_mean():
  rows = [{"method": "a", "kind": "lm", "label_fraction": 1.0, "seed": s, "test/rmse": v}
          for s, v in enumerate((1.0, 1.2))]
  rows += [{"method": "b", "kind": "baseline", "label_fraction": 1.0, "seed": s, "test/rmse": 0.9}
           for s in range(2)]
  rows += [{"method": "a", "kind": "lm", "label_fraction": 1.0, "seed": s, "test/auc": v}
           for s, v in enumerate((0.7, 0.8))]
  table = study.markdown_table(rows, "test/rmse", [1.0])
  assert "| a | 1.1000 ± 0.1000 |" in table and "| b (baseline) | **0.9000 ± 0.0000** |" in table
  auc = study.markdown_table(rows, "test/auc", [1.0])
  assert "**0.7500 ± 0.0500**" in auc and "higher is better" in auc


def test_run_config_applies_overrides_and_rejects_unknown_keys(tmp_path):
  config = study.load_experiment("transfer_study", "cpu")
  run = study.run_config(config, "finetune", 0.1, 2, tmp_path)
  assert run.seed == 2 and run.data.label_fraction == 0.1 and run.data.max_len == 40
  assert [p.steps for p in run.phases] == [config.phase_steps] * 2
  assert run.model.encoder.num_layers == 1 and run.train.compilation_cache_dir.endswith("xla_cache")
  config.run.data.no_such_key = 1
  with pytest.raises(KeyError, match="study.run.data.no_such_key"):
    study.run_config(config, "finetune", 0.1, 2, tmp_path)
  with pytest.raises(FileNotFoundError, match="no_such_method"):
    study.load_experiment("no_such_method", "cpu")


@pytest.mark.slow
def test_protocol_matches_the_trainers_own_rating_eval(tmp_path):
  """The study's Evaluator and the cross-encoder task's rating evaluation agree on RMSE/MAE over
  the same target test rows."""
  from crossrec_jax.tasks import cross_encoder as ce_task
  config = study.load_experiment("transfer_study", "tiny")
  config.eval.update(dict(rating_rows=0, num_negatives=0, cold_start=False))
  run = study.run_config(config, "target_only", 1.0, 0, tmp_path)
  run.data.max_examples.target_test = 0  # every test row, as the Evaluator's plan
  cell = study.Cell(config, 1.0, 0, run)
  eval_step, params = study.initial_model(run)
  ours = cell.evaluator(study.evaluate.score_fn_from_eval_step(eval_step, params))
  theirs = ce_task.evaluate(eval_step, params, cell.prepared.eval_batches("target_test"),
                            cell.prepared.scales["target"])
  assert ours["test/n_ratings"] == theirs["n"] == len(cell.split.test)
  assert ours["test/rmse"] == pytest.approx(theirs["rmse"], rel=1e-5)
  assert ours["test/mae"] == pytest.approx(theirs["mae"], rel=1e-5)


def test_verdict_compares_the_best_transfer_method():
  rows = [{"method": m, "kind": k, "label_fraction": 0.1, "seed": s, "test/rmse": v + 0.01 * s}
          for m, k, v in (("dann", "lm", 1.00), ("joint", "lm", 1.05), ("target_only", "lm", 1.20),
                          ("mf", "baseline", 0.90), ("bias", "baseline", 1.005))
          for s in range(2)]
  text = study.verdict(rows, "test/rmse", [0.1], ["dann", "joint"], ["target_only", "mf", "bias"])
  assert "best transfer method dann 1.0050 ± 0.0050" in text
  assert "better than target_only" in text and "worse than mf" in text and "tied with bias" in text
