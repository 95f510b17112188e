"""Baselines from the standard libraries, behind the `baselines` extra (`pip install crossrec_jax[baselines]`).

  als, bpr      implicit's AlternatingLeastSquares / BayesianPersonalizedRanking (ranking only)
  item_knn      implicit's CosineRecommender: score(u, i) = sum over u's train items j of cos(j, i),
                each item keeping its K nearest neighbours (ranking only)
  surprise_svd  scikit-surprise SVD (ratings; ranks by predicted rating)
  surprise_knn  scikit-surprise item-based KNNBaseline with pearson_baseline similarity (ratings)

They take the same plain index arrays as eval/baselines.py and expose the same `score` (and, for
rating models, `predict`), so `run_baselines` and `evaluate.evaluate_model` treat them like ours.
The libraries are imported only when a model is built: without the extra, naming one of them is a
one-line error saying what to install. Settings are the libraries' defaults (YARDSTICKS.md measured
with them, seed 0), except where noted; implicit runs single-threaded so results repeat exactly.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any, Callable
import warnings

import numpy as np

from crossrec_jax.eval import baselines

RANKING = ("als", "bpr", "item_knn")
RATING = ("surprise_svd", "surprise_knn")
NAMES = RANKING + RATING
_PACKAGE = {"implicit": "implicit", "surprise": "scikit-surprise"}


class MissingExtra(ImportError):
  """A baseline of the `baselines` extra was asked for, but its library is not installed."""


def _require(module: str, name: str) -> Any:
  try:
    return importlib.import_module(module)
  except ImportError:
    raise MissingExtra(f"baseline {name!r} needs {_PACKAGE[module.split('.')[0]]}: "
                       "pip install 'crossrec_jax[baselines]'") from None


def _interactions(user_idx, item_idx, n_users: int | None, n_items: int | None):
  """[U, I] binary CSR matrix of the (user, item) pairs (repeats count once)."""
  sparse = importlib.import_module("scipy.sparse")
  u = baselines._index(user_idx, "user_idx")  # pylint: disable=protected-access
  i = baselines._index(item_idx, "item_idx")  # pylint: disable=protected-access
  if not u.size or u.shape != i.shape:
    raise ValueError(f"need equal non-empty lengths, got users {u.shape}, items {i.shape}")
  shape = (baselines._size(u, n_users, "n_users"), baselines._size(i, n_items, "n_items"))  # pylint: disable=protected-access
  x = sparse.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=shape)
  x.data[:] = 1.0  # duplicates were summed
  return x


@contextlib.contextmanager
def _one_blas_thread():
  """implicit warns (check_blas_config, at construction) and slows down when BLAS runs threads of
  its own inside implicit's parallel loops: one BLAS thread while building and fitting."""
  threadpoolctl = importlib.import_module("threadpoolctl")
  with threadpoolctl.threadpool_limits(1, "blas"):
    yield


def _candidates(users, items) -> tuple[np.ndarray, np.ndarray]:
  users = baselines._index(np.asarray(users).reshape(-1), "users")  # pylint: disable=protected-access
  items = np.asarray(items)
  flat = baselines._index(items.reshape(-1), "items").reshape(items.shape)  # pylint: disable=protected-access
  return users, np.broadcast_to(flat, (users.size,) + flat.shape[-1:])


class _Factors:
  """Ranking by user . item factors; users/items past the fitted tables score 0."""

  def score(self, users, items) -> np.ndarray:
    """[U, C] scores of items ([U, C] or [C]) for users [U]."""
    users, items = _candidates(users, items)
    uf = np.zeros((users.size, self.user_factors.shape[1]), np.float32)
    known_u = users < len(self.user_factors)
    uf[known_u] = self.user_factors[users[known_u]]
    known_i = items < len(self.item_factors)
    itf = self.item_factors[np.where(known_i, items, 0)] * known_i[..., None]
    return np.einsum("uf,ucf->uc", uf, itf)

  def _fit_implicit(self, make: Callable[[], Any], user_idx, item_idx, n_users, n_items) -> None:
    x = _interactions(user_idx, item_idx, n_users, n_items)
    with _one_blas_thread():
      model = make()
      model.fit(x, show_progress=False)
    self.user_factors = np.asarray(model.user_factors)
    self.item_factors = np.asarray(model.item_factors)


