"""Tests for train/metric_writer.py: one metrics.jsonl line per (split, phase, step), across
any number of resumes, and a line cut by a kill does not corrupt the next one."""

import json

from crossrec_jax.train.metric_writer import MetricWriter


def lines(workdir):
  return [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]


def run(workdir, steps, phase="target"):
  """A run that logs train lines at `steps`, then its phase-end and final evaluations."""
  writer = MetricWriter(workdir, tensorboard=False)
  for s in steps:
    writer.write("train", s, {"phase": phase, "step": s}, {"loss": 1.0 / s})
  writer.write("target_valid", steps[-1], {"phase": phase, "step": steps[-1]}, {"rmse": 1.0})
  writer.write("target_valid", steps[-1], {"phase": "final"}, {"rmse": 0.9})
  writer.close()


def test_replayed_lines_after_resumes_are_written_once(tmp_path):
  writer = MetricWriter(tmp_path, tensorboard=False)
  for s in (5, 10, 15):  # killed after step 15; the checkpoint was at 10
    writer.write("train", s, {"phase": "target", "step": s}, {"loss": 1.0 / s})
  writer.close()
  for _ in range(3):  # three resumes from checkpoint 10, the last one finishes
    run(tmp_path, [15, 20])
  got = lines(tmp_path)
  keys = [(l["split"], l["phase"], l["global_step"]) for l in got]
  assert keys == [("train", "target", 5), ("train", "target", 10), ("train", "target", 15),
                  ("train", "target", 20), ("target_valid", "target", 20),
                  ("target_valid", "final", 20)]


def test_a_line_cut_by_a_kill_is_dropped(tmp_path):
  (tmp_path / "metrics.jsonl").write_text(
      '{"split": "train", "global_step": 5, "phase": "t"}\n{"split": "train", "glo')
  writer = MetricWriter(tmp_path, tensorboard=False)
  writer.write("train", 10, {"phase": "t"}, {"loss": 0.5})
  writer.close()
  assert [l["global_step"] for l in lines(tmp_path)] == [5, 10]


def test_a_disabled_writer_writes_nothing(tmp_path):
  writer = MetricWriter(tmp_path, tensorboard=True, enabled=False)
  writer.write("train", 1, {}, {"loss": 1.0})
  writer.close()
  assert not list(tmp_path.iterdir())
