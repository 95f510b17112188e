"""LoRA vs full fine-tuning at a preset's shapes: trainable parameters, step time, memory.

Not an experiment config (no get_config): a benchmark script. The preset's cross-encoder (cpu:
all-MiniLM-L6-v2 truncated to 2 layers, hidden 384; batch 32 + 32 at length 96) runs one joint
train step (source + target rating losses, one backward, clipping, per-group AdamW) in five
variants:

  full        every encoder parameter trains (the finetune experiment);
  lora        rank-8 adapters on all attention and MLP projections, the base encoder frozen
              (`optimizer.encoder` -> optax.set_to_zero: no Adam state), heads train;
  lora/domain the same with one adapter set per domain (configs/lora.py with per_domain);
  lora/allgrad  lora, with the step as it was before it differentiated only trainable groups
              (every parameter differentiated, the frozen gradients zeroed by the optimiser);
  heads only  the base encoder frozen and no adapters (the floor of any frozen-encoder step).

Step time: rounds of `--steps` steps alternate between the variants (load from other processes
hits all alike); the median round is reported, and its ratio to `full`. GFLOP: XLA's count of
the compiled step (`cost_analysis()`). Memory: XLA's own accounting of the compiled step
(`compiled.memory_analysis()`): arguments (parameters, optimiser state, batches), temporaries
(activations kept for the backward, workspace), and their sum minus donated (aliased) buffers as
the step's peak.

  python experiments/bench_lora.py [--preset cpu] [--rank 8] [--steps 3] [--repeats 5]

Measured on the shared 2-core x86 CPU (jax 0.10.2, float32, preset cpu, rank 8), 2026-12-01,
`bench_lora.py --steps 2 --repeats 3`, three times, the first two while other engineers' tests
loaded the machine (load average 17.4 -> 23.3, then 22.4 -> 18.7; the third at 1.3 -> 5.3), so
absolute times are depressed and noisy; read the ratios (params 15.8M; LoRA 110,592 adapter parameters, 221,184 per-domain; the rest of
"trainable" is the two heads):

  run (load)        variant       trainable  s/step  vs full  GFLOP  args MiB  temp MiB  peak MiB
  1 (17.4 -> 23.3)  full         15,812,994  15.930     1.00  139.9     181.0     876.8    1057.8
                    lora            308,226  17.888     1.12   94.8      63.2     878.0     941.2
                    lora/domain     418,818  16.680     1.05   94.7      64.4     903.4     967.9
                    lora/allgrad    308,226  18.957     1.19  144.2      63.2     970.9    1034.1
  2 (22.4 -> 18.7)  full         15,812,994  14.572     1.00  139.9     181.0     876.8    1057.8
                    lora            308,226  13.554     0.93   94.8      63.2     878.0     941.2
                    lora/domain     418,818  12.530     0.86   94.7      64.4     903.4     967.9
                    lora/allgrad    308,226  17.976     1.23  144.2      63.2     970.9    1034.1
                    heads only      197,634   6.294     0.43   48.0      61.9     234.9     296.8
  3 (1.3 -> 5.3)    full         15,812,994   3.724     1.00  139.9     181.0     876.8    1057.9
                    lora            308,226   4.186     1.12   94.8      63.2     878.0     941.2
                    lora/domain     418,818   3.837     1.03   94.7      64.4     903.4     967.9
                    lora/allgrad    308,226   5.224     1.40  144.2      63.2     970.9    1034.1
                    heads only      197,634   1.876     0.50   48.0      61.9     234.9     296.8

Differentiating only the trainable groups (train/step.py) cut LoRA's compiled step from 144.2 to
94.8 GFLOP (-34%) and its peak memory from 1034 to 941 MiB; its step is 1.12x full fine-tuning's
in the least loaded run (0.93-1.12x in all three), against 1.40x (1.19-1.40x) with every
gradient: LoRA's step is 20% faster than before, but still not faster than full fine-tuning. The
FLOPs fall by a third but the time much less, probably because the rank-8 adapter matmuls ([B*L, 384] x [384, 8]
and back, forward and backward, on every projection) are memory-bound on this CPU, while the
weight-gradient matmuls they replaced were compute-bound (not profiled); the frozen base without adapters
(heads only) runs at 0.43x. On an accelerator the FLOP cut should show more fully (not measured
here).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import sys
import time

import jax
import numpy as np
import optax
from flax import nnx

from crossrec_jax import config_base
from crossrec_jax.models import lora as lora_lib
from crossrec_jax.models import recommender
from crossrec_jax.objectives import cross_encoder as ce_objective
from crossrec_jax.objectives import losses
from crossrec_jax.train import flops
from crossrec_jax.train import optim
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib
from crossrec_jax.train import trainer

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
# The same synthetic (source, target) batches as the torch comparison (all tokens real).
from bench_train_step import batches  # pylint: disable=g-import-not-at-top,wrong-import-position


def variant(preset: str, rank: int, per_domain: bool, all_grads: bool = False,
            freeze: bool | None = None):
  """(step runner, trainable parameter count, memory analysis) of one variant."""
  config = config_base.base_config(preset)
  config.model.encoder.lora.update(dict(rank=rank, per_domain=per_domain))
  model = recommender.build_recommender(config.model, rngs=nnx.Rngs(0))
  graphdef, params, rng_state, rest = state_lib.split_model(model)
  frozen = ("encoder",) if (rank if freeze is None else freeze) else ()
  phase = config_base.phase("bench", 1000, source=1.0, target=1.0, frozen=frozen)
  labels = optim.label_params(params, {g: g for g in trainer.optimizer_groups(config)})
  opt = trainer.phase_optimizer(config, phase, labels, "bench")
  if all_grads:  # The step as it was: every parameter differentiated, the frozen grads zeroed.
    opt = opt._replace(trainable=None)
  trainable = sum(int(np.prod(v.shape)) for v, g in zip(jax.tree.leaves(params),
                                                        jax.tree.leaves(labels))
                  if g not in frozen)
  fn = step_lib.make_train_step(
      graphdef, rng_state, opt, weights={k: optax.constant_schedule(w) for k, w in
                                         (("source", 1.0), ("target", 1.0), ("domain", 0.0))},
      lam=optax.constant_schedule(0.0), alignment=losses.make_alignment("none"),
      objective=ce_objective.objective(losses.make_alignment("none"), "regression"),
      rng_impl=config.train.dropout_rng_impl)
  holder = {"state": state_lib.init_train_state(
      params, opt.tx, state_lib.make_rng(0, impl=config.train.dropout_rng_impl), rest)}
  src, tgt = batches(int(config.data.batch_size), int(max(config.data.buckets)), seed=0)
  compiled = fn.lower(holder["state"], src, tgt).compile()
  memory, gflop = compiled.memory_analysis(), (flops.xla_flops(compiled) or 0.0) / 1e9

  def run(steps: int) -> None:
    for _ in range(steps):
      holder["state"], _ = fn(holder["state"], src, tgt)
    jax.block_until_ready(holder["state"])

  n_lora = lora_lib.lora_param_count(model)
  return (run, trainable, n_lora, memory, gflop,
          sum(int(np.prod(v.shape)) for v in jax.tree.leaves(params)))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", default="cpu")
  parser.add_argument("--rank", type=int, default=8)
  parser.add_argument("--steps", type=int, default=3, help="steps per timed round")
  parser.add_argument("--repeats", type=int, default=5, help="timed rounds per variant")
  args = parser.parse_args()
  variants = {"full": (0, False, False), "lora": (args.rank, False, False),
              "lora/domain": (args.rank, True, False), "lora/allgrad": (args.rank, False, True),
              "heads only": (0, False, False, True)}
  built = {name: variant(args.preset, *v) for name, v in variants.items()}
  for run, *_ in built.values():
    run(2)  # compile + warm-up
  times = {name: [] for name in built}
  for _ in range(args.repeats):
    for name, (run, *_rest) in built.items():
      t = time.perf_counter()
      run(args.steps)
      times[name].append((time.perf_counter() - t) / args.steps)
  mib = 1 / 2 ** 20
  base = statistics.median(times["full"])
  print(f"preset {args.preset}, rank {args.rank}, load average {os.getloadavg()[0]:.1f}, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}")
  print(f"{'variant':<12} {'params':>10} {'trainable':>10} {'lora':>8} {'s/step':>7} "
        f"{'vs full':>7} {'GFLOP':>7} {'args MiB':>9} {'temp MiB':>9} {'peak MiB':>9}")
  for name, (_, trainable, n_lora, mem, gflop, total) in built.items():
    t = statistics.median(times[name])
    peak = (mem.argument_size_in_bytes + mem.output_size_in_bytes + mem.temp_size_in_bytes
            - mem.alias_size_in_bytes)
    print(f"{name:<12} {total:>10,} {trainable:>10,} {n_lora:>8,} {t:>7.3f} {t / base:>7.2f} "
          f"{gflop:>7.1f} "
          f"{mem.argument_size_in_bytes * mib:>9.1f} {mem.temp_size_in_bytes * mib:>9.1f} "
          f"{peak * mib:>9.1f}")


if __name__ == "__main__":
  main()
