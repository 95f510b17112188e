"""`config.train.profile_steps`: a jax.profiler trace of a few train steps, for TensorBoard.

    --config.train.profile_steps=10,20     # trace global steps 10..20 (1-based, inclusive)

writes `workdir/profile/plugins/profile/<run>/<host>.xplane.pb`; view it with
`tensorboard --logdir workdir/profile` (the profile tab; needs the tensorboard-plugin-profile /
xprof package where you view it, not where you train) or upload it to xprof / Perfetto. Each
traced step is a `StepTraceAnnotation`, so the tools show per-step times. Only process 0 traces.
Steps are counted over all phases (the trainer's global step), so "10,20" may straddle phases.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator

import jax

__all__ = ["parse_steps", "StepProfiler"]


def parse_steps(spec: str) -> tuple[int, int] | None:
  """'first,last' -> (first, last), 1 <= first <= last; '' -> None; else a ValueError."""
  spec = str(spec or "").strip()
  if not spec:
    return None
  try:
    first, last = (int(x) for x in spec.split(","))
  except ValueError:
    raise ValueError(f"config.train.profile_steps={spec!r}: expected 'first,last' global "
                     "steps, e.g. '10,20'") from None
  if not 1 <= first <= last:
    raise ValueError(f"config.train.profile_steps={spec!r}: need 1 <= first <= last")
  return first, last


class StepProfiler:
  """Starts a trace before step `first`, stops it after step `last` (waiting for the device)."""

  def __init__(self, spec: str, workdir: str | pathlib.Path, enabled: bool = True):
    self.window = parse_steps(spec) if enabled else None
    self.log_dir = pathlib.Path(workdir) / "profile"
    self.active = False

  @contextlib.contextmanager
  def step(self, n: int) -> Iterator[None]:
    """Wraps global step `n` (1-based): traced and annotated when inside the window."""
    if self.window is None or not self.window[0] <= n <= self.window[1]:
      yield
      return
    if not self.active:
      self.log_dir.mkdir(parents=True, exist_ok=True)
      jax.profiler.start_trace(str(self.log_dir))
      self.active = True
    with jax.profiler.StepTraceAnnotation("train", step_num=n):
      yield
    if n == self.window[1]:
      self.close()

  def close(self) -> None:
    """Stops an active trace (after the dispatched work finished, so the trace holds it)."""
    if self.active:
      jax.block_until_ready(jax.live_arrays())
      jax.profiler.stop_trace()
      self.active = False
