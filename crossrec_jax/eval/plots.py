"""PNG plots of a transfer study (matplotlib, Agg backend: no display needed).

  learning_curves(curves, path)     per method: one panel per training loss term (source rating,
                                    target rating, domain) and the target-valid RMSE of every
                                    periodic evaluation, against the global step
  metric_vs_fraction(rows, metric, path)  mean ± std of a metric per method vs target label fraction
  feature_pca(panels, path)         2-D PCA of pooled features coloured by domain, one panel per model,
                                    titled with the held-out discriminator accuracy / proxy A-distance

Every method keeps one colour and one marker in every figure (`method_style`): a fixed palette of
distinct colours, no colour reused within a figure; text models draw solid lines, baselines dashed.
Legends sit outside the axes, right of the panels, so they hide no point.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: files only, never a window
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import ticker  # pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

# The study's methods and baselines in a fixed order, so a method's style is the same in every
# figure whichever subset a figure shows; other names take the next free style.
KNOWN_METHODS = ("target_only", "source_only", "finetune", "dann", "joint", "joint_dann",
                 "global_mean", "bias", "mf", "surprise_svd", "surprise_knn", "title_prior",
                 "popularity", "als", "bpr", "item_knn")
# 20 colours told apart at a glance: tab10, then hues tab10 lacks or far darker / brighter ones
# (checked side by side: no two of the first 16, the study's methods, read as the same colour).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#000000", "#000080", "#b8860b", "#006400", "#ff00ff", "#ffd700",
           "#00ff7f", "#800000", "#4b0082", "#708090")
# Filled markers only (line-only ones such as "1" or "+" vanish at plot sizes); then filled
# 6- and 8-pointed stars and polygons, as matplotlib's (sides, style, angle) tuples.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">", "h", "p", "d", "8", "H", (6, 1, 0),
           (8, 1, 0), (7, 0, 0), (4, 1, 0), (9, 0, 0))
# The training loss terms (unweighted, as the trainer logs them) and their panel titles.
LOSS_TERMS = (("loss_source", "source rating loss"), ("loss_target", "target rating loss"),
              ("loss_domain", "domain loss (discriminator / penalty)"))


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


def method_style(method: str, others: Sequence[str] = ()) -> dict[str, Any]:
  """matplotlib kwargs (color, marker) of `method`; `others` are the figure's other unknown
  methods, which take the styles after KNOWN_METHODS' in their order."""
  extra = [m for m in dict.fromkeys(others) if m not in KNOWN_METHODS]
  k = KNOWN_METHODS.index(method) if method in KNOWN_METHODS else (
      len(KNOWN_METHODS) + (extra.index(method) if method in extra else len(extra)))
  if k >= len(PALETTE):
    raise ValueError(f"more than {len(PALETTE)} methods to plot: {method!r} has no distinct colour")
  return {"color": PALETTE[k], "marker": MARKERS[k]}


