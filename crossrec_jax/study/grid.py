"""The grid of a study: which (method, label fraction, seed) cells run, and each run's config.

A study config (`configs/transfer_study.py`) names the methods (packaged configs trained by
`train.trainer.train_and_evaluate`), the baselines, the label fractions, the seeds, overrides
applied to every run config (the preset's truncations) and the evaluation protocol
(`eval/evaluate.EvalSpec`); `study.architecture` names the task every run trains
('cross_encoder', the default, 'hybrid' (the same protocol and cells, `models/hybrid.py`'s
model) or 'bi_encoder').

Which cells run. Methods that train on target ratings (target_only, finetune, joint, joint_dann)
run at fractions > 0. Label-free methods (`study.label_free`: source_only, dann) never see a
target rating, so their training does not depend on the fraction: they run at fraction 0 only,
where target histories show no ratings either. Baselines fitting ratings skip fraction 0; the
title prior (zero-shot without labels) and popularity run everywhere.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Any, Mapping

import ml_collections

from crossrec_jax.eval import evaluate
from crossrec_jax.eval import run_baselines

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
ARCHITECTURES = ("cross_encoder", "bi_encoder", "hybrid")


def experiment_module(name: str, experiments_dir: str | os.PathLike = "") -> Any:
  """The module of `experiments/<name>.py`."""
  folder = pathlib.Path(experiments_dir) if experiments_dir else REPO_ROOT / "experiments"
  path = folder / f"{name}.py"
  if not path.exists():
    raise FileNotFoundError(f"study.methods names {name!r}, but {path} does not exist "
                            "(set study.experiments_dir to the folder of experiment files)")
  spec = importlib.util.spec_from_file_location(f"crossrec_experiment_{name}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_experiment(method: str, preset: str, experiments_dir: str | os.PathLike = "") -> Any:
  """The config `method` at `preset`: `<experiments_dir>/<method>.py` when the study names a
  folder of its own configs and it holds one, else the packaged `configs/<method>.py`."""
  from crossrec_jax import configs  # pylint: disable=g-import-not-at-top
  own = pathlib.Path(experiments_dir) / f"{method}.py" if experiments_dir else None
  if own is not None and own.exists():
    return configs.load(f"{own}:{preset}")
  if method not in configs.names():
    where = f"{own} does not exist and it" if own is not None else "it"
    raise FileNotFoundError(f"study.methods names {method!r}, but {where} is not a packaged "
                            f"config ({', '.join(configs.names())}); set study.experiments_dir "
                            "to a folder of your own config files")
  return configs.load(f"{method}:{preset}")


def architecture(study: ml_collections.ConfigDict) -> str:
  """The task every run of the study trains ('cross_encoder' unless the config names another)."""
  arch = str(study.get("architecture", "cross_encoder"))
  if arch not in ARCHITECTURES:
    raise ValueError(f"study.architecture={arch!r}: choose one of {ARCHITECTURES}")
  return arch


def method_config(study: ml_collections.ConfigDict, method: str) -> ml_collections.ConfigDict:
  """The experiment config of `method` at the study's preset.

  The config named `method` (the cross-encoder methods), or `study.experiment` with {method}
  filled in (the bi-encoder's 'bi_{method}'), at `study.config_arg` with {preset} filled in."""
  name = str(study.get("experiment", "") or method).format(method=method)
  arg = str(study.get("config_arg", "{preset}")).format(method=method, preset=study.preset)
  return load_experiment(name, arg, study.experiments_dir)


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
  config = method_config(study, method)
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


def tag(fraction: float, seed: int) -> str:
  return f"frac{fraction:g}/seed{seed}"

def eval_spec(study: ml_collections.ConfigDict) -> evaluate.EvalSpec:
  e = study.eval
  return evaluate.EvalSpec(which=tuple(e.which), threshold=e.threshold, ks=tuple(e.ks),
                           num_negatives=int(e.num_negatives),
                           ranking_users=e.ranking_users or None,
                           full_ranking_users=int(e.full_ranking_users),
                           rating_rows=e.rating_rows or None, cold_start=bool(e.cold_start),
                           seed=int(e.seed))

