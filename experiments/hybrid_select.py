"""Selects the hybrid model's settings on target VALID RMSE (never test), one setting per method.

Run (about 1.5 minutes per candidate on a quiet 2-core CPU; finished runs are reused):
  .venv/bin/python experiments/hybrid_select.py --workdir=runs/hybrid_select
  .venv/bin/python experiments/hybrid_select.py --candidates=dev,dev+init_biases,dev+init_biases+steps800

Setting: the demo's study (`hybrid_study:cpu`: ML-1M -> ML-100K, its methods, source users and
data), seed 0 only, scored on the target's valid rows only (`eval.which=("valid",)`), no baselines
and no ranking. Each candidate is a set of run-config overrides (`CANDIDATES`; "a+b" merges two)
applied to every method through the study's `run` overrides, so every candidate trains on the
same rows and batches and differs only in its settings.

Printed: valid RMSE per candidate x (method, label fraction), and per method the candidate with
the lowest mean valid RMSE over the fractions it runs at (label-free methods: fraction 0 only).
That choice is what `config_base._hybrid` / `HYBRID_STEPS` should hold; the study then reports
test RMSE over 3 seeds with the settings fixed. Expected result: README, "Transfer study".
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time
from typing import Any


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
  out = dict(a)
  for k, v in b.items():
    out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
  return out


# Each candidate changes one thing from the packaged settings (`config_base._hybrid`,
# `HYBRID_TRANSFER`, `HYBRID_STEPS`). "dev" restores the settings before the first selection (no
# bias init, no early stopping, 400 / 400 / 500 steps): the README's first table is "dev" and
# "dev+<change>"; "sel1201" those after it: the second table is "sel1201+<change>".
#
# The packaged settings of 2026-12-01 (before the second selection, README's second table): what
# "base" was when that table was measured.
_SEL1201 = {"model": {"hybrid": {"tower_out_scale": 0.1, "neighbour_prior": "learnt_bias",
                                 "source_prior_shrink": 10.0, "history_offset": True}},
            "optimizer": {"encoder": {"lr": 1e-3}}, "train": {"eval_at_start": False}}
CANDIDATES: dict[str, dict[str, Any]] = {
    "base": {},
    "sel1201": _SEL1201,
    "dev": _merge(_SEL1201, {
        "model": {"hybrid": {"init_biases": False}}, "train": {"eval_every": 0, "select": ""},
        "__method_steps__": {"source": 400, "target": 400, "joint": 500}}),
    # Every phase 800 / 1200 steps (dev: 400 source, 400 target, 500 joint).
    "steps800": {"__phase_steps__": 800},
    "steps1200": {"__phase_steps__": 1200},
    # The ID tables' group (rating_head) at the encoder groups' lr, and with more decay.
    "head_lr1e-3": {"optimizer": {"rating_head": {"lr": 1e-3}}},
    "head_wd0.3": {"optimizer": {"rating_head": {"weight_decay": 0.3}}},
    "id_dropout0.3": {"model": {"hybrid": {"id_dropout": 0.3}}},
    "dim64": {"model": {"hybrid": {"dim": 64}}},
    "no_neighbours": {"model": {"hybrid": {"neighbours": 0}}},
    # A sharper initial attention over the text neighbours (cosines of near-duplicate titles
    # are ~0.9-1: at 20 an exact match is diluted by its many close neighbours).
    "nscale50": {"model": {"hybrid": {"neighbour_scale": 50.0}}},
    "nscale100": {"model": {"hybrid": {"neighbour_scale": 100.0}}},
    # The neighbours lend each source item's shrunk mean rating offset instead of their learnt
    # ID bias (`model.hybrid.neighbour_prior`), with two shrinkages.
    "nbmean": {"model": {"hybrid": {"neighbour_prior": "source_mean"}}},
    "nbmean_shrink3": {"model": {"hybrid": {"neighbour_prior": "source_mean",
                                            "source_prior_shrink": 3.0}}},
    # The history's user offset shrunk as the bias baseline shrinks its user biases (reg_u 15),
    # not by 3: at 1% labels a user shows about one rating.
    "offset_shrink15": {"model": {"hybrid": {"offset_shrink": 15.0}}},
    "offset_shrink8": {"model": {"hybrid": {"offset_shrink": 8.0}}},
    # The towers and the shared scalars (mu, domain offsets, neighbour scale, offset weight) at a
    # lower lr: Adam moves a scalar ~lr per step whatever its gradient, and at 1% labels the
    # target's offset is driven by a few hundred labels (joint 1% valid RMSE swung 1.08-1.19).
    "enc_lr3e-4": {"optimizer": {"encoder": {"lr": 3e-4}}},
    "enc_lr1e-4": {"optimizer": {"encoder": {"lr": 1e-4}}},
    # The towers' output layers start at zero: the untrained model is exactly the closed-form
    # fit (init_biases) plus the history's user offset, with no random offset per item and user.
    "tower0": {"model": {"hybrid": {"tower_out_scale": 0.0}}},
    # Without the history's user offset (measured first as offset_shrink 1e6: the same).
    "offset_off": {"model": {"hybrid": {"history_offset": False}}},
    # The state before the first step (the closed-form bias fit) is a selection candidate too.
    "eval0": {"train": {"eval_at_start": True}},
    # Early stopping on valid: evaluate every 100 steps, score the best evaluation.
    "select100": {"train": {"eval_every": 100, "select": "rmse"}},
    # Training starts at the bias model's closed-form fit (`model.hybrid.init_biases`).
    "init_biases": {"model": {"hybrid": {"init_biases": True}}},
    "init_biases_off": {"model": {"hybrid": {"init_biases": False}}},
}


def _packaged_steps() -> dict[str, dict[str, int]]:
  from crossrec_jax import config_base  # pylint: disable=g-import-not-at-top
  return {k: dict(v) for k, v in config_base.HYBRID_STEPS.items()}


_PACKAGED_STEPS = _packaged_steps()


def candidate(name: str) -> dict[str, Any]:
  """The overrides of `name` ("a+b": a's and b's merged); an unknown part is an error."""
  out: dict[str, Any] = {}
  for part in name.split("+"):
    if part not in CANDIDATES:
      raise SystemExit(f"--candidates: unknown candidate {part!r} (known: {', '.join(CANDIDATES)})")
    out = _merge(out, CANDIDATES[part])
  return out


def study_config(name: str, fractions: tuple[float, ...], methods: tuple[str, ...],
                 preset: str = "cpu", baselines: tuple[str, ...] = ()):
  """hybrid_study:<preset> reduced to seed 0, valid only, no baselines, with the candidate's overrides."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  from crossrec_jax import configs  # pylint: disable=g-import-not-at-top
  from crossrec_jax import config_base  # pylint: disable=g-import-not-at-top
  overrides = candidate(name)
  # Per-method phase lengths: the packaged configs read `HYBRID_STEPS` when they are built.
  config_base.HYBRID_STEPS[preset] = dict(_PACKAGED_STEPS[preset],
                                          **overrides.pop("__method_steps__", {}))
  study = configs.load(f"hybrid_study:{preset}")
  study.phase_steps = int(overrides.pop("__phase_steps__", study.phase_steps))
  study.methods = methods
  study.label_fractions = fractions + ((0.0,) if any(m in study.label_free for m in methods)
                                       else ())
  study.seeds = (0,)
  study.baselines = baselines
  study.pca.enabled = False
  study.eval.update(dict(which=("valid",), ranking_users=0))
  run = study.run.to_dict()
  study.run = ml_collections.ConfigDict(_merge(run, overrides))
  return study


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", default="runs/hybrid_select")
  parser.add_argument("--candidates", default=",".join(CANDIDATES))
  parser.add_argument("--fractions", default="1,0.1,0.01")
  parser.add_argument("--methods", default="target_only,joint,source_only")
  parser.add_argument("--preset", default="cpu", help="hybrid_study's preset (tiny: a smoke run)")
  parser.add_argument("--baselines", default="bias,mf,title_prior",
                      help="baselines scored on the same valid rows, beside the first candidate")
  args = parser.parse_args()
  from crossrec_jax import logging_setup  # pylint: disable=g-import-not-at-top
  from crossrec_jax.study import runner  # pylint: disable=g-import-not-at-top
  logging_setup.configure()
  fractions = tuple(float(f) for f in args.fractions.split(","))
  methods = tuple(args.methods.split(","))
  names = args.candidates.split(",")
  for name in names:
    candidate(name)  # every name checked before anything trains
  valid: dict[str, dict[tuple[str, float], float]] = {}
  reference: dict[str, dict[float, float]] = {}  # baseline -> fraction -> valid RMSE
  for name in names:
    start = time.time()
    extra = tuple(b for b in args.baselines.split(",") if b) if name == names[0] else ()
    study = study_config(name, fractions, methods, args.preset, extra)
    rows = runner.result_rows(study, pathlib.Path(args.workdir) / name, log=lambda _: None)
    valid[name] = {(r["method"], r["label_fraction"]): r["valid/rmse"] for r in rows
                   if r["kind"] == "lm"}
    for r in rows:
      if r["kind"] == "baseline":
        reference.setdefault(r["method"], {})[r["label_fraction"]] = r["valid/rmse"]
    print(f"{name}: {time.time() - start:.0f} s", flush=True)
  cells = sorted({c for v in valid.values() for c in v}, key=lambda c: (methods.index(c[0]), -c[1]))
  print("\nTarget valid RMSE, seed 0 (lower is better)\n")
  print("| candidate | " + " | ".join(f"{m} {f:g}" for m, f in cells) + " |")
  print("|---" * (len(cells) + 1) + "|")
  for name in names:
    print(f"| {name} | " + " | ".join(f"{valid[name].get(c, float('nan')):.4f}" for c in cells)
          + " |")
  for name, by_fraction in reference.items():
    print(f"| ({name}) | " + " | ".join(f"{by_fraction.get(f, float('nan')):.4f}" for _, f in cells)
          + " |")
  print("\nChosen per method (lowest mean valid RMSE over its fractions):")
  for method in methods:
    mean = {n: statistics.mean(v for (m, _), v in valid[n].items() if m == method)
            for n in names if any(m == method for m, _ in valid[n])}
    best = min(mean, key=mean.get)
    print(f"  {method}: {best} ({mean[best]:.4f}; {names[0]} {mean.get(names[0], float('nan')):.4f})")


if __name__ == "__main__":
  main()
