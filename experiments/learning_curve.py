"""Learning benchmark (issue 13, item 6): how far the cross-encoder gets on ML-100K in CPU minutes.

Trains the cross-encoder target-only on all ML-100K training rows (the cpu preset's truncation:
all-MiniLM-L6-v2 cut to 2 layers, max_len 96, batch 32; the user profile and the token-budgeted
history on unless told otherwise) for up to --minutes of wall time, evaluating on a fixed subset of
target-valid rows every --eval-every steps, and prints the curve (step, seconds, valid RMSE)
beside the global mean, item-only bias (mu + b_i), bias (mu + b_u + b_i) and MF fitted on the
same labelled training rows and scored on the same valid rows (eval/baselines.py; predictions
clipped to the 1-5 scale, as the text model's are by construction). The target of the issue:
valid RMSE at or below the bias baseline's within 60 CPU minutes.

  python experiments/learning_curve.py [--minutes 60] [--eval-every 150] [--valid 2000]
      [--profile short|default|''] [--history-budget tokens|count] [--steps 3000]
      [--id-biases 1 [--init-id-biases 1] [--id-dim 16] [--id-dropout 0.1]]
      [--workdir DIR] [--out curve.json]

The training runs in a child process (the trainer as main.py runs it) that is stopped when the
minutes are up; this process fits the baselines meanwhile and reads the child's metrics.jsonl.
Seconds count from the child's start, data preparation and evaluations included.
Measured (README.md, "Learning benchmark"; 2026-12-02, quiet 2-core CPU, load ~2):
`--minutes 60 --eval-every 200 --valid 2000` (encoder lr 2e-4, 4,500-step schedule: the defaults)
reached step 3600, best valid RMSE 0.9702 at step 2400 against global mean 1.1778, item-only bias
1.0514, bias 0.9646, MF 0.9432 on the same rows: the target missed by 0.0056.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_config(args: argparse.Namespace):
  """target_only:cpu on every ML-100K user and training row; a fixed valid subset."""
  from crossrec_jax.configs import methods
  from crossrec_jax import config_base
  config = methods.apply(config_base.base_config("cpu"), "target_only", target=int(args.steps))
  config.data.users.update(dict(source=40, target=0))  # the source is unused (target only)
  config.data.max_examples.update(dict(source_train=256, target_train=0,
                                       target_valid=int(args.valid), target_test=128))
  config.data.history_budget = args.history_budget
  config.data.profile = args.profile
  # eval_at_start: the curve's step 0 is the untrained model (the bias model's ridge fit when
  # the rating head starts its ID biases there).
  config.train.update(dict(eval_every=int(args.eval_every), eval_at_start=True,
                           checkpoint_every=0, log_every=50, tensorboard=False,
                           progress_bar=False, final_eval=("target_valid",)))
  config.model.rating_head.update(dict(  # ID terms beside the text (models/id_rating_head.py)
      id_biases=bool(args.id_biases), id_dim=int(args.id_dim),
      id_dropout=float(args.id_dropout), init_id_biases=bool(args.init_id_biases)))
  if args.encoder_lr:  # the phase's lr is 0.0 (the group's default), so the group's is the one
    config.optimizer.encoder.lr = float(args.encoder_lr)
  config.seed = int(args.seed)
  return config


def child(args: argparse.Namespace) -> None:
  from crossrec_jax.data import prepare
  from crossrec_jax.train import trainer
  config = make_config(args)
  workdir = pathlib.Path(args.workdir)
  data = prepare.prepare_data(config)
  np.save(workdir / "valid_rows.npy", np.asarray(data.sources["target_valid"]["row"]))
  (workdir / "report.json").write_text(json.dumps(data.report, default=str))
  trainer.train_and_evaluate(config, workdir, data=data)


def baselines_on(rows: np.ndarray, config) -> dict[str, float]:
  """Valid RMSE of the rating baselines fitted on the split's labelled target training rows."""
  from crossrec_jax.data import sources, splits
  from crossrec_jax.eval import baselines, run_baselines
  cfg = config.data
  pair = sources.load_cached(cfg.source, cfg.data_dir or None,
                             str(sources.default_cache_dir(cfg.cache_dir or None)))
  target = pair.target
  split = splits.make_split(target, cfg.split, seed=int(config.seed),
                            label_fraction=float(cfg.label_fraction))
  inter = target.interactions
  train = split.labelled_rows
  scale = (target.scale.low, target.scale.high)
  fit = (inter.user[train], inter.item[train], inter.rating[train])
  sizes = dict(n_users=inter.num_users, n_items=target.num_items)
  models = {
      "global mean": baselines.GlobalMean(clip=scale).fit(*fit),
      # A user regulariser of 1e12 keeps every b_u at ~0: mu + b_i alone.
      "item-only bias": baselines.BiasModel(reg_u=1e12, clip=scale).fit(*fit, **sizes),
      "bias": baselines.BiasModel(clip=scale).fit(*fit, **sizes),
  }
  mf = run_baselines.fit_baseline("mf", target, split, seed=int(config.seed))
  out = {}
  for name, model in list(models.items()) + [("MF", mf)]:
    pred = np.clip(model.predict(inter.user[rows], inter.item[rows]), *scale)
    out[name] = float(np.sqrt(np.mean((pred - inter.rating[rows]) ** 2)))
  return out


