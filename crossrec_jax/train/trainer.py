"""The training loop: the config's phases in order, with evaluation, logging and checkpoints.

    final = train_and_evaluate(config, workdir)

Each phase (`config.phases[i]`, see `config_base.phase`) gets its own optimiser (per-group
learning rates, frozen groups), loss-weight and lambda schedules and one compiled train step;
parameters carry over from phase to phase, the optimiser state only with `reset_optimizer=False`.

Outputs in `workdir`: `metrics.jsonl` (one JSON line per log interval and per evaluation),
TensorBoard event files under `tensorboard/`, orbax checkpoints under `checkpoints/` (every
`train.checkpoint_every` steps and at the end of every phase), with `train.select` the best
target-valid parameters under `checkpoints_best/`, `config.json`, and `final_metrics.json`.
Running again with the same workdir resumes from the newest checkpoint: the phase, the step
within it, the data iterator position and the RNG, so that on CPU the final parameters are
bitwise those of an uninterrupted run (tests/test_resume.py).

Scale-out: with a `sharding.MeshPartitioner` (main.py builds one from `config.mesh`) each
phase's state is created already sharded (`sharding.create_sharded_state`), batches are put on
the mesh one step ahead (`pipeline.DevicePrefetch`), the loop runs under `jax.set_mesh` (so the
encoder's `constrain` hints apply) and every train step under `jax.transfer_guard("disallow")`:
a hidden host<->device transfer inside the loop is an error, not a slowdown. In a multi-process
run every process runs this same loop on its slice of each batch, and only process 0 writes
metrics.jsonl, TensorBoard, config.json and final_metrics.json. Each log line carries
`tflops_per_s` (analytic model FLOPs, `train/flops.py`) and, where the chip's peak is known,
`mfu`.

A non-finite loss (or gradient / parameter norm) stops the run with `NonFiniteLossError` naming
the phase and step. The host
looks at the metrics every `train.log_every` steps (every step with
`train.check_finite_every_step`) and always before writing a checkpoint, so no checkpoint ever
holds a state that followed a NaN: the newest checkpoint is the last good one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import pathlib
import time
from typing import Any, Callable, Protocol

import jax
import ml_collections
import numpy as np
from flax import nnx
from jax.experimental import multihost_utils

from crossrec_jax import config_base
from crossrec_jax.data import fingerprint as fingerprint_lib
from crossrec_jax.data import pipeline
from crossrec_jax.data import prepare as prepare_lib
from crossrec_jax.eval import metrics as metrics_lib
from crossrec_jax.models import bert as bert_lib
from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.train import checkpoint as checkpoint_lib
from crossrec_jax.train import distributed
from crossrec_jax.train import flops as flops_lib
from crossrec_jax.train import losses
from crossrec_jax.train.metric_writer import MetricWriter
from crossrec_jax.train import optim
from crossrec_jax.train import profiling
from crossrec_jax.train import schedules
from crossrec_jax.train import selection
from crossrec_jax.train import sharding
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib
from crossrec_jax.train import warm_start

__all__ = ["NonFiniteLossError", "Partitioner", "config_hash", "optimizer_groups",
           "validate_phases", "phase_optimizer", "phase_alignment", "phase_uses", "selection_metric",
           "evaluate", "MetricWriter", "train_and_evaluate"]

_log = distributed.main_process_logger(__name__)
# train.* keys that do not change the trajectory: a resumed run may change them.
RUNTIME_KEYS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints",
                "check_finite_every_step", "final_eval", "progress_bar", "tensorboard",
                "compilation_cache_dir", "profile_steps")
# Top-level keys a resumed run may change: the mesh (a checkpoint restores onto any mesh; the
# trajectory then agrees to float rounding, tests/test_sharding_equivalence.py).
RUNTIME_SECTIONS = ("mesh",)
# Batches put on device ahead of the running step.
PREFETCH = 2
# Metrics averaged over a log interval; the others (lambda, weights, lrs) are logged as of its end.
_AVERAGED = ("loss", "rmse", "domain_acc", "grad_norm", "n_labelled")
# Checked every flush: a finite loss with overflowed parameters (param_norm inf) is caught at the
# step that produced them, before they reach a checkpoint.
_FINITE = ("loss", "grad_norm", "param_norm")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message names the phase, the step and the checkpoint."""


