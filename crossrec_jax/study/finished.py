"""What a finished trainer run gives back to the study.

Two ways, one per kind of scoring:
  * `final_metrics(run_dir)`: what the run's own evaluator wrote (final_metrics.json: the test
    metrics of the selected parameters). Task-agnostic: any architecture whose task evaluates
    'target_test' at the end of its run is scored this way (the bi-encoder).
  * `restore_final(config, run_dir)`: the parameters at the end of the last phase, restored into
    the cross-encoder's eval step, for the study's feature panels; `restore_selected`: the best
    target-valid evaluation's parameters when the run selects (`train.select`), else the final
    ones, for the study's own protocol (`study/cell.Cell.score`).
"""

from __future__ import annotations

import json
import pathlib

import ml_collections


def final_metrics(run_dir: pathlib.Path, split: str = "target_test",
                  prefix: str = "test/") -> dict[str, float]:
  """`split`'s metrics in `run_dir`/final_metrics.json, keys prefixed (e.g. 'test/NDCG@10')."""
  path = pathlib.Path(run_dir) / "final_metrics.json"
  if not path.exists():
    raise FileNotFoundError(f"{path}: not a finished run (the trainer writes it at the end)")
  final = json.loads(path.read_text())
  if split not in final:
    raise KeyError(f"{path}: has no {split!r} evaluation (has {sorted(final)}); the run's "
                   "train.final_eval must include it")
  return {f"{prefix}{k}": float(v) for k, v in final[split].items()
          if isinstance(v, (int, float))}


def build_model(config: ml_collections.ConfigDict, data=None):
  """The untrained model of `config.model.kind`: the cross-encoder directly, any other kind
  through its task (over `data`, the run's prepared data, when the caller has it)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from crossrec_jax.models import recommender as recommender_lib  # pylint: disable=g-import-not-at-top
  # ID tables need the domains' counts, which the task has (over the prepared data).
  if config.model.kind == "cross_encoder" and not recommender_lib.uses_ids(config.model):
    return recommender_lib.build_recommender(config.model, rngs=nnx.Rngs(int(config.seed)))
  from crossrec_jax import tasks  # pylint: disable=g-import-not-at-top
  return tasks.make_task(config, data=data).build_model(nnx.Rngs(int(config.seed)))


def _restored(config: ml_collections.ConfigDict, data, restore):
  """(eval_step, params) of the model `config` builds, its parameters and non-trainable state
  replaced by `restore(params, rest) -> (params, rest)`."""
  from crossrec_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.tasks import cross_encoder as ce_task  # pylint: disable=g-import-not-at-top
  model = build_model(config, data)
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  params, rest = restore(params, rest)
  return ce_task.make_eval_step(graphdef, rng_state, rest,
                                rating_output=model.rating_output), params


def restore_final(config: ml_collections.ConfigDict, run_dir: pathlib.Path, data=None):
  """(eval_step, params) of a finished trainer run, from its last checkpoint.

  The model is rebuilt from the config (`data`: the run's prepared data, which a task other than
  the cross-encoder builds its model from; None prepares it again); `train/warm_start.
  restore_final` restores the train state at the end of the last phase into it.
  """
  from crossrec_jax.train import warm_start  # pylint: disable=g-import-not-at-top

  def last(params, rest):
    state = warm_start.restore_final(pathlib.Path(run_dir), params, rest, config)
    return state.params, state.rest
  return _restored(config, data, last)


def restore_selected(config: ml_collections.ConfigDict, run_dir: pathlib.Path, data=None):
  """(eval_step, params) of the parameters the run selected: its best target-valid evaluation
  (`checkpoints_best/`) when it ran with `train.select`, else its last checkpoint
  (`restore_final`). What the study scores: selection on valid, never on test."""
  run_dir = pathlib.Path(run_dir)
  if not str(config.train.get("select", "")) or not (run_dir / "checkpoints_best").exists():
    return restore_final(config, run_dir, data)
  from crossrec_jax.train import warm_start  # pylint: disable=g-import-not-at-top
  return _restored(config, data, lambda params, rest: warm_start.restore_best(run_dir, params, rest))


def initial_model(config: ml_collections.ConfigDict, data=None):
  """(eval_step, params) of the untrained model (pretrained encoder, fresh heads)."""
  return _restored(config, data, lambda params, rest: (params, rest))

