"""Loss functions and domain-alignment penalties: pure functions on arrays, returning scalars.

Masks. Every per-example loss takes `mask` (bool, or non-negative float weights, shape [B]);
`None` means all ones. A masked mean is `sum(w * loss) / sum(w)`, and exactly 0 (never NaN, with
finite gradients) when `sum(w) == 0` -- e.g. a batch with no labelled target examples, or the
all-padding tail of an epoch. Everything is computed in float32 whatever the input dtype.

Domain alignment. Three methods pull source and target features together:
  * 'dann'  -- adversarial: `heads.DomainDiscriminator` behind gradient reversal, trained with
               `domain_bce`; it needs the model, so it is *not* a feature penalty here.
  * 'mmd'   -- `mmd_rbf`, multi-kernel RBF maximum mean discrepancy.
  * 'coral' -- `coral`, distance between feature covariances.
  * 'none'  -- zero.
`make_alignment(kind, **options)` gives the train step one interface for all of them:

    align = make_alignment(cfg.kind, **cfg.options)
    if align.uses_discriminator:
      l_dom = domain_bce(model.discriminator(h_all, lam), domain_labels, mask_all)
    else:
      l_dom = align.penalty(h_src, h_tgt, mask_src, mask_tgt)

A new penalty is one function `fn(src_feats, tgt_feats, src_mask=None, tgt_mask=None, **options)
-> scalar`, registered with `register_alignment_loss('name', fn)` (or by passing a `registry`
dict of your own to `make_alignment`); after that `kind='name'` works in configs.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "masked_mean", "masked_mse", "masked_bce_with_logits", "domain_bce", "binary_accuracy",
    "mmd_rbf", "coral", "no_alignment", "AlignmentFn", "Alignment", "ALIGNMENT_LOSSES",
    "DISCRIMINATOR_ALIGNMENTS", "register_alignment_loss", "make_alignment",
]

AlignmentFn = Callable[..., jax.Array]


# ---------------------------------------------------------------------------- masked means

def _weights(mask: jax.Array | None, shape: tuple[int, ...]) -> jax.Array:
  if mask is None:
    return jnp.ones(shape, jnp.float32)
  mask = jnp.asarray(mask)
  if mask.shape != shape:
    raise ValueError(f"mask shape {mask.shape} does not match the per-example values {shape}")
  return mask.astype(jnp.float32)


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  # Double `where`: the untaken branch must not divide by zero either, or its NaN gradient leaks.
  ok = den > 0
  return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """sum(mask * values) / sum(mask); 0 when the mask is empty. values: [B]."""
  values = jnp.asarray(values, jnp.float32)
  w = _weights(mask, values.shape)
  return _safe_div(jnp.sum(w * values), jnp.sum(w))


# ---------------------------------------------------------------------------- supervised losses

def masked_mse(pred: jax.Array, target: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Mean squared error over the masked examples. pred, target, mask: [B]."""
  err = jnp.asarray(pred, jnp.float32) - jnp.asarray(target, jnp.float32)
  return masked_mean(jnp.square(err), mask)


def masked_bce_with_logits(logits: jax.Array, target: jax.Array,
                           mask: jax.Array | None = None) -> jax.Array:
  """Binary cross-entropy from logits (optax, numerically stable); target in {0, 1} or [0, 1]."""
  loss = optax.sigmoid_binary_cross_entropy(jnp.asarray(logits, jnp.float32),
                                            jnp.asarray(target, jnp.float32))
  return masked_mean(loss, mask)


def domain_bce(logits: jax.Array, domain_labels: jax.Array,
               mask: jax.Array | None = None) -> jax.Array:
  """Domain-classification loss of the discriminator. Labels: 0 = source, 1 = target (ints ok)."""
  return masked_bce_with_logits(logits, domain_labels, mask)


def binary_accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """Fraction of masked examples where (logit > 0) == (label > 0.5). Not differentiable."""
  pred = jnp.asarray(logits) > 0
  truth = jnp.asarray(labels, jnp.float32) > 0.5
  return masked_mean((pred == truth).astype(jnp.float32), mask)


# ---------------------------------------------------------------------------- MMD

def _sq_dists(a: jax.Array, b: jax.Array) -> jax.Array:
  d = (jnp.sum(a * a, -1)[:, None] + jnp.sum(b * b, -1)[None, :] - 2.0 * a @ b.T)
  return jnp.maximum(d, 0.0)  # rounding can make ||a - a||^2 slightly negative


