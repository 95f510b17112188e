"""The pure, compiled train step (all losses in one `value_and_grad`) and the eval step.

One step consumes a source batch and a target batch:

    L = w_s(t) * L_rate(src) + w_t(t) * L_rate(tgt) + w_d(t) * L_align(src, tgt)

t is the step within the phase, a *traced* int: the weights and the gradient-reversal strength
lam(t) are schedules evaluated inside the compiled function, so a whole phase compiles once per
batch shape. L_rate is a masked MSE on ratings scaled to [0, 1] (or a BCE for 'logit' heads)
over labelled rows only (`label_mask * valid`); L_align is DANN's domain BCE over the valid rows
of src and tgt through the discriminator behind GRL_lam, or a feature penalty (MMD, CORAL) on the
pooled features. Unlabelled target rows (label_mask 0) still feed L_align.

What a phase never uses is not computed: with w_s a constant 0 and no alignment, the source
batch is not encoded at all (likewise the target), which halves a single-domain phase's cost.

The model enters as `graphdef` + `rng_state` (static, from `state.split_model`); the state is a
`TrainState`. Batches are dicts of arrays: 'input_ids', 'attention_mask', 'token_type_ids',
'label' (float in [0, 1]), 'label_mask', 'valid' (0 for padding rows of a short final batch).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from crossrec_jax.models import recommender as recommender_lib
from crossrec_jax.train import losses
from crossrec_jax.train import optim
from crossrec_jax.train.state import TrainState

__all__ = ["CompiledStep", "reseed_streams", "concat_batches", "rating_loss", "make_train_step", "make_eval_step"]

Schedule = Callable[[jax.typing.ArrayLike], jax.Array]
Batch = Mapping[str, jax.Array]
WEIGHT_NAMES = ("source", "target", "domain")


class CompiledStep:
  """A jitted function that counts how often JAX traces it (a retrace means a recompile)."""

  def __init__(self, fn: Callable[..., Any], **jit_kwargs: Any):
    self.num_traces = 0

    def counted(*args):
      self.num_traces += 1  # Runs at trace time only.
      return fn(*args)

    self._jitted = jax.jit(counted, **jit_kwargs)

  def __call__(self, *args):
    return self._jitted(*args)

  def lower(self, *args):
    return self._jitted.lower(*args)


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


def rating_loss(pred: jax.Array, label: jax.Array, mask: jax.Array,
                rating_output: str) -> jax.Array:
  """MSE on [0, 1] ratings for 'regression' heads, BCE for 'logit' heads; masked mean."""
  if rating_output == "logit":
    return losses.masked_bce_with_logits(pred, label, mask)
  return losses.masked_mse(pred, label, mask)


def concat_batches(batches: list[Batch]) -> dict[str, jax.Array]:
  """Concatenates batches along axis 0, zero-padding the other axes to the largest size.

  Zero is the padding of every model input (token id 0 = [PAD], attention mask 0), so a source
  batch of length 32 and a target batch of length 64 become one [Bs + Bt, 64] batch. Only keys
  present in every batch are kept.
  """
  if len(batches) == 1:
    return dict(batches[0])
  keys = [k for k in batches[0] if all(k in b for b in batches[1:])]
  out = {}
  for k in keys:
    arrays = [jnp.asarray(b[k]) for b in batches]
    shape = np.max([a.shape for a in arrays], axis=0)
    arrays = [jnp.pad(a, [(0, 0)] + [(0, int(n) - d) for n, d in zip(shape[1:], a.shape[1:])])
              for a in arrays]
    out[k] = jnp.concatenate(arrays, axis=0)
  return out


def _labelled(batch: Batch) -> jax.Array:
  return batch["label_mask"].astype(jnp.float32) * batch["valid"].astype(jnp.float32)


def make_train_step(graphdef: nnx.GraphDef, rng_state: nnx.State, optimizer: optim.Optimizer, *,
                    weights: Mapping[str, Schedule], lam: Schedule,
                    alignment: losses.Alignment, rating_output: str,
                    use_source: bool = True, use_target: bool = True,
                    rng_impl: str = "rbg", state_sharding: Any = None,
                    batch_sharding: Any = None, donate: bool = True) -> CompiledStep:
  """Builds the jitted `train_step(state, src_batch, tgt_batch) -> (state, metrics)` of a phase.

  Args:
    graphdef, rng_state: from `state.split_model(model)`.
    optimizer: `optim.make_optimizer(...)` (its lr schedules are logged per group).
    weights: 'source', 'target', 'domain' -> schedule of the phase step (`schedules.py`).
    lam: the gradient-reversal strength schedule (e.g. `schedules.dann_lambda`).
    alignment: `losses.make_alignment(kind, ...)`.
    rating_output: 'regression' or 'logit' (the rating head's output).
    use_source, use_target: False skips encoding that batch (its weight is a constant 0 and the
      alignment is 'none'); the batch must still be passed (same signature for every phase).
    rng_impl: PRNG implementation of the dropout keys; `TrainState.rng` holds its raw key data
      (`state.make_rng`). 'rbg' compiles about twice as fast as 'threefry2x32' on CPU (dropout
      bits dominate the compile of a small BERT) and is faster on accelerators; any impl is
      deterministic for a given key on one backend.
    state_sharding, batch_sharding: shardings (pytrees or single shardings) of the state and of
      each batch; both None (default) lets JAX place everything on the default device.
    donate: donate the input state's buffers (the caller must not reuse it).

  Returns:
    A CompiledStep. Metrics (float32 scalars): loss, loss_source, loss_target, loss_domain,
    w_source, w_target, w_domain, lambda (discriminator alignments), lr_<group>, grad_norm, param_norm, rmse_source,
    rmse_target (batch RMSE on the [0, 1] scale, over labelled rows), n_labelled_source/target,
    and domain_acc (discriminator accuracy on src + tgt rows) for discriminator alignments.
  """
  missing = sorted(set(WEIGHT_NAMES) - set(weights))
  if missing:
    raise ValueError(f"make_train_step: missing weight schedules {missing}")
  if not (use_source or use_target):
    raise ValueError("make_train_step: a phase must use the source or the target batch")
  if alignment.kind != "none" and not (use_source and use_target):
    raise ValueError(f"alignment {alignment.kind!r} needs both the source and the target batch")

  sides = tuple(side for side, used in (("source", use_source), ("target", use_target)) if used)

  def loss_fn(params, rest, rng, batches, lam_t, w):
    # Fresh stream variables in this trace (dropout mutates their counters as it draws).
    model = nnx.merge(graphdef, params, reseed_streams(rng_state, rng), rest)
    if getattr(model, "kind", None) == "bi_encoder":  # its own objective (models/bi_encoder.py)
      total, aux = model.losses({side: batches[side] for side in sides}, lam_t, w,
                                alignment=alignment, deterministic=False)
      return total, (aux, nnx.split(model, nnx.Param, nnx.RngState, ...)[3])
    # One forward over src ++ tgt: one encoder graph to compile, bigger matmuls.
    joint = concat_batches([batches[side] for side in sides])
    out = model(joint, lam_t, deterministic=False)
    offsets = np.cumsum([0] + [batches[side]["valid"].shape[0] for side in sides])
    outs = {side: jax.tree.map(lambda x, a=a, b=b: x[a:b], out)
            for side, a, b in zip(sides, offsets[:-1], offsets[1:])}
    aux = {}
    total = jnp.zeros((), jnp.float32)
    for side in sides:
      batch, o = batches[side], outs[side]
      mask = _labelled(batch)
      l_rate = rating_loss(o["rating"], batch["label"], mask, rating_output)
      pred = recommender_lib.predict_rating(o, rating_output)
      aux[f"loss_{side}"] = l_rate
      aux[f"rmse_{side}"] = jnp.sqrt(losses.masked_mse(pred, batch["label"], mask))
      aux[f"n_labelled_{side}"] = jnp.sum(mask)
      total = total + w[side] * l_rate
    if alignment.kind != "none":
      s, g = outs["source"], outs["target"]
      valid_s = batches["source"]["valid"].astype(jnp.float32)
      valid_t = batches["target"]["valid"].astype(jnp.float32)
      if alignment.uses_discriminator:
        logits = jnp.concatenate([s["domain_logit"], g["domain_logit"]])
        labels = jnp.concatenate([jnp.zeros_like(valid_s), jnp.ones_like(valid_t)])
        mask = jnp.concatenate([valid_s, valid_t])
        l_dom = losses.domain_bce(logits, labels, mask)
        aux["domain_acc"] = losses.binary_accuracy(logits, labels, mask)
      else:
        l_dom = alignment.penalty(s["features"], g["features"], valid_s, valid_t)
      aux["loss_domain"] = l_dom
      total = total + w["domain"] * l_dom
    new_rest = nnx.split(model, nnx.Param, nnx.RngState, ...)[3]
    return total, (aux, new_rest)

  def train_step(state: TrainState, src: Batch, tgt: Batch):
    t = state.step
    lam_t = jnp.asarray(lam(t), jnp.float32)
    w = {k: jnp.asarray(weights[k](t), jnp.float32) for k in WEIGHT_NAMES}
    rng = jax.random.fold_in(jax.random.wrap_key_data(state.rng, impl=rng_impl), t)
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    batches = {"source": src, "target": tgt}
    (total, (aux, rest)), grads = grad_fn(state.params, state.rest, rng, batches, lam_t, w)
    updates, opt_state = optimizer.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
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


def make_eval_step(graphdef: nnx.GraphDef, rng_state: nnx.State, rest: nnx.State, *,
                   rating_output: str, params_sharding: Any = None,
                   batch_sharding: Any = None) -> Callable[..., dict[str, jax.Array]]:
  """Builds the jitted `eval_step(params, batch, rest=None) -> predictions` (no dropout).

  Predictions: 'rating' [B] in [0, 1] (a probability for 'logit' heads), 'domain_logit' [B],
  'features' [B, H]. `rest` defaults to the one given here (empty for BERT models).
  """

  def eval_fn(params, rest_, batch):
    model = nnx.merge(graphdef, params, rng_state, rest_)
    out = model(batch, 0.0, deterministic=True)
    return {"rating": recommender_lib.predict_rating(out, rating_output),
            "domain_logit": out["domain_logit"], "features": out["features"]}

  jit_kwargs: dict[str, Any] = {}
  if params_sharding is not None or batch_sharding is not None:
    jit_kwargs["in_shardings"] = (params_sharding, None, batch_sharding)
  compiled = CompiledStep(eval_fn, **jit_kwargs)

  def eval_step(params, batch, rest_=None):
    return compiled(params, rest if rest_ is None else rest_, batch)

  eval_step.compiled = compiled  # type: ignore[attr-defined]  (num_traces for tests)
  return eval_step
