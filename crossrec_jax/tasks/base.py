"""The task Protocol: what the trainer needs from an architecture, and nothing else.

A task wires one architecture's data (`data/`), model (`models/`) and objective (`objectives/`)
for `train/trainer.py`, which sees only the members below (no model kind, no hooks):

    task = tasks.make_task(config)                       # config.model.kind picks the task
    model = task.build_model(nnx.Rngs(seed))
    batches = task.train_batches(use_source=..., use_target=..., seed=...)   # resumable
    loss, aux = task.objective(alignment)(model, {'source': src, 'target': tgt}, lam, weights,
                                          deterministic=False)
    evaluator = task.make_evaluator(graphdef, rng_state, rest, put=..., batch_sharding=...)
    rest = evaluator.refresh(params, rest)                # before every evaluation
    metrics = evaluator('target_valid', params, rest)

`Task` can be subclassed for its defaults (`refresh` is the identity, `step_flops` counts
nothing), or any class with these members works (it is a `typing.Protocol`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

import jax
import ml_collections
from flax import nnx

from crossrec_jax.data import schema
from crossrec_jax.objectives import losses

__all__ = ["Batch", "Objective", "ResumableBatches", "Evaluator", "Task", "DataTask",
           "shared_batch_keys"]

Batch = Mapping[str, Any]
# (model, batches, lam, weights, *, deterministic) -> (loss, aux metrics); `batches` holds the
# sides the phase uses ('source', 'target'), `weights` the phase's 'source', 'target', 'domain'.
Objective = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


class ResumableBatches(Protocol):
  """Endless (source batch, target batch) pairs; `get_state()` is JSON-able plain ints, and a
  fresh iterator given it with `set_state` yields exactly the batches that would have followed."""

  def __iter__(self) -> Iterator[tuple[Batch, Batch]]: ...
  def __next__(self) -> tuple[Batch, Batch]: ...
  def get_state(self) -> dict[str, int]: ...
  def set_state(self, state: Mapping[str, int]) -> None: ...


class Evaluator(Protocol):
  """`evaluator(name, params, rest) -> {metric: float}` for 'target_valid' and the
  `train.final_eval` names; the same numbers on every process of a multi-process run."""

  def __call__(self, name: str, params: Any, rest: Any) -> dict[str, float]: ...

  def refresh(self, params: Any, rest: Any) -> Any:
    """The model's non-parameter state to evaluate (and train on) with: called before every
    in-training evaluation, the train state carries on with the result (e.g. an item table
    re-encoded by the current encoder). The identity by default."""
    del params
    return rest


class Task(Protocol):
  """One architecture as the trainer sees it (module docstring)."""

  config: ml_collections.ConfigDict
  scales: Mapping[str, schema.RatingScale]   # 'source', 'target': logged batch RMSE's scale
  batch_size: int                           # source examples per step
  target_batch_size: int                    # target examples per step
  report: dict[str, Any]                    # what was loaded (final_metrics.json 'data')
  # Batch keys that are not per example (every process holds them whole; replicated on the
  # mesh, never split over its data axes). Optional: `shared_batch_keys(task)` reads it.
  shared_batch_keys: frozenset[str] = frozenset()

  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """The model from `config.model` (with whatever the data decides: a catalogue's size)."""
    ...

  def train_batches(self, *, use_source: bool, use_target: bool,
                    seed: int) -> ResumableBatches:
    """The phase's (src, tgt) batches; an unused side may repeat the other (it is not read)."""
    ...

  def objective(self, alignment: losses.Alignment) -> Objective:
    """The loss of one step of a phase that aligns with `alignment`."""
    ...

  def make_evaluator(self, graphdef: nnx.GraphDef, rng_state: nnx.State, rest: nnx.State, *,
                     put: Callable[[Any], Any], batch_sharding: Any) -> Evaluator:
    """The evaluator of this run's model (`put` places a host batch like the train batches)."""
    ...

  def step_flops(self, model: nnx.Module, alignment: losses.Alignment, use_source: bool,
                 use_target: bool) -> Callable[[Batch, Batch], float] | None:
    """`(src, tgt) -> model FLOPs of one step` for the logged TFLOP/s and MFU; None: not counted."""
    del model, alignment, use_source, use_target
    return None


def shared_batch_keys(task: Any) -> frozenset[str]:
  """`task.shared_batch_keys`, or none for a task that does not declare them."""
  return frozenset(getattr(task, "shared_batch_keys", ()))


class DataTask(Task):
  """A Task whose `scales`, batch sizes and `report` are those of its prepared `data`."""

  data: Any

  @property
  def scales(self) -> Mapping[str, Any]:
    return self.data.scales

  @property
  def batch_size(self) -> int:
    return self.data.batch_size

  @property
  def target_batch_size(self) -> int:
    return self.data.target_batch_size

  @property
  def report(self) -> dict[str, Any]:
    return self.data.report

  @property
  def sources(self) -> Mapping[str, Any]:
    """The prepared example sets (what `data/fingerprint.py` hashes with `report`)."""
    return getattr(self.data, "sources", {})
