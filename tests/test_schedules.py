"""Tests for crossrec_jax.train.schedules."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from crossrec_jax.train.schedules import dann_lambda, loss_weight_schedule


def test_dann_lambda_matches_formula():
  sched = dann_lambda(200, gamma=10.0, max_value=0.5)
  for step in [0, 1, 50, 100, 199, 200, 500]:
    p = min(step / 200, 1.0)
    np.testing.assert_allclose(sched(step), 0.5 * (2 / (1 + np.exp(-10 * p)) - 1), rtol=1e-6,
                               atol=1e-7)
  assert float(sched(0)) == 0.0
  assert float(sched(10_000)) == float(sched(200))  # clipped at the end of the phase


def test_dann_lambda_traced_step_no_retrace():
  traces = []

  @jax.jit
  def f(step):
    traces.append(1)
    return dann_lambda(100)(step)

  vals = [float(f(jnp.int32(s))) for s in (0, 10, 50, 100)]
  assert len(traces) == 1
  assert vals == sorted(vals) and vals[0] == 0.0 and vals[-1] > 0.99


def test_dann_lambda_rejects_nonpositive_total():
  with pytest.raises(ValueError, match="total_steps"):
    dann_lambda(0)


@pytest.mark.parametrize("spec,expected", [
    (0.3, {0: 0.3, 1000: 0.3}),
    ({"kind": "constant", "value": 2.0}, {0: 2.0, 7: 2.0}),
    ({"kind": "linear", "init_value": 0.0, "end_value": 1.0, "transition_steps": 10},
     {0: 0.0, 5: 0.5, 10: 1.0, 99: 1.0}),
    ({"kind": "linear", "init_value": 1.0, "end_value": 0.0, "transition_steps": 4,
      "transition_begin": 2}, {0: 1.0, 2: 1.0, 4: 0.5, 6: 0.0}),
    ({"kind": "cosine", "init_value": 2.0, "decay_steps": 10}, {0: 2.0, 5: 1.0, 10: 0.0}),
    ({"kind": "cosine", "init_value": 1.0, "decay_steps": 10, "alpha": 0.2}, {10: 0.2}),
    ({"kind": "dann", "total_steps": 10}, {0: 0.0, 10: 2 / (1 + np.exp(-10)) - 1}),
    ({"kind": "piecewise", "boundaries": [3, 6], "values": [0.0, 0.5, 1.0]},
     {0: 0.0, 2: 0.0, 3: 0.5, 5: 0.5, 6: 1.0, 60: 1.0}),
])
def test_loss_weight_schedule_kinds(spec, expected):
  sched = loss_weight_schedule(spec)
  jitted = jax.jit(sched)
  for step, want in expected.items():
    np.testing.assert_allclose(sched(step), want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(jitted(jnp.int32(step)), want, rtol=1e-5, atol=1e-6)


def test_configdict_and_callable_specs():
  cd = ml_collections.ConfigDict({"kind": "linear", "init_value": 0.0, "end_value": 2.0,
                                  "transition_steps": 4})
  np.testing.assert_allclose(loss_weight_schedule(cd)(2), 1.0)
  fn = lambda step: step * 0.1
  assert loss_weight_schedule(fn) is fn


@pytest.mark.parametrize("spec,pattern", [
    ({"kind": "cosin", "init_value": 1.0, "decay_steps": 5}, r"w\.kind: unknown schedule kind 'cosin'"),
    ({"kind": "linear", "init_value": 0.0, "end_value": 1.0, "transition_steps": 5, "steps": 3},
     r"w: unknown key\(s\) \['steps'\]"),
    ({"kind": "dann"}, r"w: missing key\(s\) \['total_steps'\]"),
    ({"init_value": 1.0}, r"w\.kind: unknown schedule kind None"),
    ("0.5", "expected a number"),
    (True, "expected a number"),
    ([0.1], "expected a number"),
    ({"kind": "linear", "init_value": 0.0, "end_value": 1.0, "transition_steps": 0},
     "transition_steps must be positive"),
    ({"kind": "piecewise", "boundaries": [5, 2], "values": [0, 1, 2]}, "increasing"),
    ({"kind": "piecewise", "boundaries": [5], "values": [0, 1, 2]}, "len\\(values\\)"),
])
def test_bad_specs_name_the_key(spec, pattern):
  with pytest.raises(ValueError, match=pattern):
    loss_weight_schedule(spec, name="w")
