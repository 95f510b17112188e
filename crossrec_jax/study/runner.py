"""The study runner: every (method, label fraction, seed) run of a study, trained, scored, resumable.

    python -m crossrec_jax.study --config=transfer_study:cpu --workdir=runs/study
    python -m crossrec_jax.study --config=bi_encoder_study:cpu --workdir=runs/bi

Which runs (`study/grid.py`), what they share per (fraction, seed) (a cell: `study/cell.Cell` for
the cross-encoder, `study/bi_encoder.BiCell` for the bi-encoder), and what is written
(`study/report.py`, or the bi-encoder's RecBole-CDR table).

Layout of the workdir (re-invoking reuses every finished run: a resumable study):
    runs/<method>/frac<f>/seed<s>/   the trainer's workdir + eval.json (this study's protocol)
    baselines/<name>/frac<f>/seed<s>.json
    features/pca.json, xla_cache/, results.csv, results.md, *.png
A finished run's eval.json records its run-config hash; a changed config is an error naming the
run (use a new workdir), never a silent mix of two configs in one table.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections

from crossrec_jax.eval import plots
from crossrec_jax.study import bi_encoder as bi_study
from crossrec_jax.study import cell as cell_lib
from crossrec_jax.study import features
from crossrec_jax.study import grid
from crossrec_jax.study import report

# The cell class of each architecture (what its runs of one (fraction, seed) share).
CELLS = {"cross_encoder": cell_lib.Cell, "hybrid": cell_lib.Cell, "bi_encoder": bi_study.BiCell}


def _config_hash(config: ml_collections.ConfigDict) -> str:
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top
  return trainer.config_hash(config)


def _read_json(path: pathlib.Path) -> Any:
  return json.loads(path.read_text())


def _write_json(path: pathlib.Path, obj: Any) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(obj, indent=1, default=float))
  os.replace(tmp, path)  # atomic: an interrupted study never leaves half a result


def run_lm(get_cell: Callable[[], Any], method: str, config: ml_collections.ConfigDict,
           run_dir: pathlib.Path, *, keep_checkpoints: bool = False,
           log: Callable[[str], None] = print) -> dict[str, Any]:
  """Train (or resume) one text-model run and score it with the cell's protocol (cached).

  `get_cell()` gives the shared cell; it is not called when the run is already finished.
  """
  done = run_dir / "eval.json"
  chash = _config_hash(config)
  if done.exists():
    result = _read_json(done)
    if result["config_hash"] != chash:
      raise ValueError(f"{run_dir} holds a finished run of another config; the study config "
                       "changed: use a new --workdir (or delete that run)")
    return result
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top
  cell = get_cell()
  cell.ready()  # the shared data and evaluator: built once per cell, not timed per run
  start, cpu = time.time(), time.process_time()
  final = trainer.train_and_evaluate(config, run_dir, data=cell.prepared)
  train_s = time.time() - start
  start = time.time()
  metrics = cell.score(config, run_dir)
  eval_s = time.time() - start
  # Process CPU seconds (all threads): on a shared machine wall time also counts other jobs.
  cpu_s = time.process_time() - cpu
  result = {"config_hash": chash, "metrics": metrics, "train_s": train_s, "eval_s": eval_s,
            "cpu_s": cpu_s,
            "steps": int(final["global_step"]), "phases": [p.name for p in config.phases]}
  _write_json(done, result)
  if not keep_checkpoints:
    for name in ("checkpoints", "checkpoints_best"):
      shutil.rmtree(run_dir / name, ignore_errors=True)
  log(f"  {method:12s} {grid.tag(cell.fraction, cell.seed):16s} train {train_s:6.1f}s eval "
      f"{eval_s:5.1f}s (cpu {cpu_s:6.1f}s)  " + _brief(metrics))
  return result


def run_baseline_cell(get_cell: Callable[[], Any], name: str, path: pathlib.Path,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
  """Fit and score one baseline (cached in `path`)."""
  if path.exists():
    return _read_json(path)
  cell = get_cell()
  start = time.time()
  metrics = cell.fit_baseline(name, path.with_suffix(""))
  result = {"metrics": metrics, "train_s": time.time() - start, "eval_s": 0.0}
  _write_json(path, result)
  log(f"  {name:12s} {grid.tag(cell.fraction, cell.seed):16s} fit+eval {result['train_s']:5.1f}s  "
      + _brief(metrics))
  return result


def _brief(m: Mapping[str, float]) -> str:
  keys = ("test/rmse", "test/auc", "test/HR@10", "test/NDCG@10")
  return " ".join(f"{k.split('/')[-1]} {m[k]:.4f}" for k in keys if k in m)


class Progress:
  """'run k of N, elapsed, ETA' for the runs that still have to run (finished ones are reused
  silently). The ETA extrapolates the mean time of the text-model runs done in this invocation
  to those left (baselines take seconds)."""

  def __init__(self, todo: Sequence[tuple[str, str, float, int]], log: Callable[[str], None]):
    self.todo, self.log, self.k = list(todo), log, 0
    self.start, self.lm_done, self.lm_s = time.time(), 0, 0.0

  def __call__(self, kind: str, method: str, fraction: float, seed: int) -> Callable[[], None]:
    self.k += 1
    elapsed = time.time() - self.start
    lm_left = sum(k == "lm" for k, *_ in self.todo[self.k - 1:])
    eta = (f"ETA {self.lm_s / self.lm_done * lm_left / 60:.1f} min" if self.lm_done
           else "ETA after the first run")
    self.log(f"[run {self.k} of {len(self.todo)}, elapsed {elapsed / 60:.1f} min, {eta}] "
             f"{kind} {method} {grid.tag(fraction, seed)}")
    t0 = time.time()

    def done() -> None:
      if kind == "lm":
        self.lm_done += 1
        self.lm_s += time.time() - t0
    return done


def _finished(study: ml_collections.ConfigDict, workdir: pathlib.Path, kind: str, method: str,
              fraction: float, seed: int) -> bool:
  if kind == "lm":
    return (workdir / "runs" / method / grid.tag(fraction, seed) / "eval.json").exists()
  return (workdir / "baselines" / method / f"{grid.tag(fraction, seed)}.json").exists()


def result_rows(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Runs every missing cell (in (fraction, seed) groups) and returns one row per run."""
  rows = []
  todo = grid.cells(study)
  progress = Progress([c for c in todo if not _finished(study, workdir, *c)], log)
  make_cell = CELLS[grid.architecture(study)]
  groups: dict[tuple[float, int], list[tuple[str, str]]] = {}
  for kind, method, fraction, seed in todo:
    groups.setdefault((fraction, seed), []).append((kind, method))
  pca_at = (float(study.pca.fraction), int(study.seeds[0])) if study.pca.enabled else None
  for (fraction, seed), members in groups.items():
    lm_methods = [m for k, m in members if k == "lm"]
    # Any run config of the cell gives the data config (identical across methods: checked).
    probe = grid.run_config(study, lm_methods[0] if lm_methods else study.methods[0], fraction,
                            seed, workdir)
    cell = None

    def get_cell(fraction=fraction, seed=seed, probe=probe):
      nonlocal cell
      if cell is None:  # built only when some run of the cell is not finished yet
        cell = make_cell(study, fraction, seed, probe)
        log(f"cell {grid.tag(fraction, seed)}: {cell.summary()}")
      return cell

    for kind, method in members:
      finished = _finished(study, workdir, kind, method, fraction, seed)
      done = (lambda: None) if finished else progress(kind, method, fraction, seed)
      if kind == "lm":
        config = grid.run_config(study, method, fraction, seed, workdir)
        if config.data.to_dict() != probe.data.to_dict():
          raise ValueError(f"method {method!r} changes config.data; the study shares one "
                           "prepared dataset per (fraction, seed)")
        keep = bool(study.keep_checkpoints) or (
            (fraction, seed) == pca_at and method in study.pca.methods)
        result = run_lm(get_cell, method, config,
                        workdir / "runs" / method / grid.tag(fraction, seed),
                        keep_checkpoints=keep, log=log)
      else:
        result = run_baseline_cell(get_cell, method, workdir / "baselines" / method /
                                   f"{grid.tag(fraction, seed)}.json", log=log)
      done()
      rows.append({"method": method, "kind": kind, "label_fraction": fraction, "seed": seed,
                   "train_s": result["train_s"], "eval_s": result["eval_s"],
                   "cpu_s": result.get("cpu_s", result["train_s"]), **result["metrics"]})
    if (fraction, seed) == pca_at:
      _feature_plot(study, workdir, fraction, seed, get_cell, log)
  return rows


