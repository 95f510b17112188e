"""The closed-form minimiser of the bias model's ridge objective (pure numpy).

    min_{b_u, b_i}  sum_(u,i) (r_ui - mu - b_u - b_i)^2 + reg_i * sum_i (b_i - prior_i)^2
                                                     + reg_u * sum_u b_u^2

solved by alternating exact updates (items first, then users: scikit-surprise's BaselineOnly ALS
order). Two users: `eval/baselines.BiasModel` (the bias and title-prior baselines) and the hybrid
task, which starts its ID biases at this solution (`tasks/hybrid.py`, `model.hybrid.init_biases`)
so that training begins at the bias model's predictions and learns what text and IDs add.
"""

from __future__ import annotations

import numpy as np

__all__ = ["fit_biases"]


def fit_biases(user: np.ndarray, item: np.ndarray, rating: np.ndarray, num_users: int,
               num_items: int, *, prior: np.ndarray | None = None, reg_i: float = 10.0,
               reg_u: float = 15.0, epochs: int = 10) -> tuple[float, np.ndarray, np.ndarray]:
  """(mu, b_u [num_users], b_i [num_items]) for integer index arrays and their ratings; mu is the
  ratings' mean. An item with no rating gets b_i = prior_i (0 without a prior), a user none 0."""
  user, item = np.asarray(user, np.int64), np.asarray(item, np.int64)
  rating = np.asarray(rating, np.float64)
  prior = np.zeros(num_items) if prior is None else np.asarray(prior, np.float64)
  mu = float(rating.mean())
  n_u = np.bincount(user, minlength=num_users)
  n_i = np.bincount(item, minlength=num_items)
  b_u, b_i = np.zeros(num_users), prior.copy()
  resid = rating - mu
  for _ in range(epochs):
    dev_i = np.bincount(item, weights=resid - b_u[user], minlength=num_items)
    b_i = (dev_i + reg_i * prior) / (reg_i + n_i)
    dev_u = np.bincount(user, weights=resid - b_i[item], minlength=num_users)
    b_u = dev_u / (reg_u + n_u)
  return mu, b_u, b_i
