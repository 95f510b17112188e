"""Schedules of the step: the DANN reversal ramp and loss-weight schedules built from config specs.

Every schedule is an optax-style `step -> value` function built from jnp ops, so it takes a
traced step inside jit (one compiled step serves a whole phase).

Spec forms accepted by `loss_weight_schedule` (a dict or an ml_collections ConfigDict):
    0.5                                                         constant
    {'kind': 'constant', 'value': 0.5}
    {'kind': 'linear', 'init_value': 0., 'end_value': 1., 'transition_steps': 1000,
     'transition_begin': 0}                                     (then held at end_value)
    {'kind': 'cosine', 'init_value': 1., 'decay_steps': 1000, 'alpha': 0.}
                                                                (to alpha * init_value)
    {'kind': 'dann', 'total_steps': 1000, 'gamma': 10., 'max_value': 1.}
    {'kind': 'piecewise', 'boundaries': [100, 500], 'values': [0., 0.5, 1.]}
                                                                (values[i] on [b[i-1], b[i]))
Keys without a default above ('transition_begin', 'alpha', 'gamma', 'max_value' have one) are
required. A callable is returned unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["dann_lambda", "loss_weight_schedule", "SCHEDULE_KINDS"]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]


def dann_lambda(total_steps: int, gamma: float = 10.0, max_value: float = 1.0) -> Schedule:
  """The DANN ramp (Ganin et al. 2016): lam(step) = max_value * (2 / (1 + exp(-gamma p)) - 1).

  p = clip(step / total_steps, 0, 1) is the phase progress: lam rises from 0 at step 0 to
  ~max_value (0.9999 * max_value for gamma=10) at total_steps, and stays there.
  """
  if int(total_steps) <= 0:
    raise ValueError(f"dann_lambda: total_steps must be positive, got {total_steps}")
  total = float(total_steps)

  def schedule(step: jax.typing.ArrayLike) -> jax.Array:
    p = jnp.clip(jnp.asarray(step, jnp.float32) / total, 0.0, 1.0)
    return max_value * (2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0)

  return schedule


def _piecewise(boundaries, values) -> Schedule:
  boundaries = [int(b) for b in boundaries]
  if len(values) != len(boundaries) + 1:
    raise ValueError(f"needs len(values) == len(boundaries) + 1, got {len(values)} values and "
                     f"{len(boundaries)} boundaries")
  if boundaries != sorted(boundaries):
    raise ValueError(f"boundaries must be increasing, got {boundaries}")
  return optax.join_schedules([optax.constant_schedule(float(v)) for v in values], boundaries)


def _linear(init_value, end_value, transition_steps, transition_begin=0) -> Schedule:
  # optax silently returns a constant init_value for transition_steps <= 0: refuse instead.
  if int(transition_steps) <= 0:
    raise ValueError(f"transition_steps must be positive, got {transition_steps}")
  return optax.linear_schedule(float(init_value), float(end_value), int(transition_steps),
                               int(transition_begin))


def _cosine(init_value, decay_steps, alpha=0.0) -> Schedule:
  if int(decay_steps) <= 0:
    raise ValueError(f"decay_steps must be positive, got {decay_steps}")
  return optax.cosine_decay_schedule(float(init_value), int(decay_steps), float(alpha))


# kind -> (builder, required keys, optional keys with defaults)
_BUILDERS: dict[str, tuple[Callable[..., Schedule], tuple[str, ...], dict[str, Any]]] = {
    "constant": (lambda value: optax.constant_schedule(float(value)), ("value",), {}),
    "linear": (_linear, ("init_value", "end_value", "transition_steps"),
               {"transition_begin": 0}),
    "cosine": (_cosine, ("init_value", "decay_steps"), {"alpha": 0.0}),
    "dann": (dann_lambda, ("total_steps",), {"gamma": 10.0, "max_value": 1.0}),
    "piecewise": (_piecewise, ("boundaries", "values"), {}),
}
SCHEDULE_KINDS = tuple(_BUILDERS)


def loss_weight_schedule(spec: Any, name: str = "schedule") -> Schedule:
  """Builds a jit-friendly `step -> weight` schedule from a config spec (see module docstring).

  Args:
    spec: a number, a callable, or a mapping/ConfigDict with 'kind' and that kind's keys.
    name: where the spec sits in the config (e.g. 'phases[2].weights.domain'), used in errors.

  Raises:
    ValueError: naming `name` and the bad, missing or unknown key.
  """
  if callable(spec):
    return spec
  if isinstance(spec, (bool, str)):  # bool is an int; a str is a typo'd spec, not a number
    raise ValueError(f"{name}: expected a number or a {{'kind': ...}} mapping, got {spec!r}")
  if isinstance(spec, (int, float)):
    return optax.constant_schedule(float(spec))
  if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict
    spec = spec.to_dict()
  if not isinstance(spec, Mapping):
    raise ValueError(f"{name}: expected a number or a {{'kind': ...}} mapping, got {type(spec).__name__}")
  spec = dict(spec)
  kind = spec.pop("kind", None)
  if kind not in _BUILDERS:
    raise ValueError(f"{name}.kind: unknown schedule kind {kind!r}; choose one of {list(SCHEDULE_KINDS)}")
  builder, required, optional = _BUILDERS[kind]
  unknown = sorted(set(spec) - set(required) - set(optional))
  if unknown:
    raise ValueError(f"{name}: unknown key(s) {unknown} for kind {kind!r}; allowed: "
                     f"{list(required) + list(optional)}")
  missing = [k for k in required if k not in spec]
  if missing:
    raise ValueError(f"{name}: missing key(s) {missing} for kind {kind!r}")
  try:
    return builder(**{**optional, **spec})
  except (TypeError, ValueError) as e:
    raise ValueError(f"{name} (kind {kind!r}): {e}") from None