class Partitioner(Protocol):
  """Hook for `train/sharding.py`: where the state and batches live. None = one device."""

  def state_sharding(self, abstract_state: Any) -> Any: ...
  def batch_sharding(self) -> Any: ...
  def put_batch(self, batch: Any) -> Any: ...


# ---------------------------------------------------------------------------- config helpers

def config_hash(config: ml_collections.ConfigDict) -> str:
  """sha256 of the config minus `RUNTIME_KEYS` (what a resumed run must not change)."""
  d = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_SECTIONS}
  d["train"] = {k: v for k, v in d.get("train", {}).items() if k not in RUNTIME_KEYS}
  return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(d, dict):
    out = {}
    for k, v in d.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out
  if isinstance(d, (list, tuple)) and any(isinstance(v, dict) for v in d):
    out = {}
    for i, v in enumerate(d):
      out.update(_flat(v, f"{prefix[:-1]}[{i}]."))
    return out
  return {prefix[:-1]: d}


def _config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
  a, b = _flat(json.loads(json.dumps(old, default=str))), _flat(json.loads(json.dumps(new, default=str)))
  return sorted(k for k in set(a) | set(b)
                if a.get(k) != b.get(k) and not any(k == f"train.{r}" for r in RUNTIME_KEYS)
                and k.split(".")[0] not in RUNTIME_SECTIONS)


