"""The bi-encoder in the study: RecBole-CDR's protocol, scored by the run itself, and its table.

A study with `architecture = 'bi_encoder'` (`crossrec_jax/configs/bi_encoder_study.py`) runs the
method x seed grid (one label fraction, 100%) through `study/runner.py` like the cross-encoder's
study (same resume, eval.json, results.csv, verdict lines, learning curves); what differs is here:

  * `BiCell`: the runs of one seed share one `data.bi_prepare.BiPreparedData` (the protocol's
    split of that seed, the catalogue, cached item vectors). A run is scored by what it wrote:
    its final_metrics.json 'target_test' (full ranking of the parameters selected on
    target-valid by `train.select`; `study/finished.final_metrics`).
  * Baselines are the protocol's references (EASE, `study/recbole_cdr.run_ease`), fitted on the
    same prepared data; `study.peer` rows are published numbers on the same protocol.
  * `write_outputs`: a methods x metrics table (`report.metric_table`) instead of methods x
    label fractions.
"""

from __future__ import annotations

import os
import pathlib
import platform
from typing import Any, Mapping, Sequence

import ml_collections

from crossrec_jax.eval import plots
from crossrec_jax.study import finished
from crossrec_jax.study import grid
from crossrec_jax.study import report


# The bi-encoder's per-domain losses: a softmax over the domain's catalogue (objectives/bi_encoder.py).
RETRIEVAL_LOSS_TITLES = {"loss_source": "source retrieval loss (softmax)",
                         "loss_target": "target retrieval loss (softmax)"}


class BiCell:
  """What the bi-encoder runs of one seed share (see the module docstring)."""

  def __init__(self, study: ml_collections.ConfigDict, fraction: float, seed: int,
               config: ml_collections.ConfigDict):
    self.study, self.fraction, self.seed, self.config = study, fraction, seed, config
    self._prepared = None

  @property
  def prepared(self):
    if self._prepared is None:
      from crossrec_jax.data import bi_prepare  # pylint: disable=g-import-not-at-top
      self._prepared = bi_prepare.BiPreparedData(self.config)
    return self._prepared

  def ready(self) -> None:
    self.prepared  # pylint: disable=pointless-statement

  def summary(self) -> str:
    r = self.prepared.report
    return (f"RecBole-CDR protocol, seed {self.seed}: target {r['target_users']} users, "
            f"{r['target_items']} items, split {r['split']}")

  def score(self, config: ml_collections.ConfigDict, run_dir: pathlib.Path) -> dict[str, float]:
    del config  # the run evaluated its selected parameters itself
    return finished.final_metrics(run_dir)

  def fit_baseline(self, name: str, out_dir: pathlib.Path) -> dict[str, float]:
    """A reference of the protocol (`recbole_cdr.run_ease`: EASE / EASE + source rows)."""
    from crossrec_jax.study import recbole_cdr  # pylint: disable=g-import-not-at-top
    # A reference fits on the data of the methods' runs; run_ease reads the method's name.
    config = grid.run_config(self.study, self.study.methods[0], self.fraction, self.seed,
                             out_dir.parent)
    config.method = name
    result = recbole_cdr.run_ease(config, out_dir, data=self.prepared)
    return {f"test/{k}": float(v) for k, v in result["test"].items()
            if isinstance(v, (int, float))}


def header(study: ml_collections.ConfigDict, workdir: pathlib.Path, wall_s: float) -> str:
  """What the table is: protocol, preset, model, steps per method, machine, time."""
  import jax  # pylint: disable=g-import-not-at-top
  cfg = grid.run_config(study, study.methods[0], 1.0, int(study.seeds[0]), workdir)
  b, enc = cfg.model.bi_encoder, cfg.model.encoder
  steps = ", ".join(f"{m}: " + "+".join(str(p.steps) for p in grid.run_config(
      study, m, 1.0, int(study.seeds[0]), workdir).phases) for m in study.methods)
  return "\n".join([
      f"# Bi-encoder study: {study.name}",
      "",
      f"- Data: `{cfg.data.source}`, RecBole-CDR protocol (ratings >= {cfg.data.bi.min_rating:g}, "
      f"{cfg.data.bi.kcore}-core, per-user random 8:1:1 with the seed); full ranking over the "
      f"target catalogue; seeds {list(study.seeds)}.",
      f"- Preset `{study.preset}`: encoder {enc.num_hidden_layers} layers (item vectors cached: "
      f"{bool(b.cached_only)}), tower dim {b.dim}, history {b.history_len} items; selection on "
      f"target-valid {cfg.train.select or 'last step'}; steps per method {steps}.",
      f"- Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, JAX "
      f"{jax.__version__} on {jax.default_backend()}; wall time {wall_s / 60:.1f} min (all "
      "invocations on this workdir together; a re-invocation reuses finished runs).",
  ])


def _peers(study: ml_collections.ConfigDict) -> dict[str, dict[str, float]]:
  peer = study.get("peer", None)
  return {} if peer is None else {k: dict(v) for k, v in peer.to_dict().items()}


def write_outputs(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                  rows: Sequence[Mapping[str, Any]], wall_s: float) -> str:
  """results.csv, results.md (header, verdict, the table) and the learning curves."""
  report.write_csv(rows, workdir / "results.csv")
  fraction = max(float(f) for f in study.label_fractions)
  peers = _peers(study)
  labels = {**{m: f"bi-encoder {m}" for m in study.methods},
            **(study.get("labels", None) or ml_collections.ConfigDict()).to_dict()}
  # Peers join the verdict as one-seed rows (std 0): published numbers, not reruns.
  peer_rows = [{"method": name, "kind": "peer", "label_fraction": fraction, "seed": 0,
                **{f"test/{k}": v for k, v in vals.items()}} for name, vals in peers.items()]
  transfer = [m for m in study.methods if m != "target_only"]
  references = [m for m in ("target_only", *study.baselines) if m in
                (*study.methods, *study.baselines)] + list(peers)
  parts = [header(study, workdir, wall_s)]
  for metric in study.verdict_metrics:
    parts.append(report.verdict([*rows, *peer_rows], metric, [fraction], transfer, references))
  parts.append(report.metric_table(rows, study.table_metrics, fraction,
                                   order=(*study.methods, *study.baselines), labels=labels,
                                   peers=peers))
  md = "\n\n".join(parts) + "\n"
  (workdir / "results.md").write_text(md)
  curves = {}
  for method in study.methods:
    path = workdir / "runs" / method / grid.tag(fraction, int(study.seeds[0])) / "metrics.jsonl"
    if path.exists():
      curves[method] = plots.read_metrics_jsonl(path)
  if curves:  # the valid panel: the metric the runs select on (NDCG@10), not RMSE
    select = grid.run_config(study, study.methods[0], fraction, int(study.seeds[0]),
                             workdir).train.select or "NDCG@10"
    plots.learning_curves(curves, workdir / "learning_curves.png",
                          title=f"{study.name}: seed {study.seeds[0]}", valid_metric=select,
                          loss_titles=RETRIEVAL_LOSS_TITLES)
  return md
