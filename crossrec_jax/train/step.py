"""The pure, compiled train step of any task: the task's objective in one `value_and_grad`.

One step consumes a source batch and a target batch; the task's objective (`tasks.base.Task
.objective`, e.g. `objectives/cross_encoder.py`)

    L = w_s(t) * L_src + w_t(t) * L_tgt + w_d(t) * L_align(src, tgt)

is given the model, the batches of the sides the phase uses and the phase's weights. t is the
step within the phase, a *traced* int: the weights and the gradient-reversal strength lam(t) are
schedules evaluated inside the compiled function, so a whole phase compiles once per batch shape.
What a phase never uses is not computed: with w_s a constant 0 and no alignment, the source batch
is not handed to the objective at all (likewise the target), which halves a single-domain phase's
cost.

Only the trainable parameters are differentiated (`trainable.py`): the groups a phase freezes
(`phase.frozen`, e.g. the base encoder of a LoRA phase) enter the loss as closed-over constants,
so XLA never builds their weight gradients (a LoRA step of the cpu preset: 144.2 -> 94.8 GFLOP,
experiments/bench_lora.py);
their parameters leave the step as the arrays that came in, and the optimiser (its state and the
checkpoints keep the whole tree) gets zeros for them. `grad_norm` is the trainable gradients'
norm.

With `grad_accum_steps` k > 1 (`config.train.grad_accum_steps`) each batch is split into k
micro-batches along axis 0 (`accumulate.py`: rows j, j + k, ...); their losses and gradients are
averaged (a `lax.scan`, so one micro-batch's activations are live at a time) and one optimiser
update follows: the step of the whole batch, to float rounding, when every micro-batch averages
as many labelled rows (tests/test_step.py). Micro-batch j draws its dropout from
fold_in(key, j); the objective's aux metrics are micro-batch means; the non-parameter state
(`rest`) is carried through unchanged, so a model that updates it in the step (none here does)
cannot accumulate. Every array of the batch must have the batch's rows as axis 0.

The model enters as `graphdef` + `rng_state` (static, from `state.split_model`); the state is a
`TrainState`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from crossrec_jax.objectives import losses
from crossrec_jax.tasks.base import Objective
from crossrec_jax.tasks.compiled import CompiledStep
from crossrec_jax.train import accumulate
from crossrec_jax.train import optim
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import trainable
from crossrec_jax.train.state import TrainState

__all__ = ["CompiledStep", "reseed_streams", "make_train_step"]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]
Batch = Mapping[str, jax.Array]
WEIGHT_NAMES = ("source", "target", "domain")


def reseed_streams(rng_state: nnx.State, key: jax.Array) -> nnx.State:
  """A copy of `rng_state` whose i-th stream has key fold_in(key, i) and count 0.

  Used inside the step so that dropout masks depend only on (seed, step), whatever the streams
  are called ('dropout', 'default', ...) and whatever they drew before. Pure: it builds new
  variables (variables captured from outside a trace cannot be mutated inside it).
  """
  typed = key if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else jax.random.wrap_key_data(key)
  leaves, treedef = jax.tree.flatten(rng_state, is_leaf=lambda x: isinstance(x, nnx.Variable))
  out, i = [], 0
  for v in leaves:
    if isinstance(v, nnx.RngKey):
      out.append(v.copy(jnp.broadcast_to(jax.random.fold_in(typed, i), v.shape)))
      i += 1
    elif isinstance(v, nnx.RngCount):
      out.append(v.copy(jnp.zeros(v.shape, jnp.uint32)))
    else:
      out.append(v)
  return jax.tree.unflatten(treedef, out)


def make_train_step(graphdef: nnx.GraphDef, rng_state: nnx.State, optimizer: optim.Optimizer, *,
                    objective: Objective, weights: Mapping[str, Schedule], lam: Schedule,
                    alignment: losses.Alignment, use_source: bool = True, use_target: bool = True,
                    rng_impl: str = "rbg", state_sharding: Any = None,
                    batch_sharding: Any = None, donate: bool = True,
                    grad_accum_steps: int = 1) -> CompiledStep:
  """Builds the jitted `train_step(state, src_batch, tgt_batch) -> (state, metrics)` of a phase.

  Args:
    graphdef, rng_state: from `state.split_model(model)`.
    optimizer: `optim.make_optimizer(...)` (its lr schedules are logged per group).
    objective: the task's `objective(alignment)`: `(model, batches, lam, weights, *,
      deterministic) -> (loss, aux metrics)`.
    weights: 'source', 'target', 'domain' -> schedule of the phase step (`schedules.py`).
    lam: the gradient-reversal strength schedule (e.g. `schedules.dann_lambda`).
    alignment: `losses.make_alignment(kind, ...)` (the objective's; checked and logged here).
    use_source, use_target: False skips encoding that batch (its weight is a constant 0 and the
      alignment is 'none'); the batch must still be passed (same signature for every phase).
    rng_impl: PRNG implementation of the dropout keys; `TrainState.rng` holds its raw key data
      (`state.make_rng`). 'rbg' compiles about twice as fast as 'threefry2x32' on CPU (dropout
      bits dominate the compile of a small BERT) and is faster on accelerators; any impl is
      deterministic for a given key on one backend.
    state_sharding, batch_sharding: shardings (pytrees or single shardings) of the state and of
      each batch; both None (default) lets JAX place everything on the default device.
    donate: donate the input state's buffers (the caller must not reuse it).
    grad_accum_steps: micro-batches per step (module docstring); 1 = none.

  Returns:
    A CompiledStep. Metrics (float32 scalars): loss, w_source, w_target, w_domain, lambda
    (discriminator alignments), lr_<group>, grad_norm, param_norm, and the objective's aux
    metrics (the cross-encoder's: loss_source, loss_target, loss_domain, rmse_source,
    rmse_target, n_labelled_source/target, domain_acc).
  """
  missing = sorted(set(WEIGHT_NAMES) - set(weights))
  if missing:
    raise ValueError(f"make_train_step: missing weight schedules {missing}")
  if not (use_source or use_target):
    raise ValueError("make_train_step: a phase must use the source or the target batch")
  if alignment.kind != "none" and not (use_source and use_target):
    raise ValueError(f"alignment {alignment.kind!r} needs both the source and the target batch")

  if not isinstance(grad_accum_steps, int) or grad_accum_steps < 1:
    raise ValueError(f"train.grad_accum_steps must be a positive int, got {grad_accum_steps!r}")
  sides = tuple(side for side, used in (("source", use_source), ("target", use_target)) if used)

  def loss_fn(train_leaves, cut, rest, rng, batches, lam_t, w):
    # Only `train_leaves` are differentiated; the frozen leaves in `cut` are closed-over
    # constants of the loss, so XLA builds no weight gradient for them (trainable.py).
    params = cut.merge(train_leaves)
    # Fresh stream variables in this trace (dropout mutates their counters as it draws).
    model = nnx.merge(graphdef, params, reseed_streams(rng_state, rng), rest)
    total, aux = objective(model, {side: batches[side] for side in sides}, lam_t, w,
                           deterministic=False)
    return total, (aux, state_lib.split_model(model).rest)

  def train_step(state: TrainState, src: Batch, tgt: Batch):
    t = state.step
    lam_t = jnp.asarray(lam(t), jnp.float32)
    w = {k: jnp.asarray(weights[k](t), jnp.float32) for k in WEIGHT_NAMES}
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=rng_impl), t)
    cut = trainable.split(state.params, optimizer.trainable)
    grad_fn = jax.value_and_grad(lambda leaves, *args: loss_fn(leaves, cut, *args), has_aux=True)
    batches = {"source": src, "target": tgt}
    if grad_accum_steps == 1:
      (total, (aux, rest)), train_grads = grad_fn(cut.trainable, state.rest, rng, batches, lam_t,
                                                  w)
    else:
      _check_rows(batches, sides, grad_accum_steps)

      def micro(mb):
        key = jax.random.fold_in(rng, mb["index"][0])
        (loss, (aux_, _)), g = grad_fn(cut.trainable, state.rest, key, mb["batches"], lam_t, w)
        return (loss, aux_), g

      used = {side: batches[side] for side in sides}
      (total, aux), train_grads = accumulate.accumulate_gradients(
          micro, {"batches": used, "index": jnp.arange(grad_accum_steps)}, grad_accum_steps)
      rest = state.rest
    # The optimiser sees the whole tree (its state and the checkpoints keep their structure);
    # zeros stand in for the frozen gradients, which it zeroes anyway.
    grads = cut.full_grads(train_grads)
    updates, opt_state = optimizer.tx.update(grads, state.opt_state, state.params)
    # Frozen leaves leave the step as the arrays that came in (not W + 0: exact, and aliasable).
    params = cut.merge(trainable.split(optax.apply_updates(state.params, updates),
                                       optimizer.trainable).trainable)
    metrics = {"loss": total, "grad_norm": optax.tree.norm(grads),
               "param_norm": optax.tree.norm(params)}
    if alignment.uses_discriminator:
      metrics["lambda"] = lam_t
    metrics.update({f"w_{k}": v for k, v in w.items()})
    metrics.update({f"lr_{g}": v for g, v in optimizer.learning_rates(state.opt_step).items()})
    metrics.update(aux)
    new_state = state.replace(step=t + 1, opt_step=state.opt_step + 1, params=params,
                              opt_state=opt_state, rest=rest)
    return new_state, metrics

  jit_kwargs: dict[str, Any] = {"donate_argnums": (0,) if donate else ()}
  if state_sharding is not None or batch_sharding is not None:
    jit_kwargs["in_shardings"] = (state_sharding, batch_sharding, batch_sharding)
    jit_kwargs["out_shardings"] = (state_sharding, None)
  return CompiledStep(train_step, **jit_kwargs)


def _check_rows(batches: Mapping[str, Batch], sides: tuple[str, ...], k: int) -> None:
  """Accumulation splits axis 0 of every array: each must be the batch's rows (trace time)."""
  for side in sides:
    rows = {name: x.shape[0] if x.ndim else None for name, x in batches[side].items()}
    if len(set(rows.values())) != 1 or None in rows.values():
      raise ValueError(f"train.grad_accum_steps={k} splits every array of a batch along its rows, "
                       f"but the {side} batch's arrays have leading sizes {rows}")
