"""Does domain alignment move the domain gap? None / DANN / MMD / CORAL at the demo's settings.

Run (each alignment trains once; `nice`, about 2 minutes per row on a loaded 2-core CPU):
  .venv/bin/python experiments/adaptation_check.py --workdir=/tmp/adaptation_check
  .venv/bin/python experiments/adaptation_check.py --weights=dann=1,mmd=1,coral=1e4

Setting: the transfer study's cpu run config (`transfer_study:cpu`, what `make demo` trains:
ML-1M -> ML-100K, 1-layer MiniLM, 40 tokens, batch 16 per domain, 60 steps), seed 0, target
labels unused (fraction 0): the unsupervised-adaptation phase of `configs/dann.py`,
L = L_rate(source) + w_d * L_align(source, target), with `alignment` = none (w_d = 0: the
source-only reference), dann, mmd or coral. Every row trains the same model from the same seed on
the same batches; only the alignment differs.

Printed per alignment: the domain gap of the pooled features of held-out examples (source valid,
target valid; `--examples` per domain) before training (the pretrained encoder) and after, as
the held-out accuracy of a fitted logistic regression and the proxy A-distance
(`eval/evaluate.proxy_a_distance`: 0 indistinguishable, 2 separable); for DANN also the
discriminator's own training accuracy over the last 10 steps; then the target-valid RMSE of the
trained model (1-5 stars, 128 examples) and the alignment loss over the first and last 10 steps.

Expected result: the table in docs/adaptation.md (measured there, with machine and load).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np


def _features(study, cell, config, run_dir, n):
  """Held-out pooled features (source valid, target valid) before and after training."""
  from crossrec_jax.data import examples as examples_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import prepare as prepare_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.data import schema  # pylint: disable=g-import-not-at-top
  from crossrec_jax.eval import evaluate  # pylint: disable=g-import-not-at-top
  from crossrec_jax.study import finished  # pylint: disable=g-import-not-at-top
  del study
  pair = schema.CrossDomainData(cell.source, cell.target)
  kw = cell.example_kw()
  sets = []
  for domain_id, split in ((0, cell.source_split), (1, cell.split)):
    ex = examples_lib.build_examples(pair, split, domain_id=domain_id, which="valid", **kw)
    sets.append(prepare_lib.subsample_examples(ex, n, seed=domain_id))
  out = {}
  for name, (eval_step, params) in (("before", finished.initial_model(config)),
                                    ("after", finished.restore_final(config, run_dir))):
    fn = evaluate.score_fn_from_eval_step(eval_step, params, key="features")
    src, tgt = (evaluate.collect(fn, pipeline.eval_batches(ex, cell.batch_config()), len(ex))
                for ex in sets)
    out[name] = evaluate.proxy_a_distance(src, tgt, seed=0)
  return out


def _train_log(run_dir: pathlib.Path) -> list[dict[str, float]]:
  return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
          if '"loss_domain"' in line]


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default="/tmp/adaptation_check")
  ap.add_argument("--alignments", default="none,dann,mmd,coral")
  ap.add_argument("--domain_weight", type=float, default=0.0,
                  help="w_d of every aligned row (0: configs/methods.py's DOMAIN_WEIGHT)")
  ap.add_argument("--weights", default="",
                  help="per-alignment w_d overriding --domain_weight, e.g. dann=1,coral=1e4")
  ap.add_argument("--steps", type=int, default=0, help="phase steps (0: the demo's)")
  ap.add_argument("--examples", type=int, default=200, help="held-out examples per domain")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()

  from crossrec_jax import logging_setup  # pylint: disable=g-import-not-at-top
  logging_setup.configure()
  from crossrec_jax.configs import methods  # pylint: disable=g-import-not-at-top
  from crossrec_jax.eval import study as study_api  # pylint: disable=g-import-not-at-top
  from crossrec_jax.study import cell as cell_lib  # pylint: disable=g-import-not-at-top
  from crossrec_jax.study import grid  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top

  study = study_api.load_experiment("transfer_study", "cpu")
  workdir = pathlib.Path(args.workdir)
  default = args.domain_weight or methods.DOMAIN_WEIGHT
  weights = {k: float(v) for k, v in (kv.split("=") for kv in args.weights.split(",") if kv)}
  rows, cell = [], None
  for kind in args.alignments.split(","):
    config = grid.run_config(study, "dann", 0.0, args.seed, workdir)
    (phase,) = config.phases
    phase.alignment = kind
    phase.weights.domain = 0.0 if kind == "none" else weights.get(kind, default)
    if args.steps:
      phase.steps = args.steps
    config.train.log_every = 5
    config.train.eval_every = 0
    config.train.final_eval = ("target_valid",)
    run_dir = workdir / f"{kind}_w{phase.weights.domain:g}_s{phase.steps}_seed{args.seed}"
    start = time.time()
    if not (run_dir / "final_metrics.json").exists():
      trainer.train_and_evaluate(config, run_dir)
    wall = time.time() - start
    if cell is None:
      cell = cell_lib.Cell(study, 0.0, args.seed, config)
    gap = _features(study, cell, config, run_dir, args.examples)
    final = json.loads((run_dir / "final_metrics.json").read_text())
    log = _train_log(run_dir)
    first = [m["loss_domain"] for m in log[:2]]
    last = [m["loss_domain"] for m in log[-2:]]
    disc = np.mean([m["domain_acc"] for m in log[-2:]]) if kind == "dann" else float("nan")
    rows.append((kind, float(phase.weights.domain), gap["before"], gap["after"], disc,
                 final["phases"][-1]["target_valid"]["rmse"],
                 np.mean(first) if first else float("nan"),
                 np.mean(last) if last else float("nan"), wall))
    print(f"  {kind}: {wall:.0f} s", flush=True)

  print(f"\n{config.data.source}, seed {args.seed}, {phase.steps} steps, "
        f"{args.examples} held-out examples per domain")
  print("alignment  w_d    acc before  PAD before  acc after  PAD after  disc acc (train)  "
        "valid RMSE  L_align first->last")
  for kind, w, before, after, disc, rmse, l0, l1, _ in rows:
    disc_s = f"{disc:.3f}" if np.isfinite(disc) else "-"
    align_s = f"{l0:.4g} -> {l1:.4g}" if kind != "none" else "-"
    print(f"{kind:<10} {w:<6g} {before['domain_acc']:<11.3f} {before['pad']:<11.3f} "
          f"{after['domain_acc']:<10.3f} {after['pad']:<10.3f} {disc_s:<17} {rmse:<11.4f} "
          f"{align_s}")


if __name__ == "__main__":
  main()
