"""config.train.profile_steps: parsing, and a trace file written for the window's steps."""

import jax
import jax.numpy as jnp
import pytest

from crossrec_jax.train import profiling


def test_parse_steps():
  assert profiling.parse_steps("") is None
  assert profiling.parse_steps("10,20") == (10, 20)
  assert profiling.parse_steps(" 3,3 ") == (3, 3)
  for bad in ("10", "20,10", "0,5", "a,b", "1,2,3"):
    with pytest.raises(ValueError, match="config.train.profile_steps"):
      profiling.parse_steps(bad)


def test_trace_written_for_window_only(tmp_path):
  f = jax.jit(lambda x: jnp.tanh(x @ x))
  x = jnp.ones((32, 32))
  prof = profiling.StepProfiler("2,3", tmp_path)
  for n in range(1, 5):
    with prof.step(n):
      x = f(x)
    assert prof.active == (n == 2)  # started before step 2, stopped after step 3
  traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
  assert len(traces) == 1 and traces[0].stat().st_size > 0


def test_disabled_writes_nothing(tmp_path):
  prof = profiling.StepProfiler("1,2", tmp_path, enabled=False)
  with prof.step(1):
    pass
  prof.close()
  assert not (tmp_path / "profile").exists()
