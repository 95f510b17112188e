"""Deletion benchmark: do the history items an explanation ranks first matter most to the model?

For each of N target test predictions of a trained cross-encoder (examples with at least 4 history
entries, so that removing 3 leaves one), remove k = 1, 2, 3 history entries chosen four ways and
re-score the edited example (`explain/edits.py`: the entries' tokens deleted):
  * IG top-k:  the k entries of largest |integrated-gradients attribution| (`--steps` points);
  * LOO top-k: the k entries of largest |leave-one-out change| (for k = 1 this is the definition
               of LOO, so its k = 1 row is the ceiling any ranking can reach for one removal);
  * random k:  k entries drawn uniformly (seeded);
  * recent k:  the k newest entries.
Reported: mean |f(x) - f(x without them)| ± its standard deviation over the examples, in stars
(the target's 1-5 scale). A faithful ranking changes the prediction more than random removal.

The model ("cpu-preset-like", stated so the numbers can be reproduced): `target_only:cpu` (the packaged
all-MiniLM-L6-v2, pretrained, CLS pooling, 300 x 300 users) cut to 1 encoder layer as `make demo`'s
cpu preset is, with longer histories so that k = 3 is meaningful: data.history_len=5,
data.max_len=128, data.buckets=(128,), batch 16, 150 steps, seed 0 (trained by the library's trainer
into --workdir if it holds no finished run; resumable, a checkpoint every 50 steps). Measured on
the shared 2-core CPU: 0.11 steps/s for 2 layers at batch 32 x 160 tokens, hence this budget.

Run (two commands, each under 10 minutes on 2 cores; the first trains, the second measures):
  python experiments/explain_faithfulness.py --workdir=runs/explain_bench --train_only
  python experiments/explain_faithfulness.py --workdir=runs/explain_bench --n=200 --steps=16
(the explanations are kept in --workdir, faithfulness_*.npz: a rerun cut short resumes there)
Expected result: see the README section "Explanations" (the table printed by the second command).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np

STEPS = 150


def bench_config():
  """The benchmark's trainer config (module docstring)."""
  from crossrec_jax import configs  # pylint: disable=g-import-not-at-top
  c = configs.load("target_only:cpu")
  c.model.encoder.num_layers = c.model.encoder.num_hidden_layers = 1
  c.data.history_len, c.data.max_len, c.data.buckets = 5, 128, (128,)
  c.data.batch_size = 16
  c.phases[0].steps = STEPS
  c.train.eval_every, c.train.checkpoint_every = STEPS, 50
  c.train.progress_bar = False
  c.train.final_eval = ("target_test",)
  return c


def train(workdir: pathlib.Path) -> None:
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top
  final = trainer.train_and_evaluate(bench_config(), workdir)
  print(json.dumps({k: final[k] for k in ("target_test",) if k in final}, default=str))


def _cached(path: pathlib.Path, compute) -> tuple[dict[str, np.ndarray], float]:
  """`compute()`'s arrays and seconds, kept in `path` (.npz) so that a rerun resumes there."""
  if path.exists():
    with np.load(path) as f:
      got = dict(f)
    return got, float(got.pop("seconds"))
  t0 = time.time()
  got = {k: np.asarray(v) for k, v in compute().items()}
  seconds = time.time() - t0
  np.savez(path, seconds=seconds, **got)
  return got, seconds