def _median_sq_dist(z: jax.Array, w: jax.Array) -> jax.Array:
  """Median squared distance over distinct valid pairs of z; 1 where there are none (or all 0)."""
  d = _sq_dists(z, z)
  n = z.shape[0]
  valid = (w[:, None] > 0) & (w[None, :] > 0) & ~jnp.eye(n, dtype=bool)
  med = jnp.nanmedian(jnp.where(valid, d, jnp.nan))
  return jnp.where(jnp.isfinite(med) & (med > 0), med, 1.0)


def mmd_rbf(x: jax.Array, y: jax.Array, mask_x: jax.Array | None = None,
            mask_y: jax.Array | None = None, *,
            bandwidths: Sequence[float] = (0.25, 0.5, 1.0, 2.0, 4.0),
            median_scale: bool = True, unbiased: bool = False) -> jax.Array:
  """Squared maximum mean discrepancy with a multi-kernel RBF (Gretton et al. 2012; Long et al. 2015).

  k(a, b) = mean_s exp(-||a - b||^2 / (2 sigma_s^2)), one Gaussian per bandwidth.

  Args:
    x: [n, d] source features; y: [m, d] target features.
    mask_x, mask_y: [n], [m] bool or non-negative weights (padding rows get 0).
    bandwidths: the kernel widths sigma_s. With `median_scale=True` (default) they are multipliers
      of the median heuristic sigma_med = sqrt(median pairwise squared distance of the pooled valid
      samples), so the defaults suit features of any scale; sigma_med is held constant under
      differentiation (stop_gradient), as usual. With `median_scale=False` they are absolute.
    unbiased: False (default) gives the biased V-statistic: always >= 0 and low-variance in small
      batches, but > 0 in expectation even for equal distributions (a bias of order 1/n). True
      gives the unbiased U-statistic (self-pairs i == j left out of the within-domain terms): zero
      in expectation for equal distributions, but it can be negative; needs >= 2 valid rows per
      side (else that term is 0).

  Returns:
    The scalar MMD^2 estimate (float32); 0 when either side has no valid rows.
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"mmd_rbf needs [n, d] and [m, d] features, got {x.shape} and {y.shape}")
  if not bandwidths:
    raise ValueError("mmd_rbf: bandwidths must be a non-empty sequence")
  wx = _weights(mask_x, x.shape[:1])
  wy = _weights(mask_y, y.shape[:1])
  sig2 = jnp.square(jnp.asarray(bandwidths, jnp.float32))
  if median_scale:
    pooled = jnp.concatenate([x, y])
    scale = jax.lax.stop_gradient(_median_sq_dist(pooled, jnp.concatenate([wx, wy])))
    sig2 = sig2 * scale

  def kernel(d: jax.Array) -> jax.Array:
    return jnp.mean(jnp.exp(-d[..., None] / (2.0 * sig2)), axis=-1)

  def weighted_mean_k(a, wa, b, wb, drop_diagonal):
    pair_w = wa[:, None] * wb[None, :]
    if drop_diagonal:
      pair_w = pair_w * (1.0 - jnp.eye(a.shape[0], dtype=jnp.float32))
    return _safe_div(jnp.sum(pair_w * kernel(_sq_dists(a, b))), jnp.sum(pair_w))

  kxx = weighted_mean_k(x, wx, x, wx, unbiased)
  kyy = weighted_mean_k(y, wy, y, wy, unbiased)
  kxy = weighted_mean_k(x, wx, y, wy, False)
  both = (jnp.sum(wx) > 0) & (jnp.sum(wy) > 0)
  return jnp.where(both, kxx + kyy - 2.0 * kxy, 0.0)


# ---------------------------------------------------------------------------- CORAL

def _weighted_cov(z: jax.Array, w: jax.Array) -> jax.Array:
  """Sample covariance with (n - 1) normalisation, n = sum(w) (np.cov on the valid rows)."""
  n = jnp.sum(w)
  mean = _safe_div(w @ z, n)
  zc = z - mean
  return (zc * w[:, None]).T @ zc / jnp.maximum(n - 1.0, 1.0)


def coral(x: jax.Array, y: jax.Array, mask_x: jax.Array | None = None,
          mask_y: jax.Array | None = None) -> jax.Array:
  """CORAL loss ||C_x - C_y||_F^2 / (4 d^2) (Sun & Saenko, Deep CORAL, 2016).

  C are the sample covariances (normalised by n - 1) of the valid rows of x: [n, d] and y: [m, d].
  With weights instead of a bool mask the rows count fractionally. 0 when either side is empty.
  """
  x = jnp.asarray(x, jnp.float32)
  y = jnp.asarray(y, jnp.float32)
  if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
    raise ValueError(f"coral needs [n, d] and [m, d] features, got {x.shape} and {y.shape}")
  wx = _weights(mask_x, x.shape[:1])
  wy = _weights(mask_y, y.shape[:1])
  d = x.shape[1]
  diff = _weighted_cov(x, wx) - _weighted_cov(y, wy)
  loss = jnp.sum(jnp.square(diff)) / (4.0 * d * d)
  return jnp.where((jnp.sum(wx) > 0) & (jnp.sum(wy) > 0), loss, 0.0)


def no_alignment(x: jax.Array, y: jax.Array, mask_x: jax.Array | None = None,
                 mask_y: jax.Array | None = None) -> jax.Array:
  """The 'none' penalty: 0.0 (keeps the step's loss structure identical across methods)."""
  del x, y, mask_x, mask_y
  return jnp.zeros((), jnp.float32)


# ---------------------------------------------------------------------------- registry

# Feature penalties `fn(src, tgt, src_mask, tgt_mask, **options) -> scalar`, by config name.
ALIGNMENT_LOSSES: dict[str, AlignmentFn] = {
    "mmd": mmd_rbf,
    "coral": coral,
    "none": no_alignment,
}
# Methods that align through the model's DomainDiscriminator instead of a feature penalty.
DISCRIMINATOR_ALIGNMENTS = frozenset({"dann"})


class Alignment(NamedTuple):
  """What the train step needs to apply a domain-alignment method.

  uses_discriminator: True for 'dann': compute `domain_bce(discriminator(h, lam), labels, mask)`.
  penalty: otherwise a function `(src_feats, tgt_feats, src_mask, tgt_mask) -> scalar` with the
    options already bound; None when `uses_discriminator`.
  """
  kind: str
  uses_discriminator: bool
  penalty: Callable[[jax.Array, jax.Array, jax.Array | None, jax.Array | None], jax.Array] | None


def register_alignment_loss(name: str, fn: AlignmentFn, *, overwrite: bool = False,
                            registry: dict[str, AlignmentFn] | None = None) -> AlignmentFn:
  """Adds a feature penalty under `name` (to ALIGNMENT_LOSSES unless `registry` is given).

  `fn(src_feats, tgt_feats, src_mask=None, tgt_mask=None, **options) -> scalar` must be pure and
  jit-able; options come from the config via `make_alignment(name, **options)`. Returns `fn`, so
  it also works as a decorator: `functools.partial(register_alignment_loss, 'name')`.
  """
  registry = ALIGNMENT_LOSSES if registry is None else registry
  if name in DISCRIMINATOR_ALIGNMENTS:
    raise ValueError(f"alignment name {name!r} is reserved for the discriminator-based method")
  if name in registry and not overwrite:
    raise ValueError(f"alignment loss {name!r} is already registered (pass overwrite=True)")
  registry[name] = fn
  return fn


def make_alignment(kind: str, registry: Mapping[str, AlignmentFn] | None = None,
                   **options) -> Alignment:
  """Resolves a config's alignment `kind` (+ options for penalties, e.g. bandwidths) to an Alignment.

  Raises ValueError naming the unknown kind or option (checked here, not at trace time).
  """
  registry = ALIGNMENT_LOSSES if registry is None else registry
  if kind in DISCRIMINATOR_ALIGNMENTS:
    if options:
      raise ValueError(f"alignment kind {kind!r} takes no penalty options, got {sorted(options)}")
    return Alignment(kind, True, None)
  if kind not in registry:
    known = sorted(set(registry) | DISCRIMINATOR_ALIGNMENTS)
    raise ValueError(f"unknown alignment kind {kind!r}; known kinds: {known}")
  fn = registry[kind]
  try:
    inspect.signature(fn).bind(None, None, None, None, **options)
  except TypeError as e:
    raise ValueError(f"bad options for alignment kind {kind!r}: {sorted(options)} ({e})") from None
  return Alignment(kind, False, functools.partial(fn, **options) if options else fn)