def optimizer_groups(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The run's optimiser groups: `config_base.GROUPS` plus every other section of
  `config.optimizer` (a model kind's own groups, e.g. the bi-encoder's item_tower, user_tower).

  A group is the model's top-level attribute of the same name (`optim.label_params`).
  """
  extra = sorted(k for k, v in config.optimizer.items()
                 if isinstance(v, ml_collections.ConfigDict) and k not in config_base.GROUPS)
  return tuple(config_base.GROUPS) + tuple(extra)


def selection_metric(config: ml_collections.ConfigDict) -> str | None:
  """The target-valid metric of `train.select` ('NDCG@10' or 'target_valid/NDCG@10'); None = ''."""
  select = str(config.train.get("select", "") or "")
  if not select:
    return None
  split, _, metric = select.rpartition("/")
  if split not in ("", "target_valid") or not metric:
    raise ValueError(f"train.select={select!r}: give a target-valid metric, 'METRIC' or "
                     "'target_valid/METRIC' (e.g. 'NDCG@10'), or '' for the last parameters")
  return metric


def validate_phases(config: ml_collections.ConfigDict) -> list[ml_collections.ConfigDict]:
  """The phases, checked: unknown keys, groups and alignments are errors naming `phases[i].key`."""
  groups = optimizer_groups(config)
  phases = list(config.phases)
  if not phases:
    raise ValueError("config.phases is empty: an experiment must define at least one phase")
  names = set()
  for i, p in enumerate(phases):
    where = f"phases[{i}]"
    if not isinstance(p, ml_collections.ConfigDict):
      raise ValueError(f"{where} must be a ConfigDict (use config_base.phase(...)), got {type(p)}")
    unknown = sorted(set(p.keys()) - set(config_base.PHASE_KEYS))
    if unknown:
      raise ValueError(f"{where}: unknown key(s) {[f'{where}.{k}' for k in unknown]}; "
                       f"allowed: {list(config_base.PHASE_KEYS)}")
    missing = sorted(set(config_base.PHASE_KEYS) - set(p.keys()))
    if missing:
      raise ValueError(f"{where}: missing key(s) {missing} (build phases with config_base.phase)")
    if p.name in names:
      raise ValueError(f"{where}.name: duplicate phase name {p.name!r}")
    names.add(p.name)
    if not isinstance(p.steps, int) or p.steps < 1:
      raise ValueError(f"{where}.steps must be a positive int, got {p.steps!r}")
    for key, allowed in (("weights", ("source", "target", "domain")), ("lr", groups)):
      extra = sorted(set(p[key].keys()) - set(allowed))
      if extra:
        raise ValueError(f"{where}.{key}: unknown key(s) {extra}; allowed: {list(allowed)}")
    bad = sorted(set(p.frozen) - set(groups))
    if bad:
      raise ValueError(f"{where}.frozen: unknown group(s) {bad}; groups: {list(groups)}")
    try:
      losses.make_alignment(p.alignment, **p.alignment_options.to_dict())
    except ValueError as e:
      raise ValueError(f"{where}.alignment: {e}") from None
    for k in ("source", "target", "domain"):
      schedules.loss_weight_schedule(p.weights[k], name=f"{where}.weights.{k}")
    if not any(not _is_zero(p.weights[k]) for k in ("source", "target", "domain")):
      raise ValueError(f"{where}.weights: every loss weight is 0, the phase would train nothing")
  return phases


def _is_zero(spec: Any) -> bool:
  return isinstance(spec, (int, float)) and not isinstance(spec, bool) and spec == 0


def phase_alignment(phase: ml_collections.ConfigDict) -> losses.Alignment:
  """The phase's alignment; 'none' when its domain weight is a constant 0 (nothing to compute)."""
  if _is_zero(phase.weights.domain):
    return losses.make_alignment("none")
  return losses.make_alignment(phase.alignment, **phase.alignment_options.to_dict())


def phase_uses(phase: ml_collections.ConfigDict) -> tuple[bool, bool]:
  """(use_source, use_target): a side is skipped when its weight is a constant 0 and the
  phase aligns nothing."""
  align = phase_alignment(phase).kind != "none"
  return (align or not _is_zero(phase.weights.source),
          align or not _is_zero(phase.weights.target))


def phase_optimizer(config: ml_collections.ConfigDict, phase: ml_collections.ConfigDict,
                    labels: Any, where: str) -> optim.Optimizer:
  """The phase's per-group AdamW: `config.optimizer` with the phase's lrs and frozen groups.

  A group no parameter is labelled with (`labels`) is frozen too: it has nothing to update
  (e.g. the encoder of a bi-encoder on cached item vectors, `model.bi_encoder.cached_only`),
  so it keeps no Adam state and logs lr 0.
  """
  present = set(jax.tree.leaves(labels))
  groups = {}
  for g in optimizer_groups(config):
    d = config.optimizer[g].to_dict()
    if phase.lr.get(g, 0.0) > 0:
      d["lr"] = float(phase.lr[g])
    if d["decay"] == "constant":
      d["decay_steps"] = None
    elif not d["decay_steps"]:
      d["decay_steps"] = int(phase.steps)
    d["frozen"] = g in phase.frozen or g not in present
    groups[g] = optim.GroupConfig.from_dict(d, where=f"optimizer.{g} (in {where})")
  return optim.make_optimizer(labels, groups, max_grad_norm=config.optimizer.max_grad_norm or None)


# ---------------------------------------------------------------------------- evaluation

def evaluate(eval_step: Callable[..., dict[str, jax.Array]], params: Any, batches: Any,
             scale: Any, put: Callable[[Any], Any] = lambda b: b,
             rest: Any = None) -> dict[str, float]:
  """Rating RMSE / MAE (and AUC of like = rating above the scale's midpoint, where both classes
  occur) on the domain's own scale over every valid row of `batches`.

  `rest`: the model's non-parameter state to evaluate with (None: the eval step's own).

  Multi-process: each process holds its slice of every batch; the predictions and the batch's
  ratings are gathered into global rows (the same order for both: they share the batch
  sharding), so every process computes the metrics over all rows.
  """
  preds, truth = [], []
  for batch in batches:
    placed = put(batch)
    out = eval_step(params, placed, rest)
    # A plain jax.device_get fails on arrays that span other processes' devices.
    got = multihost_utils.process_allgather(
        {"pred": out["rating"], "rating": placed["rating"], "valid": placed["valid"]}, tiled=True)
    valid = np.asarray(got["valid"]) > 0
    preds.append(np.asarray(got["pred"])[valid])
    truth.append(np.asarray(got["rating"])[valid])
  pred, true = np.concatenate(preds), np.concatenate(truth)
  result = {"n": float(len(pred))}
  if scale.implicit:  # every row is a positive: rating errors mean nothing (see eval/evaluate.py)
    result["mean_prediction"] = float(pred.mean())
    return result
  pred = scale.denormalise(pred)
  result.update(rmse=metrics_lib.rmse(pred, true), mae=metrics_lib.mae(pred, true))
  like = true > 0.5 * (scale.low + scale.high)  # as eval/evaluate.py's default AUC threshold
  if like.any() and not like.all():  # AUC needs both classes (`train.select='auc'`)
    result["auc"] = metrics_lib.auc(pred, like)
  return result


# ---------------------------------------------------------------------------- the loop

def _meta(phase_index: int, phase: Any, step: int, global_step: int, data_state: Any,
          phase_results: list[dict[str, Any]], chash: str,
          config: ml_collections.ConfigDict) -> dict[str, Any]:
  return {"phase_index": phase_index, "phase_name": phase.name, "step": step,
          "global_step": global_step, "data_state": {k: int(v) for k, v in data_state.items()},
          "phase_results": phase_results, "config_hash": chash,
          "config": json.loads(config.to_json_best_effort())}


def _reduce(pending: list[dict[str, np.ndarray]]) -> dict[str, float]:
  out = {}
  for k in pending[-1]:
    if k.startswith(_AVERAGED):
      out[k] = float(np.mean([m[k] for m in pending]))
    else:
      out[k] = float(pending[-1][k])
  return out


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | pathlib.Path, *,
                       partitioner: Partitioner | None = None,
                       data: prepare_lib.PreparedData | None = None) -> dict[str, Any]:
  """Runs (or resumes) every phase of `config` in `workdir`; returns the final metrics.

  `partitioner` places state and batches on a mesh (train/sharding.py; main.py passes
  `MeshPartitioner.from_config(config.mesh)`); None = the default device.
  `data` reuses already prepared data (tests, notebooks); default `prepare_data(config)`.
  Besides the `prepare.PreparedData` interface the loop uses (`train_batches`, `batch_size`,
  `target_batch_size`, `scales`, `report`, and `eval_batches` / `scale_of` for the rating
  evaluation), `data` may provide two optional hooks (`data/bi_prepare.py` does):
    * `build_model(config.model, rngs=)` -> the model (e.g. sized to a catalogue, with its item
      table installed); default `recommender.build_recommender`.
    * `make_evaluator(graphdef, rng_state)` -> `evaluate(name, params, rest) -> {metric: float}`
      for 'target_valid' and the `train.final_eval` names, instead of the rating RMSE / MAE. An
      evaluator with `refresh_rest(params, rest) -> rest` has it called before every in-training
      evaluation, and the train state carries on with the returned `rest` (a re-encoded item
      table).
  With `train.select` (e.g. 'NDCG@10') the parameters of the best target-valid evaluation of
  the whole run (strictly greater wins) are kept in `checkpoints_best/` (with the value and where
  in its meta, so a resumed run still knows them), and `train.final_eval` evaluates them;
  final_metrics.json records `selected_at` (the last step without `train.select`).
  """
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  tc = config.train
  if tc.compilation_cache_dir:
    jax.config.update("jax_compilation_cache_dir", str(tc.compilation_cache_dir))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  phases = validate_phases(config)
  select = selection_metric(config)
  chash = config_hash(config)
  seed = int(config.seed)
  t_start = time.time()
  main_process = distributed.is_main_process()

  # ---------------------------------------------------------------------- checkpoints, resume
  ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints", keep=int(tc.keep_checkpoints))
  resume_step = ckpt.intact_step()  # damaged newer ones are set aside (checkpoint.py)
  meta = None
  if resume_step is not None:
    meta = ckpt.restore_meta(resume_step)
    if meta["config_hash"] != chash:
      diff = _config_diff(meta.get("config", {}), json.loads(config.to_json_best_effort()))
      raise ValueError(f"{workdir} holds a run with another config (differing keys: {diff}); "
                       "resume with the same config, or use a new --workdir")
    _log.info("resuming from checkpoint %d: phase %d (%s), step %d", resume_step,
              meta["phase_index"], meta["phase_name"], meta["step"])
  # The best target-valid parameters so far (train.select): their own checkpoint, numbered by
  # save count (monotonic across resumes), the metric value and where in its meta.
  best_ckpt, best, best_saves = None, None, 0
  if select is not None:
    best_ckpt = checkpoint_lib.Checkpointer(workdir / "checkpoints_best", keep=1)
    best_saves = best_ckpt.intact_step() or 0
    if best_saves:
      best = best_ckpt.restore_meta()
      if best["config_hash"] != chash:
        raise ValueError(f"{workdir / 'checkpoints_best'} holds the selection of a run with "
                         "another config; resume with the same config, or use a new --workdir")
  if main_process:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))

  # ---------------------------------------------------------------------- data and model
  if data is None:
    data = prepare_lib.prepare_data(config)
  # The data actually used (data/fingerprint.py): a resume on other tables is an error.
  fingerprint = fingerprint_lib.data_fingerprint(data)
  for record, ckpt_dir in ((meta, "checkpoints"), (best, "checkpoints_best")):
    if record is not None and record.get("data_fingerprint", fingerprint) != fingerprint:
      raise ValueError(
          f"{workdir / ckpt_dir} was trained on data {record['data_fingerprint']} (source "
          f"{record.get('config', {}).get('data', {}).get('source', '?')!r}); this run prepared "
          f"data {fingerprint} (source {config.data.source!r}) under the same config: resume on "
          "the same data, or use a new --workdir")
  build_model = getattr(data, "build_model", None) or recommender_lib.build_recommender
  model = build_model(config.model, rngs=nnx.Rngs(seed))
  rating_output = model.rating_output
  enc_cfg = getattr(getattr(model, "encoder", None), "config", None)
  if config.model.kind != "cross_encoder" or not isinstance(enc_cfg, bert_lib.BertConfig):
    enc_cfg = None  # FLOPs are counted for the cross-encoder only (train/flops.py)
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  del model  # its arrays are donated by the first step; only the split parts live on
  if config.model.get("init_from", ""):  # warm start from a finished run (train/warm_start.py)
    params, rest = warm_start.restore_params(config.model.init_from, params, rest,
                                             str(config.model.get("init_checkpoint", "auto")))
  labels = optim.label_params(params, {g: g for g in optimizer_groups(config)})
  # Explicit transfers (the train step runs under a transfer guard): onto the mesh, or onto
  # the default device without a partitioner.
  put = partitioner.put_batch if partitioner is not None else jax.device_put
  batch_sharding = partitioner.batch_sharding() if partitioner is not None else None
  mesh = getattr(partitioner, "mesh", None)
  peak, _ = flops_lib.peak_flops()
  eval_step = step_lib.make_eval_step(graphdef, rng_state, rest, rating_output=rating_output,
                                      batch_sharding=batch_sharding)
  make_evaluator = getattr(data, "make_evaluator", None)
  evaluator = make_evaluator(graphdef, rng_state) if make_evaluator is not None else None
  refresh_rest = getattr(evaluator, "refresh_rest", None)

  def run_eval(name: str, params_: Any, rest_: Any) -> dict[str, float]:
    if evaluator is not None:
      return evaluator(name, params_, rest_)
    return evaluate(eval_step, params_, data.eval_batches(name), data.scale_of(name), put, rest_)

  def eval_valid(state_: Any, where_: dict[str, Any], info_: dict[str, Any]) -> tuple[Any, Any]:
    """Target-valid evaluation of `state_` (logged; a new best is checkpointed)."""
    nonlocal best, best_saves
    if refresh_rest is not None:
      state_ = state_.replace(rest=refresh_rest(state_.params, state_.rest))
    result_ = run_eval("target_valid", state_.params, state_.rest)
    writer.write("target_valid", where_["global_step"], {**info_, "step": where_["step"]},
                 result_)
    if select is not None:
      if select not in result_:
        raise ValueError(f"train.select={config.train.select!r}: the target-valid evaluation "
                         f"reports {sorted(result_)}, not {select!r}")
      value = float(result_[select])
      if best is None or selection.improves(select, value, best["value"]):
        best = {"metric": select, "value": value, "where": where_, "target_valid": result_,
                "config_hash": chash, "data_fingerprint": fingerprint}
        best_saves += 1  # counted here: the previous save may still be in flight
        best_ckpt.save(best_saves, {"params": state_.params, "rest": state_.rest}, best)
    return state_, result_

  writer = MetricWriter(workdir, tensorboard=bool(tc.tensorboard), enabled=main_process)
  _log.info("model: %s, %d parameters", config.model.kind, state_lib.tree_size(params))

  # ---------------------------------------------------------------------- phases
  prev_opt_state, prev_opt_step = None, 0
  global_step = 0
  phase_results = list(meta.get("phase_results", [])) if meta is not None else []
  # Under the mesh, the encoder's `constrain` hints pin activations (models/partitioning.py).
  mesh_context = jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext()
  try:
    with mesh_context:
      # One trace window over the run's global steps (config.train.profile_steps).
      profiler = profiling.StepProfiler(tc.profile_steps, workdir, enabled=main_process)
      for p_i, phase in enumerate(phases):
        where = f"phases[{p_i}] ({phase.name!r})"
        if meta is not None and p_i < meta["phase_index"]:
          global_step += phase.steps
          continue
        # -------------------------------------------------------------- phase setup
        opt = phase_optimizer(config, phase, labels, where)
        use_source, use_target = phase_uses(phase)
        carry = not phase.reset_optimizer and p_i > 0
        if carry and prev_opt_state is not None:
          fresh = jax.eval_shape(opt.tx.init, params)
          if jax.tree.structure(fresh) != jax.tree.structure(prev_opt_state):
            raise ValueError(f"{where}.reset_optimizer=False, but its optimiser (frozen groups "
                             f"{list(phase.frozen)}) differs from the previous phase's; reset it")
        rng = state_lib.make_rng(seed, p_i, impl=tc.dropout_rng_impl)

        def init(params_, rest_, opt_state_, opt_step_, tx=opt.tx, rng=rng):
          return state_lib.init_train_state(params_, tx, rng, rest_, opt_state=opt_state_,
                                            opt_step=opt_step_)

        init_args = (params, rest, prev_opt_state if carry else None,
                     prev_opt_step if carry else 0)
        abstract = jax.eval_shape(init, *init_args)
        state_sharding = None
        if partitioner is not None:
          state_sharding = partitioner.state_sharding(abstract)
        step, data_state = 0, None
        if meta is not None and p_i == meta["phase_index"]:
          target = checkpoint_lib.abstract_like(abstract, state_sharding)
          state = ckpt.restore_state(resume_step, target)
          step, data_state = int(meta["step"]), meta["data_state"]
          meta = None
        elif isinstance(partitioner, sharding.MeshPartitioner):
          # Compiled with out_shardings: the optimiser state is born sharded on the mesh.
          state, state_sharding = sharding.create_sharded_state(
              init, partitioner.mesh, partitioner.rules, *_on_mesh(init_args, partitioner))
        else:
          state = init(*init_args)
          if state_sharding is not None:
            state = jax.device_put(state, state_sharding)
        weights = {k: schedules.loss_weight_schedule(phase.weights[k], name=f"{where}.weights.{k}")
                   for k in ("source", "target", "domain")}
        alignment = phase_alignment(phase)
        train_step = step_lib.make_train_step(
            graphdef, rng_state, opt, weights=weights,
            lam=schedules.dann_lambda(phase.steps, phase.gamma, phase.lambda_max),
            alignment=alignment,
            rating_output=rating_output, use_source=use_source, use_target=use_target,
            rng_impl=tc.dropout_rng_impl, state_sharding=state_sharding,
            batch_sharding=batch_sharding)
        host_batches = data.train_batches(use_source=use_source, use_target=use_target,
                                          seed=seed + p_i)
        if data_state is not None:
          host_batches.set_state(data_state)
        # The next batches go on device while the current step runs; its state counts only the
        # batches handed out, so a checkpoint resumes at the right one.
        batches = pipeline.DevicePrefetch(host_batches, put, size=PREFETCH)
        info = {"phase": phase.name, "phase_index": p_i}
        examples_per_step = (data.batch_size * use_source + data.target_batch_size * use_target)
        count_flops = _step_flops_fn(enc_cfg, config.model, alignment, use_source, use_target)

        # -------------------------------------------------------------- train loop
        pending: list[tuple[int, Any, float | None]] = []
        last_flush = (time.time(), step)
        progress = _progress(phase, alignment.kind, step, bool(tc.progress_bar) and main_process)

        def flush() -> None:
          nonlocal pending, last_flush
          if not pending:
            return
          host = jax.device_get([m for _, m, _ in pending])
          for (s, _, _), m in zip(pending, host):
            bad = [k for k in _FINITE if not math.isfinite(float(m[k]))]
            if bad:
              good = ckpt.latest_step()
              raise NonFiniteLossError(
                  f"non-finite {', '.join(bad)} in {where} at step {s} of {phase.steps} "
                  f"(global step {global_step + s}): "
                  f"{ {k: float(v) for k, v in m.items() if k.startswith('loss') or k in bad} }. "
                  f"Training stopped; the last good checkpoint is "
                  f"{'none' if good is None else good} in {ckpt.directory}")
          scalars = _reduce(host)
          for side in ("source", "target"):  # batch RMSE back to the domain's own scale
            if f"rmse_{side}" in scalars:
              scale = data.scales[side]
              scalars[f"rmse_{side}"] *= 0.0 if scale.implicit else (scale.high - scale.low)
          now, s_end = time.time(), pending[-1][0]
          seconds = max(now - last_flush[0], 1e-9)
          rate = (s_end - last_flush[1]) / seconds
          scalars.update(steps_per_sec=rate, examples_per_sec=rate * examples_per_step)
          step_flops = [f for _, _, f in pending]
          if all(f is not None for f in step_flops):
            # Model FLOPs of the interval's steps over its wall time (includes compilation
            # and host work in the first interval, as steps_per_sec does).
            scalars["tflops_per_s"] = sum(step_flops) / seconds / 1e12
            util = flops_lib.mfu(sum(step_flops), seconds, jax.device_count(), peak)
            if util is not None:
              scalars["mfu"] = util
          writer.write("train", global_step + s_end, {**info, "step": s_end}, scalars)
          progress.set_postfix(loss=f"{scalars['loss']:.4f}", refresh=False)
          # Counted here, after the host synced on the steps' metrics: dispatch runs ahead of
          # the device, so counting at dispatch showed bursts and made-up rates.
          progress.update(s_end - last_flush[1])
          pending, last_flush = [], (now, s_end)

        while step < phase.steps:
          src, tgt = next(batches)
          # Batches are already on device: any transfer inside the step is a bug (a host
          # constant, a numpy argument) that would sync every step.
          with profiler.step(global_step + step + 1), jax.transfer_guard("disallow"):
            state, m = train_step(state, src, tgt)
          ckpt.check()  # a failed asynchronous save stops the run here
          step += 1
          pending.append((step, m, count_flops(src, tgt)))
          last = step == phase.steps
          do_eval = bool(tc.eval_every) and step % tc.eval_every == 0 and not last
          do_ckpt = last or (bool(tc.checkpoint_every) and step % tc.checkpoint_every == 0)
          if tc.check_finite_every_step or step % tc.log_every == 0 or last or do_eval or do_ckpt:
            flush()
          if do_eval:
            state, _ = eval_valid(state, {"phase": phase.name, "step": step,
                                          "global_step": global_step + step}, info)
          if do_ckpt:
            ckpt.save(global_step + step, state,
                      {**_meta(p_i, phase, step, global_step + step, batches.get_state(),
                               phase_results, chash, config), "data_fingerprint": fingerprint})
        progress.close()
        if p_i == len(phases) - 1:
          profiler.close()  # a window past the last step ends with the run
        if hasattr(host_batches, "close"):
          host_batches.close()
        global_step += phase.steps

        # -------------------------------------------------------------- phase end
        state, result = eval_valid(state, {"phase": phase.name, "step": phase.steps,
                                           "global_step": global_step}, info)
        # Traces of this process's train step (one per bucket length seen; 0 when it resumed
        # at the phase's end): a larger number means shapes are leaking into the compiled step.
        phase_results.append({"phase": phase.name, "steps": phase.steps, "target_valid": result,
                              "step_traces": train_step.num_traces})
        _log.info("%s done: target_valid %s", where, result)
        params, rest = state.params, state.rest
        prev_opt_state, prev_opt_step = state.opt_state, state.opt_step

      # ---------------------------------------------------------------- final evaluation
      ckpt.wait()
      final: dict[str, Any] = {"global_step": global_step, "phases": phase_results}
      if select is None:
        final["selected_at"] = {"phase": phases[-1].name, "step": phases[-1].steps,
                                "global_step": global_step}
      else:
        best_ckpt.wait()
        restored = best_ckpt.restore_state(None, checkpoint_lib.abstract_like(
            {"params": params, "rest": rest}))
        params, rest = restored["params"], restored["rest"]
        final["selected_at"] = best["where"]
        final["selected"] = {"metric": best["metric"], "value": best["value"]}
        _log.info("selected on target_valid %s = %.6g at %s", select, best["value"],
                  best["where"])
      for name in tc.final_eval:
        final[name] = run_eval(name, params, rest)
        writer.write(name, global_step, {"phase": "final"}, final[name])
    final["data"] = data.report
    final["data_fingerprint"] = fingerprint
    final["wall_s"] = time.time() - t_start
    if main_process:
      (workdir / "final_metrics.json").write_text(json.dumps(final, indent=2, default=str))
    return final
  finally:
    writer.close()
    ckpt.close()
    if best_ckpt is not None:
      best_ckpt.close()