class ALS(_Factors):
  """implicit's AlternatingLeastSquares on binary interactions (its defaults: 100 factors, reg
  0.01, 15 iterations, confidence 1 + 1 * x)."""

  def __init__(self, factors: int = 100, regularization: float = 0.01, iterations: int = 15,
               seed: int = 0):
    self.kw = dict(factors=factors, regularization=regularization, iterations=iterations,
                   random_state=seed)

  def fit(self, user_idx, item_idx, n_users: int | None = None, n_items: int | None = None) -> ALS:
    als = _require("implicit.cpu.als", "als")
    self._fit_implicit(lambda: als.AlternatingLeastSquares(**self.kw, num_threads=1), user_idx,
                       item_idx, n_users, n_items)
    return self


class BPR(_Factors):
  """implicit's BayesianPersonalizedRanking (its defaults: 100 factors, lr 0.01, reg 0.01, 100
  iterations). The last factor column is implicit's item bias (the user side holds a 1)."""

  def __init__(self, factors: int = 100, learning_rate: float = 0.01,
               regularization: float = 0.01, iterations: int = 100, seed: int = 0):
    self.kw = dict(factors=factors, learning_rate=learning_rate, regularization=regularization,
                   iterations=iterations, random_state=seed)

  def fit(self, user_idx, item_idx, n_users: int | None = None, n_items: int | None = None) -> BPR:
    bpr = _require("implicit.cpu.bpr", "bpr")
    # One thread: implicit's BPR is Hogwild SGD, whose result depends on thread timing.
    self._fit_implicit(lambda: bpr.BayesianPersonalizedRanking(**self.kw, num_threads=1),
                       user_idx, item_idx, n_users, n_items)
    return self


class ItemKNN:
  """Item-based cosine KNN (implicit's CosineRecommender, K neighbours per item; RecBole's ItemKNN
  default is K=100). score(u, i) = sum_{j in train(u)} sim(j, i)."""

  def __init__(self, k: int = 100):
    self.k = k

  def fit(self, user_idx, item_idx, n_users: int | None = None, n_items: int | None = None
          ) -> ItemKNN:
    nn = _require("implicit.nearest_neighbours", "item_knn")
    self.x = _interactions(user_idx, item_idx, n_users, n_items)
    knn = nn.CosineRecommender(K=self.k, num_threads=1)
    with warnings.catch_warnings():
      # implicit converts its own transposed matrix internally and warns about it (a ParameterWarning).
      warnings.filterwarnings("ignore", message="Method expects CSR input")
      knn.fit(self.x, show_progress=False)
    self.similarity = knn.similarity.tocsr()  # [I, I]
    return self

  def user_scores(self, users) -> np.ndarray:
    """[U, I] scores of every item for users [U] (unknown users: all 0)."""
    users = baselines._index(np.asarray(users).reshape(-1), "users")  # pylint: disable=protected-access
    known = users < self.x.shape[0]
    out = np.zeros((users.size, self.x.shape[1]), np.float32)
    if known.any():
      out[known] = (self.x[users[known]] @ self.similarity).toarray()
    return out

  def score(self, users, items) -> np.ndarray:
    users, items = _candidates(users, items)
    full = self.user_scores(users)
    inside = items < full.shape[1]
    return np.where(inside, np.take_along_axis(full, np.where(inside, items, 0), 1), 0.0)


class _Surprise(baselines._Rater):  # pylint: disable=protected-access
  """A scikit-surprise algorithm trained on (user, item, rating) index triplets."""

  def __init__(self, scale: tuple[float, float], clip: bool = True):
    # surprise clips its predictions to the rating scale; clip=False reports the raw estimate.
    self.scale = scale
    self.clip = tuple(scale) if clip else None

  def _trainset(self, name: str, user_idx, item_idx, rating):
    surprise = _require("surprise", name)
    u, i, r = baselines._triplet(user_idx, item_idx, rating)  # pylint: disable=protected-access
    reader = surprise.Reader(rating_scale=tuple(self.scale))
    raw = [(int(a), int(b), float(c), None) for a, b, c in zip(u, i, r)]
    trainset = surprise.Dataset(reader).construct_trainset(raw)
    self.mu = float(trainset.global_mean)
    return surprise, trainset


