"""Train-step throughput: our jitted JAX step vs the same model and step in PyTorch + transformers.

Not an experiment config (no get_config): a benchmark script. For each preset's model shape
(tiny: random 2-layer BERT, hidden 64; cpu: all-MiniLM-L6-v2 truncated to 2 layers) both
implementations get the same weights (`torch_reference_step.export_torch_state`) and the same
synthetic batches (a source and a target batch of the preset's batch size, all tokens real, at
the preset's largest bucket length) and run the joint + DANN step (all three losses, one backward,
clipping, per-group AdamW). Rounds of `--steps` steps alternate between the two implementations
(so load from other processes hits both alike); we report the median round, warm-up (and JAX's
compile) excluded. `--check` first compares the two first-step losses with dropout off.

  python experiments/bench_train_step.py [--presets tiny,cpu] [--steps 5] [--repeats 5]
      [--threads N] [--set KEY=VALUE ...] [--out FILE.json]

--set train.dropout_rng_impl=philox4x32 (repeatable) overrides a key of every preset's config
for both implementations (the value is read as a Python literal, else kept as a string).

--threads N (default: all cores) pins the process to its first N cores (os.sched_setaffinity,
before JAX and torch start) and gives torch N threads (torch.set_num_threads). Pinning is what
makes JAX single-threaded: `--xla_cpu_multi_thread_eigen=false`, which this flag set until
2026-12-02, does not -- XLA:CPU's thunk executor and its YNNPACK dot fusions still ran on both
cores (the cpu preset's encoder forward + backward with dropout: 2.21 s with the flag, 2.28 s
without, 3.63 s pinned to one core; `bench_cpu_threads.py --repeats 10`, 2026-12-02), so the earlier "--threads 1" rows below compare two-core JAX with one-thread
torch, and their reading "JAX gains nothing from the second core" was this artifact.
`bench_cpu_threads.py` times each op class pinned and unpinned.

Measured on a shared 2-core x86 CPU (jax 0.10.2, torch 2.13.0, float32), while other test runs
kept the load average at 6-10, so absolute rates are depressed and noisy; JAX / torch is the
number to read (examples/s, source + target examples per step):

  command                                   preset  JAX    torch  JAX / torch
  bench_train_step.py                       tiny    211.1  74.4   2.84   (2 threads each)
                                            cpu      12.2   9.0   1.37
  bench_train_step.py --threads 1           tiny    147.8  240.8  0.61
                                            cpu       8.8  13.7   0.64
  bench_train_step.py --threads 1           tiny    274.5  412.5  0.67
      --no-dropout --no-check               cpu      13.2  25.0   0.53

With 2 threads torch's OpenMP suffers most from the contention (it ran slower with 2 threads
than with 1); single-threaded, the fair comparison here, our XLA:CPU step reaches ~0.5-0.7 of
PyTorch's (oneDNN/MKL) step, with or without dropout. First-step losses agree to 1.5e-8.
Rerun on a quiet machine before quoting absolute rates.

Issue 15, 2026-12-01, the same shared 2-core CPU while seven other sessions ran tests (load
average 10-30 throughout: absolute rates are 4-20x below a quiet machine's, and torch's OpenMP
with 2 threads suffers most), dropout rng 'rbg' (the default since before this issue):

  command (XLA_FLAGS)                                  preset  JAX   torch  JAX / torch  loss diff
  bench_train_step.py                                  tiny    323.9  39.3  8.24         1.5e-08
                                                       cpu      12.4   7.4  1.68         0
  bench_train_step.py --threads 1                      tiny     98.4 144.3  0.68         1.5e-08
                                                       cpu       3.2   4.0  0.80         0
  --presets cpu --steps 3 --repeats 3 --warmup 1       cpu       3.0   2.1  1.44         0
    + --xla_cpu_enable_concurrency_optimized_scheduler cpu       4.0   3.0  1.35         0
    + --xla_cpu_use_xnnpack=true                       cpu       6.4   4.4  1.45         0
  later, load 6-8: --presets tiny,cpu --steps 3 --repeats 3 --warmup 1
                                                       tiny    217.7  10.8  20.16        1.5e-08
                                                       cpu      13.0   9.4  1.39         0
    the same with --threads 1                          tiny    126.6 186.4  0.68         1.5e-08
                                                       cpu      13.5  18.2  0.75         0

Neither XLA flag moved the ratio beyond the run-to-run spread under this load (1.35-1.45), so
none is made a default; both keep parity. JAX gains nothing from the second thread (cpu 13.5 ex/s
with 1, 13.0 with 2), as the issue says; the 2-thread ratios above are high only because torch's
OpenMP collapses under contention (tiny: 10.8 ex/s with 2 threads, 186 with 1). The quiet-machine figures of the issue (cpu 0.67 with
2 threads, 1.18 with 1) were not reproducible here.

2026-12-02, a quiet machine (load average ~1: this benchmark alone), jax 0.10.2, torch 2.13.0,
the tree committed as 4b55041. The cpu preset now pools by the masked mean (MiniLM's recipe), which the
torch reference had not learnt, so `--presets cpu` had stopped running; it pools as configured
now (tests/test_bench_train_step.py). --threads 1 now pins both to one core (above):

  command                                   preset  JAX    torch  JAX / torch  loss diff
  bench_train_step.py --presets tiny,cpu    tiny    459.1  479.8  0.96         1.5e-08
                                            cpu      31.1   46.2  0.67         0
  bench_train_step.py --threads 1           tiny    286.7  381.2  0.75         1.5e-08
                                            cpu      16.4   28.9  0.57         0

JAX does use the second core: 1.90x from one pinned core to two at the cpu preset (torch 1.60x).
What it loses is per-core speed. A jax.profiler trace of the cpu preset's encoder forward +
backward with dropout (2 cores, ~1.8 s a step; traced and summed by op name ad hoc, not by a
script here -- `train.profile_steps` writes such traces of real runs): dots (XLA's YNNPACK fusions) 0.99 s, transposes and copies
around them (copy_bitcast / transpose_copy fusions) 0.27 s, broadcast-adds 0.21 s; dropout adds
0.25-0.45 s to the step whichever PRNG draws its bits (rbg, threefry2x32 or philox4x32 keys:
philox's bits are ~10x cheaper alone, `bench_cpu_threads.py`, but the full step did not move:
`--set train.dropout_rng_impl=philox4x32`, cpu 0.67 against rbg's 0.68, --steps 3 --repeats 3).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import pathlib
import platform
import statistics
import sys
import time


def _early_threads() -> int | None:
  """--threads, read before JAX and torch are imported (their thread pools size themselves then)."""
  for i, a in enumerate(sys.argv):
    if a.startswith("--threads="):
      return int(a.split("=", 1)[1])
    if a == "--threads" and i + 1 < len(sys.argv):
      return int(sys.argv[i + 1])
  return None


def pin_to_cores(n: int) -> None:
  """Restricts this process (and the threads it starts later) to its first `n` allowed cores."""
  cores = sorted(os.sched_getaffinity(0))
  if not 1 <= n <= len(cores):
    raise SystemExit(f"--threads {n}: this process may use {len(cores)} cores")
  os.sched_setaffinity(0, cores[:n])


if _early_threads():
  pin_to_cores(_early_threads())

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import torch_reference_step as torch_ref
import torch

from crossrec_jax import config_base
from crossrec_jax.models import recommender
from crossrec_jax.objectives import cross_encoder as ce_objective
from crossrec_jax.objectives import losses
from crossrec_jax.study import grid
from crossrec_jax.train import optim
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib
from crossrec_jax.train import trainer

WEIGHTS = (1.0, 1.0, 0.1)  # source, target, domain: the joint_dann experiment
LAM = 0.5  # a fixed gradient-reversal strength (the step takes it traced either way)


def batches(batch_size: int, seq: int, seed: int):
  rng = np.random.default_rng(seed)

  def one(domain):
    return {"input_ids": rng.integers(1000, 30000, (batch_size, seq)).astype(np.int32),
            "attention_mask": np.ones((batch_size, seq), np.int32),
            "token_type_ids": np.zeros((batch_size, seq), np.int32),
            "label": rng.random(batch_size).astype(np.float32),
            "label_mask": np.ones(batch_size, np.float32),
            "valid": np.ones(batch_size, np.float32),
            "domain": np.full(batch_size, domain, np.int32)}

  return one(0), one(1)


def no_dropout(config):
  config = config.copy_and_resolve_references()
  config.model.encoder.hidden_dropout_prob = 0.0
  config.model.encoder.attention_probs_dropout_prob = 0.0
  config.model.rating_head.dropout = 0.0
  config.model.discriminator.dropout = 0.0
  return config


def jax_step(config, model):
  """(step callable on (src, tgt) that runs to completion, first-step loss getter)."""
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  phase = config_base.phase("bench", 1000, source=WEIGHTS[0], target=WEIGHTS[1],
                            domain=WEIGHTS[2], alignment="dann")
  for g in config_base.GROUPS:  # constant learning rates, as the torch reference
    config.optimizer[g].update(dict(warmup_steps=0, decay="constant"))
  opt = trainer.phase_optimizer(config, phase, optim.label_params(params), "bench")
  fn = step_lib.make_train_step(
      graphdef, rng_state, opt,
      weights={k: optax.constant_schedule(w) for k, w in zip(("source", "target", "domain"),
                                                             WEIGHTS)},
      lam=optax.constant_schedule(LAM), alignment=losses.make_alignment("dann"),
      objective=ce_objective.objective(losses.make_alignment("dann"), "regression"),
      rng_impl=config.train.dropout_rng_impl)
  holder = {"state": state_lib.init_train_state(
      params, opt.tx, state_lib.make_rng(0, impl=config.train.dropout_rng_impl), rest)}

  def run(src, tgt, steps):
    metrics = None
    for _ in range(steps):
      holder["state"], metrics = fn(holder["state"], src, tgt)
    jax.block_until_ready(holder["state"])
    return metrics

  return run


def torch_step(config, model):
  lrs = {g: config.optimizer[g].lr for g in config_base.GROUPS}
  step = torch_ref.TorchTrainStep(model, lrs=lrs,
                                  weight_decay=config.optimizer.encoder.weight_decay,
                                  max_grad_norm=config.optimizer.max_grad_norm)

  def run(src, tgt, steps):
    out = None
    for _ in range(steps):
      out = step(src, tgt, lam=LAM, weights=WEIGHTS)
    return out

  return run


def check(config, src, tgt) -> float:
  """|first-step loss difference| between JAX and torch with dropout off."""
  config = no_dropout(config)
  model = recommender.build_cross_encoder(config.model, rngs=nnx.Rngs(0))
  torch_loss = torch_step(config, model)(torch_ref.to_torch(src), torch_ref.to_torch(tgt), 1)
  jax_metrics = jax_step(config, model)(src, tgt, 1)
  return abs(float(jax_metrics["loss"]) - torch_loss["loss"])


def parse_set(items: list[str]) -> dict:
  """['a.b=1', ...] -> {'a': {'b': 1}}: values as Python literals where they parse, else str."""
  out: dict = {}
  for item in items:
    key, sep, raw = item.partition("=")
    if not sep or not key:
      raise SystemExit(f"--set {item!r}: expected KEY=VALUE, e.g. train.dropout_rng_impl=rbg")
    try:
      value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
      value = raw
    node = out
    *parents, leaf = key.split(".")
    for part in parents:
      node = node.setdefault(part, {})
    node[leaf] = value
  return out


def bench_preset(preset: str, steps: int, repeats: int, warmup: int, do_check: bool,
                 dropout: bool = True, overrides: dict | None = None):
  config = config_base.base_config(preset)
  grid.apply_overrides(config, overrides or {}, where="--set")
  if not dropout:
    config = no_dropout(config)
  batch_size, seq = int(config.data.batch_size), int(max(config.data.buckets))
  src, tgt = batches(batch_size, seq, seed=0)
  diff = check(config, src, tgt) if do_check else float("nan")
  model = recommender.build_cross_encoder(config.model, rngs=nnx.Rngs(0))
  runs = {"jax": jax_step(config, model), "torch": torch_step(config, model)}
  inputs = {"jax": (src, tgt), "torch": (torch_ref.to_torch(src), torch_ref.to_torch(tgt))}
  t0 = time.perf_counter()
  runs["jax"](*inputs["jax"], 1)  # compile
  compile_s = time.perf_counter() - t0
  for name in runs:
    runs[name](*inputs[name], warmup)
  times = {name: [] for name in runs}
  for _ in range(repeats):
    for name, run in runs.items():
      t = time.perf_counter()
      run(*inputs[name], steps)
      times[name].append((time.perf_counter() - t) / steps)
  enc = model.encoder.config
  row = {"preset": preset, "model": f"{enc.num_hidden_layers} layers, hidden {enc.hidden_size}"
                                    f" ({config.model.encoder.init})",
         "batch": f"2 x {batch_size} x {seq}", "examples_per_step": 2 * batch_size,
         "jax_compile_s": compile_s, "loss_diff_first_step": diff}
  for name, ts in times.items():
    row[f"{name}_s_per_step"] = statistics.median(ts)
    row[f"{name}_examples_per_s"] = 2 * batch_size / statistics.median(ts)
  row["ratio_jax_over_torch"] = row["jax_examples_per_s"] / row["torch_examples_per_s"]
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--presets", default="tiny,cpu")
  parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
  parser.add_argument("--repeats", type=int, default=5, help="timed rounds per implementation")
  parser.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
  parser.add_argument("--no-check", action="store_true", help="skip the loss parity check")
  parser.add_argument("--no-dropout", action="store_true", help="time without dropout")
  parser.add_argument("--threads", type=int, default=0, help="cores (and torch threads) for "
                      "both implementations; 0: all cores (see the docstring)")
  parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override a config key of every preset (repeatable)")
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args()
  overrides = parse_set(args.set)
  torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
  rows = [bench_preset(p, args.steps, args.repeats, args.warmup, not args.no_check,
                       dropout=not args.no_dropout, overrides=overrides)
          for p in args.presets.split(",")]
  machine = {"platform": platform.platform(), "processor": platform.processor() or "?",
             "cpu_count": os.cpu_count(), "cores_used": sorted(os.sched_getaffinity(0)),
             "jax_devices": [str(d) for d in jax.devices()],
             "jax": jax.__version__, "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(),
             "xla_flags": os.environ.get("XLA_FLAGS", ""), "overrides": args.set}
  print(f"Train step (joint + DANN: 3 losses, 1 backward, clip, per-group AdamW), float32, "
        f"{'no dropout' if args.no_dropout else 'dropout as configured (0.1)'}; "
        f"median of {args.repeats} rounds x {args.steps} steps, alternating implementations")
  print(f"Machine: {json.dumps(machine)}\n")
  print("| preset | model | batch (src+tgt) | JAX ex/s | torch ex/s | JAX / torch | "
        "JAX compile s | first-step loss diff |")
  print("|---|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['preset']} | {r['model']} | {r['batch']} | {r['jax_examples_per_s']:.1f} | "
          f"{r['torch_examples_per_s']:.1f} | {r['ratio_jax_over_torch']:.2f} | "
          f"{r['jax_compile_s']:.1f} | {r['loss_diff_first_step']:.2e} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"machine": machine, "rows": rows, "steps": args.steps,
                 "repeats": args.repeats}, f, indent=2)


if __name__ == "__main__":
  main()
