"""PNG plots of a transfer study (matplotlib, Agg backend: no display needed).

  learning_curves(curves, path)     train loss and target-valid RMSE vs global step, per method
  metric_vs_fraction(rows, metric, path)  mean ± std of a metric per method vs target label fraction
  feature_pca(panels, path)         2-D PCA of pooled features coloured by domain, one panel per model,
                                    titled with the held-out discriminator accuracy / proxy A-distance
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position


def read_metrics_jsonl(path: str | pathlib.Path) -> list[dict[str, Any]]:
  """The trainer's metrics.jsonl as a list of dicts (a bad line is an error naming it)."""
  lines = []
  with open(path, encoding="utf-8") as f:
    for n, line in enumerate(f, 1):
      if line.strip():
        try:
          lines.append(json.loads(line))
        except json.JSONDecodeError as e:
          raise ValueError(f"{path}:{n}: not JSON ({e})") from None
  return lines


def learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | pathlib.Path,
                    title: str = "") -> pathlib.Path:
  """curves: method -> metrics.jsonl records. Left: train 'loss'; right: target-valid 'rmse'."""
  fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
  for method, records in curves.items():
    train = [(r["global_step"], r["loss"]) for r in records
             if r.get("split") == "train" and "loss" in r]
    valid = [(r["global_step"], r["rmse"]) for r in records
             if r.get("split") == "target_valid" and "rmse" in r]
    if train:
      ax_loss.plot(*zip(*train), label=method)
    if valid:
      ax_val.plot(*zip(*valid), marker="o", label=method)
  ax_loss.set(xlabel="global step", ylabel="train loss (weighted sum)", yscale="log",
              title="training loss")
  ax_val.set(xlabel="global step", ylabel="RMSE (target scale)", title="target valid RMSE")
  for ax in (ax_loss, ax_val):
    ax.grid(alpha=0.3)
    if ax.lines:
      ax.legend(fontsize=8)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def metric_vs_fraction(rows: Sequence[Mapping[str, Any]], metric: str, path: str | pathlib.Path,
                       title: str = "") -> pathlib.Path:
  """Mean ± std over seeds of `metric` per method (one line each) at each label fraction.

  Fractions sit on evenly spaced categorical positions (0%, 1%, 10%, 100% do not fit a log axis).
  """
  fractions = sorted({float(r["label_fraction"]) for r in rows})
  pos = {f: k for k, f in enumerate(fractions)}
  methods = list(dict.fromkeys(r["method"] for r in rows))
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for m_i, method in enumerate(methods):
    xs, means, stds = [], [], []
    for f in fractions:
      vals = [float(r[metric]) for r in rows if r["method"] == method
              and float(r["label_fraction"]) == f and _finite(r.get(metric))]
      if vals:
        xs.append(pos[f] + 0.04 * (m_i - len(methods) / 2))  # jitter so error bars do not overlap
        means.append(np.mean(vals))
        stds.append(np.std(vals))
    if xs:
      style = "--" if r_kind(rows, method) == "baseline" else "-"
      ax.errorbar(xs, means, yerr=stds, marker="o", linestyle=style, capsize=3, label=method)
  ax.set_xticks(range(len(fractions)), [f"{100 * f:g}%" for f in fractions])
  ax.set(xlabel="target label fraction", ylabel=metric, title=title or f"{metric} vs labels")
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, ncol=2)
  return _save(fig, path)


def r_kind(rows: Sequence[Mapping[str, Any]], method: str) -> str:
  return next((str(r.get("kind", "")) for r in rows if r["method"] == method), "")


def pca_2d(x: np.ndarray) -> np.ndarray:
  """Projection of the rows of x onto their top two principal components (SVD of centred x)."""
  x = np.asarray(x, np.float64)
  centred = x - x.mean(0)
  _, _, vt = np.linalg.svd(centred, full_matrices=False)
  return centred @ vt[:2].T


def feature_pca(panels: Mapping[str, tuple[np.ndarray, np.ndarray, Mapping[str, float]]],
                path: str | pathlib.Path, title: str = "") -> pathlib.Path:
  """panels: name -> (source features [Ns, H], target features [Nt, H], {'domain_acc', 'pad'}).

  Each panel is its own PCA of the pooled (source + target) features.
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.2), squeeze=False)
  for ax, (name, (src, tgt, sep)) in zip(axes[0], panels.items()):
    z = pca_2d(np.concatenate([src, tgt]))
    ax.scatter(z[:len(src), 0], z[:len(src), 1], s=6, alpha=0.5, label=f"source ({len(src)})")
    ax.scatter(z[len(src):, 0], z[len(src):, 1], s=6, alpha=0.5, label=f"target ({len(tgt)})")
    ax.set_title(f"{name}\ndiscriminator acc {sep['domain_acc']:.3f}, PAD {sep['pad']:.2f}",
                 fontsize=9)
    ax.set(xlabel="PC 1", ylabel="PC 2")
    ax.legend(fontsize=7)
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def _finite(x: Any) -> bool:
  try:
    return np.isfinite(float(x))
  except (TypeError, ValueError):
    return False


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