def deletion_table(explained, picks, *, steps: int, seed: int,
                   cache: pathlib.Path) -> tuple[list[str], dict]:
  """Rows of the printed table and the raw numbers (explanations cached under `cache`)."""
  from crossrec_jax.explain import removal  # pylint: disable=g-import-not-at-top
  batch = explained.batch(picks)
  ex = explained.explainer
  tag = f"{len(picks)}_{seed}"
  keys = ("score", "history", "gap", "complete")
  ig, t_ig = _cached(cache / f"faithfulness_ig{steps}_{tag}.npz",
                     lambda: {k: v for k, v in ex.explain(batch, "ig").items() if k in keys})
  loo, t_loo = _cached(cache / f"faithfulness_loo_{tag}.npz", lambda: ex.explain(batch, "loo"))
  span = float(explained.scale.high - explained.scale.low)
  counts = np.sum(~np.isnan(loo["history"]), axis=1)
  width = loo["history"].shape[1]
  rng = np.random.default_rng(seed)
  base = ig["score"]

  def order_by(values):  # entries by |value|, largest first; missing entries last
    v = np.where(np.isnan(values), -np.inf, np.abs(values))
    return np.argsort(-v, axis=1, kind="stable")

  orders = {"IG top-k": order_by(ig["history"]), "LOO top-k": order_by(loo["history"]),
            "random k": np.stack([np.concatenate([rng.permutation(c), np.arange(c, width)])
                                  for c in counts]),
            "recent k": np.tile(np.arange(width), (len(counts), 1))}
  results = {}
  for name, order in orders.items():
    for k in (1, 2, 3):
      drop = np.zeros((len(counts), width), bool)
      np.put_along_axis(drop, order[:, :k], True, axis=1)
      change = np.abs(base - removal.score_without(ex.score_fn, batch, drop,
                                                   chunk=ex.chunk)) * span
      results[(name, k)] = (float(change.mean()), float(change.std()))
  gaps = np.abs(ig["gap"]) * span
  lines = [f"{len(picks)} target test predictions (each >= 4 history entries, mean "
           f"{counts.mean():.2f}); mean |change| of the predicted rating in stars ± std over "
           f"examples; IG {steps} Gauss-Legendre points ({t_ig:.0f} s), LOO ({t_loo:.0f} s); IG "
           f"completeness |gap| median {np.median(gaps):.2e}, max {gaps.max():.2e} stars, "
           f"{int(ig['complete'].sum())}/{len(gaps)} within tolerance",
           "", "| removed | k = 1 | k = 2 | k = 3 |", "|---|---|---|---|"]
  for name in orders:
    lines.append(f"| {name} | " + " | ".join(f"{results[(name, k)][0]:.5f} ± "
                                             f"{results[(name, k)][1]:.5f}" for k in (1, 2, 3))
                 + " |")
  return lines, {f"{n}@{k}": v for (n, k), v in results.items()}


def main(argv=None) -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", help="the benchmark's trainer run (trained there if absent); required")
  p.add_argument("--n", type=int, default=200, help="test predictions to explain (>= 200)")
  p.add_argument("--steps", type=int, default=16, help="integrated-gradients points")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--train_only", action="store_true")
  p.add_argument("--png", default="", help="also write one explained example's chart here")
  args = p.parse_args(argv)
  if not args.workdir:  # checked here, not by argparse: unknown flags are reported first
    p.error("--workdir is required")
  workdir = pathlib.Path(args.workdir)
  if args.train_only or not (workdir / "final_metrics.json").exists():
    train(workdir)
    if args.train_only:
      return
  from crossrec_jax.explain import render  # pylint: disable=g-import-not-at-top
  from crossrec_jax.explain import run as run_lib  # pylint: disable=g-import-not-at-top
  explained = run_lib.ExplainedRun.load(workdir, steps=args.steps, chunk=16)
  segs = explained.segments["test"]
  eligible = [i for i in range(len(segs)) if np.max(segs[i]) >= 3 + 3]  # >= 4 entries
  if len(eligible) < args.n:
    sys.exit(f"only {len(eligible)} test examples have >= 4 history entries (< --n={args.n})")
  rng = np.random.default_rng(args.seed)
  picks = [("test", int(i)) for i in np.sort(rng.choice(eligible, args.n, replace=False))]
  lines, _ = deletion_table(explained, picks, steps=args.steps, seed=args.seed, cache=workdir)
  print("\n".join(lines))
  if args.png:
    record = explained.explain(picks[:1], "ig")[0]
    print("\n".join(render.summary_lines(record)))
    render.bar_chart(record, args.png)


if __name__ == "__main__":
  main()
