"""Gradient accumulation over micro-batches inside one compiled step (`lax.scan`).

A global batch too large for device memory is cut into `num_micro` micro-batches; their
gradients are summed inside the compiled step and the optimiser runs once, so the update equals
one big-batch step (exactly, when the loss is a mean over equally many examples per micro-batch;
see `accumulate_gradients`). Only one micro-batch's activations are alive at a time.

Micro-batch j takes rows j, j + n, j + 2n, ... of the global batch (a strided split, not
contiguous blocks): with the batch sharded over ('data', 'fsdp'), every device then holds
B / (devices * n) rows of every micro-batch, so no rows move between devices and all devices
work on every micro-step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["split_micro_batches", "accumulate_gradients"]


def split_micro_batches(batch: Any, num_micro: int) -> Any:
  """[B, ...] leaves -> [num_micro, B // num_micro, ...]; micro-batch j = rows j::num_micro."""

  def split(x):
    if x.shape[0] % num_micro:
      raise ValueError(f"batch of {x.shape[0]} rows does not split into num_micro={num_micro} "
                       f"micro-batches; make the batch size a multiple of it")
    x = x.reshape((x.shape[0] // num_micro, num_micro) + x.shape[1:])
    return jnp.swapaxes(x, 0, 1)

  return jax.tree.map(split, batch)


def accumulate_gradients(loss_and_grad_fn: Callable[[Any], tuple[tuple[jax.Array, Any], Any]],
                         batch: Any, num_micro: int,
                         weight_fn: Callable[[Any], jax.Array] | None = None
                         ) -> tuple[tuple[jax.Array, Any], Any]:
  """Runs `loss_and_grad_fn` on each micro-batch (`lax.scan`) and combines the results.

  Args:
    loss_and_grad_fn: micro_batch -> ((loss, aux), grads), e.g.
      `lambda b: jax.value_and_grad(loss_fn, has_aux=True)(params, b)`. Anything not in the
      batch (params, rng, schedules) is closed over.
    batch: a pytree of [B, ...] arrays (one batch, or a tuple/dict of batches such as
      (source, target): every leaf is split the same way).
    num_micro: number of micro-batches; 1 calls the function once, without a scan.
    weight_fn: micro_batch -> scalar weight (e.g. its number of labelled rows). Loss, aux and
      grads are combined as sum(w_j * x_j) / sum(w_j), which equals the full-batch value for a
      loss that is a mean over those rows. None: equal weights (exact when every micro-batch's
      loss averages the same number of rows). A zero total weight gives zeros, not NaN.

  Returns:
    ((loss, aux), grads) combined over micro-batches, float32 accumulators for the loss and
    grads whatever their dtype (then cast back to each leaf's dtype).
  """
  if num_micro < 1:
    raise ValueError(f"num_micro must be >= 1, got {num_micro}")
  if num_micro == 1:
    return loss_and_grad_fn(batch)
  micro = split_micro_batches(batch, num_micro)
  first = jax.tree.map(lambda x: x[0], micro)
  out_shape = jax.eval_shape(loss_and_grad_fn, first)
  zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.promote_types(s.dtype, jnp.float32)),
                       out_shape)

  def body(carry, mb):
    acc, total_w = carry
    out = loss_and_grad_fn(mb)
    w = jnp.ones((), jnp.float32) if weight_fn is None else jnp.asarray(weight_fn(mb), jnp.float32)
    acc = jax.tree.map(lambda a, x: a + w * x.astype(a.dtype), acc, out)
    return (acc, total_w + w), None

  (acc, total_w), _ = jax.lax.scan(body, (zeros, jnp.zeros((), jnp.float32)), micro)
  safe = jnp.where(total_w > 0, total_w, 1.0)
  return jax.tree.map(lambda a, s: (a / safe).astype(s.dtype), acc, out_shape)
