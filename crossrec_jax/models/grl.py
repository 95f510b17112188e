"""Gradient reversal layer (Ganin & Lempitsky, 2015) as a `jax.custom_vjp`.

Forward: the identity. Backward: the incoming cotangent times `-lam`. Placed between the encoder
and the domain discriminator, it lets one backward pass train the discriminator to *tell* the
domains apart while pushing the encoder towards features that *do not* tell them apart.

`lam` is an ordinary (traced) input, not a static argument: a schedule can change it every step
inside one compiled train step without recompiling. No gradient flows into `lam` (its cotangent
is zero), so it is safe to compute it from the step counter inside the differentiated function.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["gradient_reversal"]


@jax.custom_vjp
def _reverse(x: Any, lam: jax.Array) -> Any:
  del lam
  return x


def _reverse_fwd(x: Any, lam: jax.Array) -> tuple[Any, jax.Array]:
  return x, lam


def _reverse_bwd(lam: jax.Array, g: Any) -> tuple[Any, jax.Array]:
  # Scale in lam's precision (float32), then cast back: a bfloat16 activation must receive a
  # bfloat16 cotangent, or JAX rejects the custom VJP's output dtype.
  flipped = jax.tree.map(lambda gi: (-lam * gi).astype(gi.dtype), g)
  return flipped, jnp.zeros_like(lam)


_reverse.defvjp(_reverse_fwd, _reverse_bwd)


def gradient_reversal(x: Any, lam: jax.typing.ArrayLike) -> Any:
  """Identity in the forward pass; multiplies the gradient by `-lam` in the backward pass.

  Args:
    x: a floating-point array, or a pytree of them (any float dtype).
    lam: the reversal strength, a scalar (Python float or traced array). `lam=0` stops every
      gradient to `x`; `lam=1` is plain reversal. It receives a zero gradient.

  Returns:
    `x`, unchanged.

  Raises:
    TypeError: if a leaf of `x` is not floating point (a cotangent would be meaningless).
  """
  for leaf in jax.tree.leaves(x):
    if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
      raise TypeError(
          f"gradient_reversal needs floating-point inputs, got dtype {jnp.result_type(leaf)}")
  lam = jnp.asarray(lam, dtype=jnp.float32)
  if lam.ndim != 0:
    raise ValueError(f"gradient_reversal: lam must be a scalar, got shape {lam.shape}")
  return _reverse(x, lam)