def read_curve(workdir: pathlib.Path, seen: dict[int, float], t0: float) -> list[dict]:
  """Target-valid lines of metrics.jsonl; `seen` maps a step to when this process first saw it."""
  path = workdir / "metrics.jsonl"
  if not path.exists():
    return []
  curve = []
  for line in path.read_text().splitlines():
    rec = json.loads(line)
    if rec.get("split") == "target_valid" and "rmse" in rec:
      step = int(rec["global_step"])
      seen.setdefault(step, time.time() - t0)
      curve.append(dict(step=step, seconds=round(seen[step], 1), rmse=float(rec["rmse"])))
  return curve


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--minutes", type=float, default=60.0)
  parser.add_argument("--eval-every", type=int, default=150)
  parser.add_argument("--valid", type=int, default=2000, help="target-valid rows scored")
  # 4,500 steps: about what 60 minutes hold at ~0.8 s a step, so the linear decay ends with the
  # budget (at 3,000 the lr was near 0 by minute 40 of the first quiet run).
  parser.add_argument("--steps", type=int, default=4500, help="phase length (the LR schedule)")
  # 2e-4, from the first 600 steps' valid RMSE of 5e-5 (the cpu preset's), 2e-4 and 5e-4 (README).
  parser.add_argument("--encoder-lr", type=float, default=2e-4,
                      help="peak encoder lr (0: the cpu preset's, 5e-5)")
  parser.add_argument("--profile", default="short", help="data.profile ('' = off)")
  parser.add_argument("--history-budget", default="tokens", choices=("tokens", "count"))
  # The hybrid cross-encoder (issue 13, item 2): ID terms in the rating head beside the text.
  parser.add_argument("--id-biases", type=int, default=0, choices=(0, 1),
                      help="1: user and item ID biases in the rating head")
  parser.add_argument("--id-dim", type=int, default=0, help="ID embeddings beside h (0: none)")
  parser.add_argument("--id-dropout", type=float, default=0.0)
  parser.add_argument("--init-id-biases", type=int, default=0, choices=(0, 1),
                      help="1: start mu and the ID biases at the bias model's ridge fit")
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--workdir", default="")
  parser.add_argument("--out", default="")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.child:
    child(args)
    return
  workdir = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="learning_curve_"))
  workdir.mkdir(parents=True, exist_ok=True)
  cmd = [sys.executable, __file__, "--child", "--workdir", str(workdir)] + [
      f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
      if k not in ("child", "workdir", "out", "minutes")]
  t0 = time.time()
  log = open(workdir / "child.log", "w")
  proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
  rows_file = workdir / "valid_rows.npy"
  while not rows_file.exists() and proc.poll() is None:
    time.sleep(2)
  if not rows_file.exists():
    raise SystemExit(f"the training process failed before preparing data: {workdir / 'child.log'}")
  base = baselines_on(np.load(rows_file), make_config(args))
  seen: dict[int, float] = {}
  deadline = t0 + 60.0 * args.minutes
  while proc.poll() is None and time.time() < deadline:
    read_curve(workdir, seen, t0)
    time.sleep(5)
  stopped = proc.poll() is None
  if stopped:
    proc.terminate()
    proc.wait(timeout=60)
  elif proc.returncode:
    tail = (workdir / "child.log").read_text()[-3000:]
    raise SystemExit(f"training failed (exit {proc.returncode}):\n{tail}")
  curve = read_curve(workdir, seen, t0)
  report = json.loads((workdir / "report.json").read_text())
  shown = report.get("examples", {}).get("target_train", {}).get("history_shown")
  ids = (f" id_biases={args.id_biases} id_dim={args.id_dim} id_dropout={args.id_dropout} "
         f"init_id_biases={args.init_id_biases}") if args.id_biases or args.id_dim else " text only"
  print(f"learning curve: profile={args.profile!r} history_budget={args.history_budget}{ids} "
        f"valid rows={args.valid} ({time.time() - t0:.0f} s, load {os.getloadavg()[0]:.1f})")
  if shown:
    print(f"history entries shown per training example: {shown}")
  print(f"{'step':>6} {'seconds':>8} {'valid RMSE':>11}")
  for p in curve:
    print(f"{p['step']:>6} {p['seconds']:>8.0f} {p['rmse']:>11.4f}")
  for name, value in base.items():
    print(f"{name:>15}: {value:.4f}")
  best = min((p["rmse"] for p in curve), default=float("nan"))
  print(f"best valid RMSE {best:.4f}; bias {base['bias']:.4f} "
        f"({'at or below' if best <= base['bias'] else 'above'} bias by {abs(best - base['bias']):.4f})")
  if args.out:
    pathlib.Path(args.out).write_text(json.dumps(dict(args=vars(args), curve=curve, baselines=base,
                                                      history_shown=shown), indent=1))


if __name__ == "__main__":
  main()