def _progress(phase: Any, alignment: str, initial: int, enabled: bool):
  """tqdm bar of the phase's steps, labelled with its name and, when the name does not say it,
  its alignment (a 'dann' phase run with alignment=mmd reads 'dann (mmd)')."""
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  desc = phase.name if alignment in ("none", phase.name) else f"{phase.name} ({alignment})"
  return tqdm(total=phase.steps, initial=initial, desc=desc, disable=not enabled,
              dynamic_ncols=True, leave=False)


def _on_mesh(tree: Any, partitioner: sharding.MeshPartitioner) -> Any:
  """`tree`'s arrays as global arrays on the partitioner's mesh, each placed by its rule.

  Arrays already on the mesh (the previous phase's state) stay as they are; others (the
  freshly built model on the default device of this process) are cut into the shards each
  device of this process holds, so the jitted init also works across processes.
  """
  mesh_devices = set(partitioner.mesh.devices.flat)
  shardings = partitioner.state_sharding(jax.eval_shape(lambda t: t, tree))

  def place(x: Any, s: Any) -> Any:
    if not hasattr(x, "shape"):
      return x  # Python scalars: traced as such
    if isinstance(x, jax.Array) and set(x.sharding.device_set) == mesh_devices:
      return x
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, s, lambda index: host[index])

  return jax.tree.map(place, tree, shardings)


def _step_flops_fn(enc_cfg: bert_lib.BertConfig | None, model_cfg: Any,
                   alignment: losses.Alignment, use_source: bool,
                   use_target: bool) -> Callable[[Any, Any], float | None]:
  """`(src, tgt) -> model FLOPs of the step` (padded shapes, `flops.step_flops`); None when
  the model's FLOPs are not counted."""
  heads = (tuple(model_cfg.rating_head.hidden),)
  if alignment.uses_discriminator:
    heads += (tuple(model_cfg.discriminator.hidden),)
  pooler = model_cfg.pooling == "pooler"

  def count(src: Any, tgt: Any) -> float | None:
    if enc_cfg is None:
      return None
    total = 0.0
    for used, batch in ((use_source, src), (use_target, tgt)):
      if used:
        rows, seq = batch["input_ids"].shape
        total += flops_lib.step_flops(enc_cfg, rows, seq, head_widths=heads, pooler=pooler)
    return total

  return count
