"""The run's metrics log: `workdir/metrics.jsonl` (one JSON object a line) and TensorBoard.

A resumed run replays the steps between its checkpoint and the point where the previous process
died, and would write their lines again. The writer therefore reads the lines already in the
file and writes a line only when its key -- (split, phase, global_step) -- is new, so the file
holds each line once after any number of resumes (the replayed values are bitwise the same, so
the first copy stands). `phase` is part of the key because the final evaluation ('final') and
the last phase's end both evaluate target_valid at the last global step.

A line cut short by a kill (no final newline) is dropped when the file is opened again, so the
next line does not glue onto it.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

__all__ = ["MetricWriter", "line_key"]


def line_key(line: dict[str, Any]) -> tuple[str, str, int]:
  """What makes a metrics line unique in a run: (split, phase, global_step)."""
  return (str(line.get("split")), str(line.get("phase")), int(line.get("global_step", -1)))


def _written_keys(path: pathlib.Path) -> set[tuple[str, str, int]]:
  """Keys of the complete lines in `path`; an unterminated last line is cut off the file."""
  if not path.exists():
    return set()
  data = path.read_bytes()
  end = data.rfind(b"\n") + 1
  if end < len(data):  # killed mid-write: drop the partial line
    with open(path, "r+b") as f:
      f.truncate(end)
  keys = set()
  for raw in data[:end].splitlines():
    try:
      keys.add(line_key(json.loads(raw)))
    except (ValueError, TypeError):
      continue  # not ours to judge (plots.read_metrics_jsonl names bad lines)
  return keys


class MetricWriter:
  """Appends metrics to `workdir/metrics.jsonl` and (optionally) TensorBoard event files.

  `enabled=False` (every process but 0 of a multi-process run) writes nothing.
  """

  def __init__(self, workdir: pathlib.Path, tensorboard: bool = True, enabled: bool = True):
    self._jsonl = None
    self._tb = None
    self._seen: set[tuple[str, str, int]] = set()
    if not enabled:
      return
    path = pathlib.Path(workdir) / "metrics.jsonl"
    self._seen = _written_keys(path)
    self._jsonl = open(path, "a", encoding="utf-8")  # pylint: disable=consider-using-with
    if tensorboard:
      from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
      self._tb = SummaryWriter(str(pathlib.Path(workdir) / "tensorboard"))

  def write(self, split: str, global_step: int, info: dict[str, Any],
            scalars: dict[str, float]) -> None:
    if self._jsonl is None:
      return
    line = {"split": split, "global_step": int(global_step), **info,
            **{k: float(v) for k, v in scalars.items()}}
    key = line_key(line)
    if key in self._seen:  # replayed after a resume: already logged
      return
    self._seen.add(key)
    self._jsonl.write(json.dumps(line) + "\n")
    self._jsonl.flush()
    if self._tb is not None:
      for k, v in scalars.items():
        self._tb.add_scalar(f"{split}/{k}", float(v), int(global_step))

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._tb is not None:
      self._tb.close()
