"""`CompiledStep`: a jitted function that counts its traces (a retrace means a recompile).

Shared by the train step (`train/step.py`) and the tasks' evaluation steps; tests assert the
counts (one trace per phase and bucket length).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["CompiledStep"]


class CompiledStep:
  """A jitted function that counts how often JAX traces it (a retrace means a recompile)."""

  def __init__(self, fn: Callable[..., Any], **jit_kwargs: Any):
    self.num_traces = 0

    def counted(*args):
      self.num_traces += 1  # Runs at trace time only.
      return fn(*args)

    self._jitted = jax.jit(counted, **jit_kwargs)

  def __call__(self, *args):
    return self._jitted(*args)

  def lower(self, *args):
    return self._jitted.lower(*args)