def learning_curves(curves: Mapping[str, Sequence[Mapping[str, Any]]], path: str | pathlib.Path,
                    title: str = "", valid_metric: str = "rmse",
                    loss_titles: Mapping[str, str] | None = None) -> pathlib.Path:
  """curves: method -> metrics.jsonl records. One panel per loss term a method logs, then the
  target-valid `valid_metric` of every evaluation (periodic `train.eval_every` ones and phase
  ends): RMSE for the rating models, the selection metric (e.g. 'NDCG@10') for the bi-encoder.
  `loss_titles` renames loss panels (the bi-encoder's losses are retrieval losses, not ratings).

  A term a method does not train (e.g. no domain loss for target_only) is left out of its panel.
  Methods whose curves coincide (finetune's first phase is source_only) stay visible: each later
  method is drawn thinner, on top.
  """
  titles = {**dict(LOSS_TERMS), **dict(loss_titles or {})}
  terms = [(k, titles[k]) for k, _ in LOSS_TERMS
           if any(_trained(r, k) for recs in curves.values() for r in recs)]
  valid_name = "RMSE" if valid_metric == "rmse" else valid_metric
  panels = [*terms, (valid_metric, f"target valid {valid_name}")]
  fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels) + 2.2, 3.8), squeeze=False)
  axes = axes[0]
  for order, (method, records) in enumerate(curves.items()):
    style = {**method_style(method, list(curves)), "lw": max(4.5 - 0.7 * order, 1.0),
             "markersize": max(9.0 - 0.9 * order, 4.0), "alpha": 0.9, "label": method}
    for ax, (key, _) in zip(axes, panels):
      split = "target_valid" if key == valid_metric else "train"
      pts = [(r["global_step"], r[key]) for r in records if r.get("split") == split
             and _finite(r.get(key)) and (key == valid_metric or _trained(r, key))]
      if pts:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, markevery=max(len(xs) // 8, 1), **style)
  for ax, (key, name) in zip(axes, panels):
    ylabel = "loss (unweighted)" if key != valid_metric else (
        "RMSE (target scale)" if key == "rmse" else valid_name)
    ax.set(xlabel="global step", title=name, ylabel=ylabel)
    _readable(ax, integer_x=True)
  _legend_right(fig, axes, list(curves))
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def _trained(record: Mapping[str, Any], key: str) -> bool:
  """The record logs loss term `key` with a non-zero weight (w_source for loss_source, ...)."""
  if record.get("split") != "train" or not _finite(record.get(key)):
    return False
  weight = record.get("w_" + key.removeprefix("loss_"))
  return weight is None or float(weight) != 0.0


def metric_vs_fraction(rows: Sequence[Mapping[str, Any]], metric: str, path: str | pathlib.Path,
                       title: str = "") -> pathlib.Path:
  """Mean ± std over seeds of `metric` per method (one line each) at each label fraction.

  Fractions sit on evenly spaced categorical positions (0%, 1%, 10%, 100% do not fit a log axis).
  """
  fractions = sorted({float(r["label_fraction"]) for r in rows})
  pos = {f: k for k, f in enumerate(fractions)}
  methods = _in_known_order(dict.fromkeys(r["method"] for r in rows))
  fig, ax = plt.subplots(figsize=(8.5, 4.5))
  for m_i, method in enumerate(methods):
    xs, means, stds = [], [], []
    for f in fractions:
      vals = [float(r[metric]) for r in rows if r["method"] == method
              and float(r["label_fraction"]) == f and _finite(r.get(metric))]
      if vals:
        # Jitter within ±0.2 of the fraction's position so error bars and markers do not overlap.
        xs.append(pos[f] + 0.4 * (m_i / max(len(methods) - 1, 1) - 0.5))
        means.append(np.mean(vals))
        stds.append(np.std(vals))
    if xs:
      style = "--" if r_kind(rows, method) == "baseline" else "-"
      ax.errorbar(xs, means, yerr=stds, linestyle=style, capsize=3, markersize=6, lw=1.4,
                  label=method + (" (baseline)" if style == "--" else ""),
                  **method_style(method, methods))
  ax.set_xticks(range(len(fractions)), [f"{100 * f:g}%" for f in fractions])
  ax.set_xlim(-0.5, len(fractions) - 0.5)
  ax.set(xlabel="target label fraction", ylabel=metric, title=title or f"{metric} vs labels")
  _readable(ax, x=False)
  _legend_right(fig, [ax])
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
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels) + 1.8, 4.4), squeeze=False)
  for ax, (name, (src, tgt, sep)) in zip(axes[0], panels.items()):
    z = pca_2d(np.concatenate([src, tgt]))
    ax.scatter(z[:len(src), 0], z[:len(src), 1], s=8, alpha=0.5, marker="o", color=PALETTE[0],
               label=f"source ({len(src)})")
    ax.scatter(z[len(src):, 0], z[len(src):, 1], s=8, alpha=0.5, marker="^", color=PALETTE[1],
               label=f"target ({len(tgt)})")
    ax.set_title(f"{name}\ndiscriminator acc {sep['domain_acc']:.3f}, PAD {sep['pad']:.2f}",
                 fontsize=9)
    ax.set(xlabel="PC 1", ylabel="PC 2")
    _readable(ax)
  _legend_right(fig, axes[0][-1:])
  if title:
    fig.suptitle(title, fontsize=9)
  return _save(fig, path)


def _in_known_order(methods) -> list[str]:
  """KNOWN_METHODS' order first (text models, then baselines), other names after, as given."""
  methods = list(methods)
  return sorted(methods, key=lambda m: (KNOWN_METHODS.index(m) if m in KNOWN_METHODS
                                        else len(KNOWN_METHODS) + methods.index(m)))


def _readable(ax, x: bool = True, integer_x: bool = False) -> None:
  """At most ~6 ticks per axis with short labels (beyond 1e-3 .. 1e4 a power of ten moves to the
  axis' offset text); steps get integer ticks."""
  axes = (ax.xaxis, ax.yaxis) if x else (ax.yaxis,)
  for axis in axes:
    integer = integer_x and axis is ax.xaxis
    axis.set_major_locator(ticker.MaxNLocator(nbins=5, min_n_ticks=3, integer=integer))
    formatter = ticker.ScalarFormatter(useMathText=False)
    formatter.set_powerlimits((-3, 4))
    axis.set_major_formatter(formatter)
  ax.tick_params(labelsize=8)
  ax.grid(alpha=0.3)


def _legend_right(fig, axes, order: Sequence[str] = ()) -> None:
  """One legend for the figure, outside the last panel's right edge (no data hidden), entries in
  `order` first (the methods' order), then as the panels show them."""
  handles = {}
  for ax in axes:
    for h, label in zip(*ax.get_legend_handles_labels()):
      handles.setdefault(label, h)
  labels = [k for k in order if k in handles] + [k for k in handles if k not in order]
  if labels:
    axes[-1].legend([handles[k] for k in labels], labels, loc="upper left",
                    bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, fontsize=8, frameon=False)


def _finite(x: Any) -> bool:
  try:
    return np.isfinite(float(x))
  except (TypeError, ValueError):
    return False


def _save(fig, path: str | pathlib.Path) -> pathlib.Path:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=120, bbox_inches="tight")  # bbox: keeps the outside legend in the file
  plt.close(fig)
  return path
