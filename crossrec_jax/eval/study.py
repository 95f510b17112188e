"""The transfer study: methods x target label fractions x seeds -> results.csv, results.md, plots.

    python -m crossrec_jax.eval.study --config=experiments/transfer_study.py:cpu --workdir=runs/study

A study config (`experiments/transfer_study.py`) names the text-model methods (experiment files
`experiments/<method>.py`, trained by `train.trainer.train_and_evaluate`), the baselines
(`eval/run_baselines.py`), the label fractions, the seeds, overrides applied to every run config
(the preset's truncations) and the evaluation protocol (`eval/evaluate.EvalSpec`).

Which cells run. Methods that train on target ratings (target_only, finetune, joint, joint_dann)
run at fractions > 0. Label-free methods (`study.label_free`: source_only, dann) never see a
target rating, so their training does not depend on the fraction: they run at fraction 0 only,
where target histories show no ratings either. Baselines fitting ratings skip fraction 0; the
title prior (zero-shot without labels) and popularity run everywhere.

Fair comparison. For one (fraction, seed) every method is scored on the same `EvalPlan` (rows,
sampled candidates) of the same target users, and every baseline is fitted on exactly the target
rows whose labels the text models train on (the run's 'target_train' example set, which a preset
may subsample).

Layout of the workdir (re-invoking reuses every finished run: a resumable study):
    runs/<method>/frac<f>/seed<s>/   the trainer's workdir + eval.json (this study's protocol)
    baselines/<name>/frac<f>/seed<s>.json
    features/pca.json, xla_cache/, results.csv, results.md, *.png
A finished run's eval.json records its run-config hash; a changed config is an error naming the
run (use a new workdir), never a silent mix of two configs in one table.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import importlib.util
import json
import math
import os
import pathlib
import platform
import shutil
import time
from typing import Any, Callable, Mapping, Sequence

import ml_collections
import numpy as np

from crossrec_jax.data import schema
from crossrec_jax.data import sources
from crossrec_jax.data import splits as splits_lib
from crossrec_jax.eval import evaluate
from crossrec_jax.eval import plots
from crossrec_jax.eval import run_baselines

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
LOWER_IS_BETTER = ("rmse", "mae")


# ----------------------------------------------------------------------------- run configs


def load_experiment(method: str, preset: str, experiments_dir: str | os.PathLike = "") -> Any:
  """`experiments/<method>.py`'s get_config(preset)."""
  folder = pathlib.Path(experiments_dir) if experiments_dir else REPO_ROOT / "experiments"
  path = folder / f"{method}.py"
  if not path.exists():
    raise FileNotFoundError(f"study.methods names {method!r}, but {path} does not exist "
                            "(set study.experiments_dir to the folder of experiment files)")
  spec = importlib.util.spec_from_file_location(f"crossrec_experiment_{method}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(preset)


def apply_overrides(config: ml_collections.ConfigDict, overrides: Mapping[str, Any],
                    where: str = "study.run") -> None:
  """Sets nested keys of `config` from a nested mapping; an unknown key is an error naming it."""
  for key, value in overrides.items():
    if key not in config:
      raise KeyError(f"{where}.{key}: the run config has no key {key!r} "
                     f"(has {sorted(config.keys())})")
    if isinstance(value, Mapping) and isinstance(config[key], ml_collections.ConfigDict):
      apply_overrides(config[key], value, f"{where}.{key}")
    else:
      config[key] = value


def run_config(study: ml_collections.ConfigDict, method: str, fraction: float, seed: int,
               workdir: pathlib.Path) -> ml_collections.ConfigDict:
  """The trainer config of one run: the experiment's preset + the study's overrides."""
  config = load_experiment(method, study.preset, study.experiments_dir)
  apply_overrides(config, study.run.to_dict())
  config.seed = int(seed)
  config.data.source = study.source
  config.data.data_dir = study.data_dir
  config.data.label_fraction = float(fraction)
  if study.phase_steps:
    for p in config.phases:
      p.steps = int(study.phase_steps)
  config.train.progress_bar = False
  config.train.tensorboard = False
  config.train.checkpoint_every = 0  # only at phase ends: the study resumes whole runs
  config.train.keep_checkpoints = 1
  config.train.compilation_cache_dir = str(workdir / "xla_cache")
  return config


def cells(study: ml_collections.ConfigDict) -> list[tuple[str, str, float, int]]:
  """(kind, method, fraction, seed) of every run, grouped by (fraction, seed)."""
  out = []
  for fraction in study.label_fractions:
    for seed in study.seeds:
      for method in study.methods:
        label_free = method in study.label_free
        if (label_free and fraction == 0.0) or (not label_free and fraction > 0.0):
          out.append(("lm", method, float(fraction), int(seed)))
      for name in study.baselines:
        if fraction > 0.0 or name in run_baselines.ZERO_LABEL_BASELINES:
          out.append(("baseline", name, float(fraction), int(seed)))
  return out


def _tag(fraction: float, seed: int) -> str:
  return f"frac{fraction:g}/seed{seed}"


# ----------------------------------------------------------------------------- shared context


@functools.lru_cache(maxsize=2)
def _load_pair(name: str, data_dir: str, cache_dir: str) -> schema.CrossDomainData:
  return sources.load_source(name, data_dir=data_dir or None, cache_dir=cache_dir or None)


class Cell:
  """What every run of one (label fraction, seed) shares: prepared data, target split, plan.

  The target domain and split are recomputed exactly as `data.prepare.prepare_data` builds them
  (users subsampled with seed + 1, `splits.make_split` with the seed) and checked against the
  prepared data's report, so the protocol scores the examples the trainer held out.
  """

  def __init__(self, study: ml_collections.ConfigDict, fraction: float, seed: int,
               config: ml_collections.ConfigDict):
    from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
    self.study, self.fraction, self.seed, self.config = study, fraction, seed, config
    cfg = config.data
    pair = _load_pair(cfg.source, cfg.data_dir, cfg.cache_dir)
    self.source = prepare_lib.subsample_users(pair.source, int(cfg.users.source), seed=seed)
    self.target = prepare_lib.subsample_users(pair.target, int(cfg.users.target), seed=seed + 1)
    self.source_split = splits_lib.make_split(self.source, cfg.split, seed=seed,
                                              label_fraction=float(cfg.source_label_fraction))
    self.split = splits_lib.make_split(self.target, cfg.split, seed=seed,
                                       label_fraction=float(fraction))
    self.plan = evaluate.make_plan(self.target, self.split, eval_spec(study))
    self._prepared = None
    self._evaluator = None

  @property
  def prepared(self):
    """The trainer's PreparedData for this cell (built once, shared by every method)."""
    if self._prepared is None:
      from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
      self._prepared = prepare_lib.prepare_data(self.config)
      got = self._prepared.report["target"]["split"]
      if got != self.split.summary():
        raise AssertionError(f"the study's target split ({self.split.summary()}) differs from the "
                             f"trainer's ({got}); data.prepare changed how it subsamples/splits")
    return self._prepared

  def labelled_train_rows(self) -> np.ndarray:
    """Target rows whose ratings the text models train on (their 'target_train' examples)."""
    src = self.prepared.sources["target_train"]
    columns = getattr(src, "columns", None)
    if columns is not None:
      return np.sort(np.asarray(columns["row"])[np.asarray(columns["label_mask"]) > 0])
    if int(self.config.data.max_examples.target_train) <= 0:
      return self.split.labelled_rows
    records = [src[i] for i in range(len(src))]
    return np.sort(np.array([r["row"] for r in records if r["label_mask"] > 0], np.int64))

  def baseline_split(self) -> splits_lib.Split:
    """The split with `train_labelled` = exactly the text models' labelled training rows."""
    rows = self.labelled_train_rows()
    labelled = np.isin(self.split.train, rows)
    if labelled.sum() != len(rows):
      raise AssertionError("a labelled training example is not a training row of the split")
    return dataclasses.replace(self.split, train_labelled=labelled)

  def example_kw(self) -> dict[str, Any]:
    from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
    cfg = self.config.data
    cache_dir = sources.default_cache_dir(cfg.cache_dir or None)
    return dict(template=cfg.template, tokenizer=_tokenizer(),
                max_len=int(cfg.max_len), history_len=int(cfg.history_len),
                cache=tokenize_lib.TokenCache(_tokenizer(), cache_dir / "tokens"))

  def batch_config(self):
    from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
    cfg = self.config.data
    return pipeline.BatchConfig(batch_size=int(cfg.eval_batch_size),
                                buckets=tuple(int(b) for b in cfg.buckets))

  @property
  def evaluator(self) -> evaluate.Evaluator:
    if self._evaluator is None:
      pair = schema.CrossDomainData(self.source, self.target)
      self._evaluator = evaluate.Evaluator(pair, self.split, plan=self.plan,
                                           example_kw=self.example_kw(),
                                           batch=self.batch_config())
    return self._evaluator


@functools.lru_cache(maxsize=1)
def _tokenizer():
  from crossrec_jax.data import tokenize as tokenize_lib  # pylint: disable=g-import-not-at-top
  return tokenize_lib.load_tokenizer()


def eval_spec(study: ml_collections.ConfigDict) -> evaluate.EvalSpec:
  e = study.eval
  return evaluate.EvalSpec(which=tuple(e.which), threshold=e.threshold, ks=tuple(e.ks),
                           num_negatives=int(e.num_negatives),
                           ranking_users=e.ranking_users or None,
                           full_ranking_users=int(e.full_ranking_users),
                           rating_rows=e.rating_rows or None, cold_start=bool(e.cold_start),
                           seed=int(e.seed))


# ----------------------------------------------------------------------------- trained models


def restore_final(config: ml_collections.ConfigDict, run_dir: pathlib.Path):
  """(eval_step, params) of a finished trainer run, from its last checkpoint.

  A thin wrapper over the trainer's pieces: the model is rebuilt from the config, the last
  phase's optimiser gives the abstract train state, and the checkpoint at the end of the last
  phase is restored into it.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from crossrec_jax.models import recommender as recommender_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import optim  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.tasks import cross_encoder as ce_task  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top

  model = recommender_lib.build_cross_encoder(config.model, rngs=nnx.Rngs(int(config.seed)))
  rating_output = model.rating_output
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  phases = trainer.validate_phases(config)
  last = len(phases) - 1
  opt = trainer.phase_optimizer(config, phases[last], optim.label_params(params),
                                f"phases[{last}]")
  state = state_lib.init_train_state(
      params, opt.tx, state_lib.make_rng(int(config.seed), last,
                                         impl=config.train.dropout_rng_impl), rest)
  ckpt = checkpoint_lib.Checkpointer(run_dir / "checkpoints", keep=1)
  try:
    step = ckpt.latest_step()
    meta = ckpt.restore_meta(step)
    if meta["phase_index"] != last or meta["step"] != phases[last].steps:
      raise RuntimeError(f"{run_dir}: the newest checkpoint is phase {meta['phase_index']} step "
                         f"{meta['step']}, not the end of the run")
    state = ckpt.restore_state(step, checkpoint_lib.abstract_like(jax.eval_shape(lambda: state)))
  finally:
    ckpt.close()
  eval_step = ce_task.make_eval_step(graphdef, rng_state, state.rest, rating_output=rating_output)
  return eval_step, state.params


def initial_model(config: ml_collections.ConfigDict):
  """(eval_step, params) of the untrained model (pretrained encoder, fresh heads)."""
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from crossrec_jax.models import recommender as recommender_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import state as state_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.tasks import cross_encoder as ce_task  # pylint: disable=g-import-not-at-top
  model = recommender_lib.build_cross_encoder(config.model, rngs=nnx.Rngs(int(config.seed)))
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  return ce_task.make_eval_step(graphdef, rng_state, rest,
                                rating_output=model.rating_output), params


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


def run_lm(get_cell: Callable[[], Cell], method: str, config: ml_collections.ConfigDict,
           run_dir: pathlib.Path, *, keep_checkpoints: bool = False,
           log: Callable[[str], None] = print) -> dict[str, Any]:
  """Train (or resume) one text-model run and score it with the study's protocol (cached).

  `get_cell()` gives the shared Cell; it is not called when the run is already finished.
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
  cell.prepared  # pylint: disable=pointless-statement  (built once per cell, not timed per run)
  cell.evaluator  # pylint: disable=pointless-statement
  start, cpu = time.time(), time.process_time()
  final = trainer.train_and_evaluate(config, run_dir, data=cell.prepared)
  train_s = time.time() - start
  start = time.time()
  eval_step, params = restore_final(config, run_dir)
  metrics = cell.evaluator(evaluate.score_fn_from_eval_step(eval_step, params))
  eval_s = time.time() - start
  # Process CPU seconds (all threads): on a shared machine wall time also counts other jobs.
  cpu_s = time.process_time() - cpu
  result = {"config_hash": chash, "metrics": metrics, "train_s": train_s, "eval_s": eval_s,
            "cpu_s": cpu_s,
            "steps": int(final["global_step"]), "phases": [p.name for p in config.phases]}
  _write_json(done, result)
  if not keep_checkpoints:
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
  log(f"  {method:12s} {_tag(cell.fraction, cell.seed):16s} train {train_s:6.1f}s eval "
      f"{eval_s:5.1f}s (cpu {cpu_s:6.1f}s)  " + _brief(metrics))
  return result


def run_baseline_cell(get_cell: Callable[[], Cell], name: str, path: pathlib.Path,
                      log: Callable[[str], None] = print) -> dict[str, Any]:
  """Fit and score one baseline (cached in `path`)."""
  if path.exists():
    return _read_json(path)
  cell = get_cell()
  split = cell.baseline_split()
  start = time.time()
  metrics = run_baselines.run_baseline(
      name, cell.target, split, cell.plan, cell.source, seed=cell.seed,
      title_with_year=bool(cell.study.title_with_year))
  result = {"metrics": metrics, "train_s": time.time() - start, "eval_s": 0.0}
  _write_json(path, result)
  log(f"  {name:12s} {_tag(cell.fraction, cell.seed):16s} fit+eval {result['train_s']:5.1f}s  "
      + _brief(metrics))
  return result


def _brief(m: Mapping[str, float]) -> str:
  keys = ("test/rmse", "test/auc", "test/HR@10")
  return " ".join(f"{k.split('/')[-1]} {m[k]:.4f}" for k in keys if k in m)


# ----------------------------------------------------------------------------- features / PCA


def feature_panels(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                   cell: Cell, log: Callable[[str], None] = print) -> dict[str, Any]:
  """Pooled features of held-out source and target examples for the untrained model and each
  finished run in `study.pca.methods` (at `cell`), with their discriminator accuracy / PAD."""
  from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  n = int(study.pca.examples)
  pair = schema.CrossDomainData(cell.source, cell.target)
  kw = cell.example_kw()
  sets = []
  for domain_id, split, which in ((0, cell.source_split, "valid"), (1, cell.split, "test")):
    ex = examples_lib.build_examples(pair, split, domain_id=domain_id, which=which, **kw)
    sets.append(prepare_lib.subsample_examples(ex, n, seed=int(study.pca.seed) + domain_id))
  batch = cell.batch_config()
  models = {"pretrained (untrained heads)": initial_model(cell.config)}
  for method in study.pca.methods:
    run_dir = workdir / "runs" / method / _tag(cell.fraction, cell.seed)
    if not (run_dir / "checkpoints").exists():
      log(f"  pca: no checkpoint for {method} at {_tag(cell.fraction, cell.seed)} "
          "(set study.keep_checkpoints or study.pca.methods); panel left out")
      continue
    config = run_config(study, method, cell.fraction, cell.seed, workdir)
    models[method] = restore_final(config, run_dir)
  panels = {}
  for name, (eval_step, params) in models.items():
    fn = evaluate.score_fn_from_eval_step(eval_step, params, key="features")
    src, tgt = (evaluate.collect(fn, pipeline.eval_batches(ex, batch), len(ex)) for ex in sets)
    panels[name] = (src, tgt, evaluate.proxy_a_distance(src, tgt, seed=int(study.pca.seed)))
  return panels


# ----------------------------------------------------------------------------- results


def result_rows(study: ml_collections.ConfigDict, workdir: pathlib.Path,
                log: Callable[[str], None] = print) -> list[dict[str, Any]]:
  """Runs every missing cell (in (fraction, seed) groups) and returns one row per run."""
  rows = []
  todo = cells(study)
  groups: dict[tuple[float, int], list[tuple[str, str]]] = {}
  for kind, method, fraction, seed in todo:
    groups.setdefault((fraction, seed), []).append((kind, method))
  pca_at = (float(study.pca.fraction), int(study.seeds[0])) if study.pca.enabled else None
  for (fraction, seed), members in groups.items():
    lm_methods = [m for k, m in members if k == "lm"]
    # Any run config of the cell gives the data config (identical across methods: checked).
    probe = run_config(study, lm_methods[0] if lm_methods else study.methods[0], fraction, seed,
                       workdir)
    cell = None

    def get_cell(fraction=fraction, seed=seed, probe=probe) -> Cell:
      nonlocal cell
      if cell is None:  # built only when some run of the cell is not finished yet
        cell = Cell(study, fraction, seed, probe)
        log(f"cell {_tag(fraction, seed)}: {cell.plan.summary()}")
      return cell

    for kind, method in members:
      if kind == "lm":
        config = run_config(study, method, fraction, seed, workdir)
        if config.data.to_dict() != probe.data.to_dict():
          raise ValueError(f"method {method!r} changes config.data; the study shares one "
                           "prepared dataset per (fraction, seed)")
        keep = bool(study.keep_checkpoints) or (
            (fraction, seed) == pca_at and method in study.pca.methods)
        result = run_lm(get_cell, method, config,
                        workdir / "runs" / method / _tag(fraction, seed),
                        keep_checkpoints=keep, log=log)
      else:
        result = run_baseline_cell(get_cell, method, workdir / "baselines" / method /
                                   f"{_tag(fraction, seed)}.json", log=log)
      rows.append({"method": method, "kind": kind, "label_fraction": fraction, "seed": seed,
                   "train_s": result["train_s"], "eval_s": result["eval_s"],
                   "cpu_s": result.get("cpu_s", result["train_s"]), **result["metrics"]})
    if (fraction, seed) == pca_at:
      pca_path = workdir / "features" / "pca.json"
      if not pca_path.exists():
        panels = feature_panels(study, workdir, get_cell(), log)
        plots.feature_pca(panels, workdir / "pca_features.png",
                          title=f"{study.source}: pooled features, label fraction {fraction:g}, "
                                f"seed {seed} (held-out source valid / target test examples)")
        _write_json(pca_path, {k: v[2] for k, v in panels.items()})
        for method in study.pca.methods:  # checkpoints kept only for this plot
          if not study.keep_checkpoints:
            shutil.rmtree(workdir / "runs" / method / _tag(fraction, seed) / "checkpoints",
                          ignore_errors=True)
  return rows


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


def header(study: ml_collections.ConfigDict, workdir: pathlib.Path, wall_s: float) -> str:
  """What the table is: data, preset, its truncations, protocol, machine, time."""
  cfg = run_config(study, study.methods[0], 1.0, int(study.seeds[0]), workdir)
  d, enc = cfg.data, cfg.model.encoder
  if enc.init == "pretrained":
    encoder = (f"pretrained {enc.path or 'all-MiniLM-L6-v2 (packaged)'}, "
               f"{enc.num_layers or 'all'} of its layers")
  else:
    encoder = (f"random BERT, {enc.num_hidden_layers} layers, hidden {enc.hidden_size}")
  steps = ", ".join(f"{m}: " + "+".join(str(p.steps) for p in run_config(
      study, m, 1.0 if m not in study.label_free else 0.0, int(study.seeds[0]),
      workdir).phases) for m in study.methods)
  e = study.eval
  import jax  # pylint: disable=g-import-not-at-top
  return "\n".join([
      f"# Transfer study: {study.name}",
      "",
      f"- Data: `{study.source}` (source -> target); target split `{d.split}`; seeds "
      f"{list(study.seeds)}; label fractions {[float(f) for f in study.label_fractions]}.",
      f"- Preset `{study.preset}` truncations: encoder {encoder}; max_len {d.max_len}, history "
      f"{d.history_len} items; users subsampled to source {d.users.source or 'all'} / target "
      f"{d.users.target or 'all'}; training examples capped at source "
      f"{d.max_examples.source_train or 'all'} / target {d.max_examples.target_train or 'all'}; batch {d.batch_size}; steps per "
      f"method {steps}.",
      f"- Protocol: rating on {e.rating_rows or 'all'} target {'/'.join(e.which)} ratings (whole "
      f"users); ranking: last held-out item of {e.ranking_users or 'all'} users among "
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
  parts = [header(study, workdir, wall_s)]
  transfer = [m for m in study.methods if m != "target_only"]
  references = [m for m in ("target_only", "global_mean", "mf", "bias", "title_prior",
                            "popularity") if m in (*study.methods, *study.baselines)]
  for metric in ("test/rmse", "test/HR@10"):
    if any(metric in r for r in rows):
      parts.append(verdict(rows, metric, fractions, transfer, references))
  for metric in study.table_metrics:
    if any(metric in r for r in rows):
      parts.append(markdown_table(rows, metric, fractions,
                                  order=(*study.methods, *study.baselines)))
  pca_path = workdir / "features" / "pca.json"
  if pca_path.exists():
    sep = _read_json(pca_path)
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
    path = workdir / "runs" / method / _tag(fraction, int(study.seeds[0])) / "metrics.jsonl"
    if path.exists():
      curves[method] = plots.read_metrics_jsonl(path)
  if curves:
    plots.learning_curves(curves, workdir / "learning_curves.png",
                          title=f"{study.name}: seed {study.seeds[0]}, label fraction "
                                f"{max(study.label_fractions):g} (label-free methods: 0)")
  return md


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
  return write_outputs(study, workdir, rows, total)


def main(argv: Sequence[str]) -> None:
  del argv
  from crossrec_jax import logging_setup  # pylint: disable=g-import-not-at-top
  logging_setup.configure()  # orbax / JAX INFO off unless --verbosity=1
  md = run_study(_CONFIG.value, _WORKDIR.value)
  print(md)


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags  # pylint: disable=g-import-not-at-top
  from ml_collections import config_flags  # pylint: disable=g-import-not-at-top
  _CONFIG = config_flags.DEFINE_config_file("config", None, "Study file and preset, e.g. "
                                            "experiments/transfer_study.py:cpu.", lock_config=True)
  _WORKDIR = flags.DEFINE_string("workdir", None, "Study directory.")
  flags.mark_flags_as_required(["config", "workdir"])
  app.run(main)
