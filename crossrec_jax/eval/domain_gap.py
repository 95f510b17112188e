"""How far apart two domains' features are: a held-out linear discriminator and the proxy A-distance.

Used by the study's feature panels and `experiments/adaptation_check.py` to measure whether an
alignment (DANN, MMD, CORAL) closed the domain gap.
"""

from __future__ import annotations

import numpy as np

__all__ = ["proxy_a_distance"]


def proxy_a_distance(source_features, target_features, *, seed: int = 0, l2: float = 1e-2,
                     iters: int = 25) -> dict[str, float]:
  """Discriminator accuracy and proxy A-distance (Ben-David et al.) of two feature sets.

  An L2-regularised logistic regression (Newton's method, features standardised on the training
  half) is fitted on a seeded half of each domain's rows and tested on the other half:
  PAD = 2 (1 - 2 err), 0 when the domains are indistinguishable, 2 when perfectly separable.
  Returns 'domain_acc' (held-out accuracy), 'pad', 'n_source', 'n_target'.
  """
  xs, xt = np.asarray(source_features, np.float64), np.asarray(target_features, np.float64)
  if xs.ndim != 2 or xt.ndim != 2 or xs.shape[1] != xt.shape[1] or min(len(xs), len(xt)) < 4:
    raise ValueError(f"need two [N, H] feature sets with N >= 4, got {xs.shape} and {xt.shape}")
  rng = np.random.default_rng(seed)
  halves = [np.array_split(rng.permutation(len(x)), 2) for x in (xs, xt)]
  def part(k):
    x = np.concatenate([xs[halves[0][k]], xt[halves[1][k]]])
    y = np.concatenate([np.zeros(len(halves[0][k])), np.ones(len(halves[1][k]))])
    return x, y
  (x_tr, y_tr), (x_te, y_te) = part(0), part(1)
  mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
  def design(x):
    return np.concatenate([(x - mean) / std, np.ones((len(x), 1))], axis=1)
  a, a_te = design(x_tr), design(x_te)
  w = np.zeros(a.shape[1])
  reg = l2 * len(a) * np.r_[np.ones(a.shape[1] - 1), 0.0]  # the intercept is not penalised
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-np.clip(a @ w, -30, 30)))
    grad = a.T @ (p - y_tr) + reg * w
    hess = (a * (p * (1 - p))[:, None]).T @ a + np.diag(reg) + 1e-9 * np.eye(len(w))
    step = np.linalg.solve(hess, grad)
    w -= step
    if np.max(np.abs(step)) < 1e-8:
      break
  err = float(np.mean(((a_te @ w) > 0) != (y_te > 0.5)))
  return {"domain_acc": 1.0 - err, "pad": 2.0 * (1.0 - 2.0 * err),
          "n_source": float(len(xs)), "n_target": float(len(xt))}
