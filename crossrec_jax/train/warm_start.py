"""Parameters of a finished run: warm start (`model.init_from=RUN_DIR`) and the study's restore.

    params, rest = restore_params("runs/pretrain", params, rest)        # 'auto': best, else final

A finished trainer run keeps up to two kinds of checkpoints (train/trainer.py):
  * `checkpoints_best/`: {params, rest} of the best target-valid evaluation (`train.select`);
  * `checkpoints/`: the whole train state at the end of its last phase (while the run keeps it).
`params` / `rest` are this model's (its structure must match the run's: the same `model` config
up to heads that do not change shapes); they give the abstract target of the restore (their
shardings included), so the restored arrays come back placed like them.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import jax
import ml_collections

from crossrec_jax.train import checkpoint as checkpoint_lib
from crossrec_jax.train import state as state_lib

CHECKPOINTS = ("auto", "best", "final")


def _abstract(tree: Any) -> Any:
  return checkpoint_lib.abstract_like(jax.eval_shape(lambda: tree))


def restore_best(run_dir: pathlib.Path, params: Any, rest: Any) -> tuple[Any, Any]:
  """(params, rest) of `run_dir`'s selected (best target-valid) evaluation."""
  ckpt = checkpoint_lib.Checkpointer(run_dir / "checkpoints_best", keep=1)
  try:
    got = ckpt.restore_state(ckpt.latest_step(), _abstract({"params": params, "rest": rest}))
  finally:
    ckpt.close()
  return got["params"], got["rest"]


def restore_final(run_dir: pathlib.Path, params: Any, rest: Any,
                  config: ml_collections.ConfigDict | None = None) -> Any:
  """The train state at the end of `run_dir`'s last phase (an error if the run did not finish).

  The abstract state is the last phase's optimiser over `params` (`config`: the run's config;
  default: its config.json)."""
  from crossrec_jax.train import optim  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import phases as trainer  # pylint: disable=g-import-not-at-top  (validate_phases, phase_optimizer)
  if config is None:
    config = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
    config.phases = [ml_collections.ConfigDict(p) for p in config.phases]  # JSON gave dicts
  phases = trainer.validate_phases(config)
  last = len(phases) - 1
  opt = trainer.phase_optimizer(config, phases[last], optim.label_params(params),
                                f"phases[{last}]")
  state = state_lib.init_train_state(
      params, opt.tx, state_lib.make_rng(int(config.seed), last,
                                         impl=config.train.dropout_rng_impl), rest)
  ckpt = checkpoint_lib.Checkpointer(run_dir / "checkpoints", keep=1)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"{run_dir / 'checkpoints'}: no checkpoint (the run deleted it, or "
                              "never ran); warm-start from its best checkpoint or rerun it")
    meta = ckpt.restore_meta(step)
    if meta["phase_index"] != last or meta["step"] != phases[last].steps:
      raise RuntimeError(f"{run_dir}: the newest checkpoint is phase {meta['phase_index']} step "
                         f"{meta['step']}, not the end of the run")
    return ckpt.restore_state(step, _abstract(state))
  finally:
    ckpt.close()


def restore_params(run_dir: str | pathlib.Path, params: Any, rest: Any,
                   which: str = "auto") -> tuple[Any, Any]:
  """(params, rest) of the finished run `run_dir`: its 'best' or 'final' checkpoint ('auto':
  best where the run kept a selection, else final)."""
  run_dir = pathlib.Path(run_dir)
  if which not in CHECKPOINTS:
    raise ValueError(f"model.init_checkpoint={which!r}: choose one of {CHECKPOINTS}")
  if not (run_dir / "config.json").exists():
    raise FileNotFoundError(f"model.init_from={str(run_dir)!r}: not a trainer run directory "
                            "(no config.json)")
  has_best = (run_dir / "checkpoints_best").exists()
  if which == "best" or (which == "auto" and has_best):
    if not has_best:
      raise FileNotFoundError(f"model.init_from={str(run_dir)!r}: no checkpoints_best/ (the run "
                              "had no train.select); use model.init_checkpoint='final'")
    return restore_best(run_dir, params, rest)
  state = restore_final(run_dir, params, rest)
  return state.params, state.rest