def _feature_plot(study, workdir, fraction, seed, get_cell, log) -> None:
  """features/pca.json and pca_features.png at the study's PCA cell (once)."""
  pca_path = workdir / "features" / "pca.json"
  if pca_path.exists():
    return
  panels = features.feature_panels(study, workdir, get_cell(), log)
  plots.feature_pca(panels, workdir / "pca_features.png",
                    title=f"{study.source}: pooled features, label fraction {fraction:g}, "
                          f"seed {seed} (held-out source valid / target test examples)")
  _write_json(pca_path, {k: v[2] for k, v in panels.items()})
  for method in study.pca.methods:  # checkpoints kept only for this plot
    if not study.keep_checkpoints:
      shutil.rmtree(workdir / "runs" / method / grid.tag(fraction, seed) / "checkpoints",
                    ignore_errors=True)


def run_study(study: ml_collections.ConfigDict, workdir: str | os.PathLike,
              log: Callable[[str], None] = print) -> str:
  """Runs (or resumes) the whole study in `workdir`; returns results.md's text."""
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  (workdir / "study_config.json").write_text(study.to_json_best_effort(indent=1, sort_keys=True))
  start = time.time()
  rows = result_rows(study, workdir, log)
  wall = time.time() - start
  timing = workdir / "wall_s.json"
  total = wall + (_read_json(timing)["wall_s"] if timing.exists() else 0.0)
  _write_json(timing, {"wall_s": total})
  write = bi_study.write_outputs if grid.architecture(study) == "bi_encoder" else report.write_outputs
  return write(study, workdir, rows, total)


def cli() -> None:
  """`--config=STUDY.py:PRESET --workdir=DIR`: runs the study and prints results.md."""
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from crossrec_jax import configs  # pylint: disable=g-import-not-at-top
  config = configs.define_config_flag("config", None, "Study config and preset, e.g. "
                                      "transfer_study:cpu (or FILE.py:PRESET).")
  workdir = flags.DEFINE_string("workdir", None, "Study directory.")
  flags.mark_flags_as_required(["config", "workdir"])

  def main(argv: Sequence[str]) -> None:
    del argv
    from crossrec_jax import logging_setup  # pylint: disable=g-import-not-at-top
    logging_setup.configure()  # orbax / JAX INFO off unless --verbosity=1
    print(run_study(config.value, workdir.value, log=lambda line: print(line, flush=True)))
  app.run(main)


def run() -> None:
  """The `crossrec-study` console script (= `python -m crossrec_jax.study`)."""
  cli()


if __name__ == "__main__":
  run()
