"""Tasks: one Protocol (`base.Task`) every architecture implements, and the registry that
`config.model.kind` selects from.

    task = tasks.make_task(config)             # or make_task(config, data=prepared)
    tasks.register_task('my_kind', MyTask)     # then --config.model.kind=my_kind

A task factory is `factory(config, data=None) -> Task` (a Task class is one); `data` reuses data
prepared earlier (tests, notebooks, studies), None prepares it from `config.data`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossrec_jax.tasks import base
from crossrec_jax.tasks import bi_encoder
from crossrec_jax.tasks import cross_encoder
from crossrec_jax.tasks import hybrid
from crossrec_jax.tasks.base import Evaluator, Objective, ResumableBatches, Task

__all__ = ["Task", "Evaluator", "Objective", "ResumableBatches", "TASKS", "register_task",
           "make_task", "base"]

TaskFactory = Callable[..., base.Task]

# config.model.kind -> task factory.
TASKS: dict[str, TaskFactory] = {
    "cross_encoder": cross_encoder.CrossEncoderTask,
    "bi_encoder": bi_encoder.BiEncoderTask,
    "hybrid": hybrid.HybridTask,
}


def register_task(name: str, factory: TaskFactory, *, overwrite: bool = False) -> TaskFactory:
  """Adds a task under `config.model.kind = name`; returns `factory` (usable as a decorator)."""
  if name in TASKS and not overwrite:
    raise ValueError(f"task {name!r} is already registered (pass overwrite=True)")
  TASKS[name] = factory
  return factory


def make_task(config: Any, data: Any = None) -> base.Task:
  """The task that `config.model.kind` names, over `data` (None: prepared from the config)."""
  kind = config.model.kind
  if kind not in TASKS:
    raise ValueError(f"model.kind={kind!r} is not a registered task; registered: {sorted(TASKS)} "
                     "(tasks.register_task adds one)")
  return TASKS[kind](config, data=data)
