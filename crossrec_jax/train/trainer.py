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
`tflops_per_s` (the task's model FLOPs, `Task.step_flops`) and, where the chip's peak is known,
`mfu`.

A non-finite loss (or gradient / parameter norm) stops the run with `NonFiniteLossError` naming
the phase and step. The host
looks at the metrics every `train.log_every` steps (every step with
`train.check_finite_every_step`) and always before writing a checkpoint, so no checkpoint ever
holds a state that followed a NaN: the newest checkpoint is the last good one.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import pathlib
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from flax import nnx

from crossrec_jax import tasks as tasks_lib
from crossrec_jax.data import fingerprint as fingerprint_lib
from crossrec_jax.data import pipeline
from crossrec_jax.tasks import base as base_task
from crossrec_jax.train import checkpoint as checkpoint_lib
from crossrec_jax.train import distributed
from crossrec_jax.train import flops as flops_lib
from crossrec_jax.train.metric_writer import MetricWriter
from crossrec_jax.train import optim
from crossrec_jax.train import profiling
from crossrec_jax.train import selection
from crossrec_jax.train import warm_start
from crossrec_jax.train import schedules
from crossrec_jax.train import sharding
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib
# The phase and config-hash helpers are the trainer's public API too (studies, benchmarks).
from crossrec_jax.train.config_hash import RUNTIME_KEYS, RUNTIME_SECTIONS, config_diff, config_hash  # noqa: F401
from crossrec_jax.train.phases import (optimizer_groups, phase_alignment, phase_optimizer,  # noqa: F401
                                       phase_uses, selection_metric, validate_phases)
from crossrec_jax.train.placement import Partitioner, on_mesh

__all__ = ["NonFiniteLossError", "Partitioner", "config_hash", "optimizer_groups",
           "validate_phases", "phase_optimizer", "phase_alignment", "phase_uses", "selection_metric",
           "MetricWriter", "train_and_evaluate"]

_log = distributed.main_process_logger(__name__)
# Batches put on device ahead of the running step.
PREFETCH = 2
# Metrics averaged over a log interval; the others (lambda, weights, lrs) are logged as of its end.
_AVERAGED = ("loss", "rmse", "domain_acc", "grad_norm", "n_labelled")
# Checked every flush: a finite loss with overflowed parameters (param_norm inf) is caught at the
# step that produced them, before they reach a checkpoint.
_FINITE = ("loss", "grad_norm", "param_norm")


class NonFiniteLossError(FloatingPointError):
  """The loss became NaN or infinite; the message names the phase, the step and the checkpoint."""


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
                       partitioner: Partitioner | None = None, data: Any = None,
                       task: tasks_lib.Task | None = None) -> dict[str, Any]:
  """Runs (or resumes) every phase of `config` in `workdir`; returns the final metrics.

  `partitioner` places state and batches on a mesh (train/sharding.py; main.py passes
  `MeshPartitioner.from_config(config.mesh)`); None = the default device.
  `task` is the architecture (`tasks.Task`: model, batches, objective, evaluator); default
  `tasks.make_task(config, data=data)`, the task `config.model.kind` names, over `data` (data
  prepared earlier, e.g. by tests and notebooks; None prepares it from the config). The loop
  sees the task through its Protocol only.
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
      diff = config_diff(meta.get("config", {}), json.loads(config.to_json_best_effort()))
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

  # ---------------------------------------------------------------------- task and model
  if task is None:
    task = tasks_lib.make_task(config, data=data)
  model = task.build_model(nnx.Rngs(seed))
  # The data actually used (data/fingerprint.py): a resume on other tables is an error.
  fingerprint = fingerprint_lib.data_fingerprint(task)
  for record, ckpt_dir in ((meta, "checkpoints"), (best, "checkpoints_best")):
    if record is not None and record.get("data_fingerprint", fingerprint) != fingerprint:
      raise ValueError(
          f"{workdir / ckpt_dir} was trained on data {record['data_fingerprint']} (source "
          f"{record.get('config', {}).get('data', {}).get('source', '?')!r}); this run prepared "
          f"data {fingerprint} (source {config.data.source!r}) under the same config: resume on "
          "the same data, or use a new --workdir")
  # Counted on the built model (a pretrained encoder's sizes come from its checkpoint).
  flops_of = {(a.kind, u_s, u_t): task.step_flops(model, a, u_s, u_t)
              for a, u_s, u_t in {(phase_alignment(p), *phase_uses(p)) for p in phases}}
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  del model  # its arrays are donated by the first step; only the split parts live on
  if config.model.get("init_from", ""):  # warm start from a finished run (train/warm_start.py)
    params, rest = warm_start.restore_params(config.model.init_from, params, rest,
                                             str(config.model.get("init_checkpoint", "auto")))
  labels = optim.label_params(params, {g: g for g in optimizer_groups(config)})
  # Explicit transfers (the train step runs under a transfer guard): onto the mesh, or onto
  # the default device without a partitioner.
  shared = base_task.shared_batch_keys(task)
  put = (functools.partial(partitioner.put_batch, shared=shared) if partitioner is not None
         else jax.device_put)
  # The step's batch in_shardings: one row sharding for every array, or, with shared
  # (replicated) keys, those that `put` gave each array (None: jit takes the arguments').
  batch_sharding = (partitioner.batch_sharding() if partitioner is not None and not shared
                    else None)
  mesh = getattr(partitioner, "mesh", None)
  peak, _ = flops_lib.peak_flops()
  evaluator = task.make_evaluator(graphdef, rng_state, rest, put=put,
                                  batch_sharding=batch_sharding)
  # The processes built their task (data, item vectors: a cache hit in one, an encoding in
  # another) at their own pace; line them up before the first collective (distributed.barrier).
  distributed.barrier("task built")

  def eval_valid(state_: Any, where_: dict[str, Any], info_: dict[str, Any]) -> tuple[Any, Any]:
    """Target-valid evaluation of `state_` (logged; a new best is checkpointed)."""
    nonlocal best, best_saves
    state_ = state_.replace(rest=evaluator.refresh(state_.params, state_.rest))
    result_ = evaluator("target_valid", state_.params, state_.rest)
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
              init, partitioner.mesh, partitioner.rules, *on_mesh(init_args, partitioner))
        else:
          state = init(*init_args)
          if state_sharding is not None:
            state = jax.device_put(state, state_sharding)
        weights = {k: schedules.loss_weight_schedule(phase.weights[k], name=f"{where}.weights.{k}")
                   for k in ("source", "target", "domain")}
        alignment = phase_alignment(phase)
        train_step = step_lib.make_train_step(
            graphdef, rng_state, opt, objective=task.objective(alignment), weights=weights,
            lam=schedules.dann_lambda(phase.steps, phase.gamma, phase.lambda_max),
            alignment=alignment, use_source=use_source, use_target=use_target,
            rng_impl=tc.dropout_rng_impl, state_sharding=state_sharding,
            batch_sharding=batch_sharding, grad_accum_steps=int(tc.grad_accum_steps))
        host_batches = task.train_batches(use_source=use_source, use_target=use_target,
                                          seed=seed + p_i)
        if data_state is not None:
          host_batches.set_state(data_state)
        # The next batches go on device while the current step runs; its state counts only the
        # batches handed out, so a checkpoint resumes at the right one.
        batches = pipeline.DevicePrefetch(host_batches, put, size=PREFETCH)
        distributed.barrier(f"phase {p_i} start")  # after the restore or the state's creation
        info = {"phase": phase.name, "phase_index": p_i}
        if bool(tc.get("eval_at_start", False)) and p_i == 0 and step == 0:
          # The untrained state is a candidate too: a model started at a closed-form fit (the
          # hybrid's init_biases) may be best before a step changes it; `train.select` sees it.
          state, _ = eval_valid(state, {"phase": phase.name, "step": 0, "global_step": 0}, info)
        examples_per_step = (task.batch_size * use_source + task.target_batch_size * use_target)
        count_flops = flops_of[(alignment.kind, use_source, use_target)]

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
              scale = task.scales[side]
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
          pending.append((step, m, None if count_flops is None else count_flops(src, tgt)))
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
        final[name] = evaluator(name, params, rest)
        writer.write(name, global_step, {"phase": "final"}, final[name])
    final["data"] = task.report
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
