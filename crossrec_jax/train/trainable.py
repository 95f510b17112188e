"""Split the parameters into the leaves a step differentiates and the frozen rest.

`jax.grad` computes a weight gradient for every leaf of its argument, frozen or not: the
optimiser then throws the frozen ones away (`optim.py`: `optax.set_to_zero`), but XLA has already
spent the matmuls on them. A LoRA phase (base encoder frozen, 2% of the parameters training)
paid full fine-tuning's backward that way. The step instead differentiates only the trainable
leaves and closes over the frozen ones as constants of the loss: the gradients still flow
*through* the frozen layers (to the adapters and the layers below), but the frozen layers'
weight-gradient matmuls (and the embedding table's scatter-add) are never built.

The split is by leaf position of `jax.tree.flatten(params)`, so the state, the optimiser state
and the checkpoints keep the whole tree: the optimiser gets zeros where a frozen leaf's gradient
would be, and the frozen leaves come out of the step as the very arrays that went in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Split", "split"]


class Split(NamedTuple):
  """`params` cut into `trainable` and `frozen` leaf lists; `merge` puts two such lists back."""
  trainable: list[Any]
  frozen: list[Any]
  treedef: Any
  mask: tuple[bool, ...]

  def merge(self, trainable: list[Any], frozen: list[Any] | None = None) -> Any:
    """The params tree from trainable leaves and frozen leaves (default: the original ones)."""
    train_it, frozen_it = iter(trainable), iter(self.frozen if frozen is None else frozen)
    leaves = [next(train_it) if m else next(frozen_it) for m in self.mask]
    return jax.tree.unflatten(self.treedef, leaves)

  def full_grads(self, grads: list[Any]) -> Any:
    """Gradients of the whole tree: `grads` of the trainable leaves, zeros for the frozen."""
    return self.merge(grads, [jnp.zeros_like(x) for x in self.frozen])


def split(params: Any, trainable_fn: Callable[[Any], Any] | None) -> Split:
  """Cuts `params` by `trainable_fn(params)` (a bool pytree like params; None: all train).

  Runs at trace time: the mask must be Python bools (e.g. `optim.Optimizer.trainable`).
  """
  leaves, treedef = jax.tree.flatten(params)
  if trainable_fn is None:
    mask = (True,) * len(leaves)
  else:
    mask = tuple(bool(m) for m in jax.tree.leaves(trainable_fn(params)))
    if len(mask) != len(leaves):
      raise ValueError(f"the trainable mask has {len(mask)} leaves, the params {len(leaves)}")
  return Split([x for x, m in zip(leaves, mask) if m], [x for x, m in zip(leaves, mask) if not m],
               treedef, mask)