class SurpriseSVD(_Surprise):
  """scikit-surprise SVD; defaults are YARDSTICKS' 'SVD tuned on valid' (50 factors, reg 0.05, 40
  epochs; lr surprise's 0.005). Predictions are vectorised from its fitted tables with surprise's
  own fallback (b_u if the user is known, b_i if the item is, p_u . q_i if both)."""

  def __init__(self, scale: tuple[float, float] = (1.0, 5.0), n_factors: int = 50,
               reg_all: float = 0.05, n_epochs: int = 40, seed: int = 0, clip: bool = True):
    super().__init__(scale, clip)
    self.kw = dict(n_factors=n_factors, reg_all=reg_all, n_epochs=n_epochs, random_state=seed)

  def fit(self, user_idx, item_idx, rating) -> SurpriseSVD:
    surprise, trainset = self._trainset("surprise_svd", user_idx, item_idx, rating)
    algo = surprise.SVD(**self.kw).fit(trainset)
    n_u = 1 + max(trainset.to_raw_uid(k) for k in trainset.all_users())
    n_i = 1 + max(trainset.to_raw_iid(k) for k in trainset.all_items())
    self.inner_u, self.inner_i = np.full(n_u, -1), np.full(n_i, -1)
    for k in trainset.all_users():
      self.inner_u[trainset.to_raw_uid(k)] = k
    for k in trainset.all_items():
      self.inner_i[trainset.to_raw_iid(k)] = k
    self.bu, self.bi, self.pu, self.qi = algo.bu, algo.bi, algo.pu, algo.qi
    return self

  def _predict(self, u, i):
    ku = baselines._lookup(self.inner_u + 1.0, u).astype(np.int64) - 1  # pylint: disable=protected-access
    ki = baselines._lookup(self.inner_i + 1.0, i).astype(np.int64) - 1  # pylint: disable=protected-access
    uu, ii = np.maximum(ku, 0), np.maximum(ki, 0)
    dot = np.sum(self.pu[uu] * self.qi[ii], axis=1)
    return (self.mu + np.where(ku >= 0, self.bu[uu], 0.0) + np.where(ki >= 0, self.bi[ii], 0.0)
            + np.where((ku >= 0) & (ki >= 0), dot, 0.0))


class SurpriseKNNBaseline(_Surprise):
  """scikit-surprise KNNBaseline, item-based with pearson_baseline similarity (k 40, the
  'item KNNBaseline' of YARDSTICKS). Predicts one pair at a time (surprise has no batch call):
  fine for rating rows, slow for full ranking."""

  def __init__(self, scale: tuple[float, float] = (1.0, 5.0), k: int = 40, clip: bool = True):
    super().__init__(scale, clip)
    self.k = k

  def fit(self, user_idx, item_idx, rating) -> SurpriseKNNBaseline:
    surprise, trainset = self._trainset("surprise_knn", user_idx, item_idx, rating)
    sim = {"name": "pearson_baseline", "user_based": False}
    self.algo = surprise.KNNBaseline(k=self.k, sim_options=sim, verbose=False).fit(trainset)
    return self

  def _predict(self, u, i):
    # clip=False: _Rater clips (or not) afterwards, like every other rating model.
    return np.array([self.algo.predict(int(a), int(b), clip=False).est for a, b in zip(u, i)])


def build(name: str, *, scale: tuple[float, float] = (1.0, 5.0), seed: int = 0,
          **kw: Any) -> Any:
  """An unfitted external baseline by name (see NAMES); `kw` overrides its settings."""
  if name == "als":
    return ALS(seed=seed, **kw)
  if name == "bpr":
    return BPR(seed=seed, **kw)
  if name == "item_knn":
    return ItemKNN(**kw)
  if name == "surprise_svd":
    return SurpriseSVD(scale=scale, seed=seed, **kw)
  if name == "surprise_knn":
    return SurpriseKNNBaseline(scale=scale, **kw)
  raise ValueError(f"unknown external baseline {name!r}; known: {NAMES}")
