"""Training throughput and MFU of the real sharded train step, for two encoder shapes.

Not an experiment config (no get_config): a benchmark script. For each model shape
  * minilm    -- the packaged all-MiniLM-L6-v2 shape (6 layers, hidden 384, 12 heads, MLP 1536)
  * bert-base -- 12 layers, hidden 768, 12 heads, MLP 3072
(random init; vocab 30522) the recommender (encoder + rating head + discriminator) is created
already sharded on the mesh (`sharding.create_sharded_state`) and the joint + DANN step
(`train.step.make_train_step`: both rating losses + the domain loss, one backward, clipping,
per-group AdamW) runs on synthetic batches: `--batch` sequences per step (half source, half
target) of padded length `--seq`, real lengths uniform in [fill * seq, seq]. The batches are put
on the devices once; the timed loop runs under `jax.transfer_guard('disallow')`, so a hidden
host<->device transfer in the step would fail the benchmark. Reported per model:

  examples/s, tokens/s (padded = what the chips compute; real = non-padding tokens), step time
  (median over --trials rounds of --steps steps, compile and warm-up excluded), compile time,
  model FLOPs per step (analytic, `train/flops.py`: 6 N_dense + 12 L s d per token, + heads),
  XLA's own count (cost analysis of the compiled step, x devices), achieved TFLOP/s and MFU
  against the chip's dense bf16 peak (none on CPU).

  python experiments/benchmark.py                       # --preset cpu: 2 models, small steps
  python experiments/benchmark.py --preset gpu --out bench_gpu.json   # one accelerator
  python experiments/benchmark.py --preset gpu --models bert-base --batch 512 --remat
  XLA_FLAGS=--xla_force_host_platform_device_count=8 python experiments/benchmark.py \\
      --models minilm --mesh 2,2,2                      # sharding overhead on fake CPU devices
  python experiments/benchmark.py --preset gpu --attention cudnn   # cuDNN fused attention

--attention: einsum (the reference math, with attention-probability dropout), xla or cudnn
(`jax.nn.dot_product_attention`; cudnn falls back to xla where cuDNN is missing or rejects the
shape/dtype, and the row says so in `attention_fallback`). The fused ones cannot drop attention
probabilities and run without that dropout. `--models tiny` is a 2-layer, hidden-64 shape for
smoke tests (experiments/gpu_proof.sh with GPU_PROOF_SMOKE=1). The one-shot GPU run of all of
this is experiments/gpu_proof.sh.

Presets: cpu = float32, batch 8, seq 128, 2 trials x 3 steps; gpu = bfloat16, batch 256,
seq 128, 3 trials x 20 steps. Any flag overrides its preset.
Goal (issue 6): bert-base, seq 128, bf16, one H100: >= 45% MFU (~6,600 sequences/s).
Measured: see the commit adding this file (2-core CPU numbers; no GPU was available).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.data import pipeline
from crossrec_jax.models import bert, hf_import, recommender
from crossrec_jax.objectives import cross_encoder as ce_objective
from crossrec_jax.objectives import losses
from crossrec_jax.train import flops, optim, schedules, sharding
from crossrec_jax.train import state as state_lib
from crossrec_jax.train import step as step_lib

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
# The smoke-test shape (gpu_proof.sh's GPU_PROOF_SMOKE=1, tests): the tiny preset's encoder.
TINY = dict(vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512)
HEAD_HIDDEN = (256,)
PRESETS = {
    "cpu": dict(models="minilm,bert-base", dtype="float32", batch=8, seq=128, steps=3, trials=2,
                warmup=1),
    "gpu": dict(models="minilm,bert-base", dtype="bfloat16", batch=256, seq=128, steps=20,
                trials=3, warmup=3),
}


def encoder_config(name: str, dtype: str, remat: bool,
                   attention: str = "einsum") -> bert.BertConfig:
  # The fused kernels cannot drop attention probabilities: they run without that dropout.
  extra = dict(remat=remat, attention=attention, dtype=dtype)
  if attention != "einsum":
    extra["attention_probs_dropout_prob"] = 0.0
  if name == "minilm":
    return hf_import.load_config(None, **extra)
  if name in ("bert-base", "tiny"):
    return bert.BertConfig(**(BERT_BASE if name == "bert-base" else TINY), **extra)
  raise ValueError(f"unknown model {name!r}; choose minilm, bert-base or tiny")


def synthetic_batch(rows: int, seq: int, fill: float, vocab: int, rng: np.random.Generator,
                    domain: int) -> dict[str, np.ndarray]:
  lengths = rng.integers(max(2, int(fill * seq)), seq + 1, rows)
  mask = (np.arange(seq)[None] < lengths[:, None]).astype(np.int32)
  return {"input_ids": rng.integers(1000, vocab, (rows, seq)).astype(np.int32) * mask,
          "attention_mask": mask, "token_type_ids": np.zeros((rows, seq), np.int32),
          "label": rng.random(rows).astype(np.float32), "label_mask": np.ones(rows, np.float32),
          "valid": np.ones(rows, np.float32), "domain": np.full(rows, domain, np.int32)}


def bench_model(name: str, args: argparse.Namespace, mesh: jax.sharding.Mesh) -> dict:
  """One model's row; with --attention cudnn, falls back to 'xla' (saying so) if cuDNN fails."""
  if args.attention != "cudnn":
    return _bench_model(name, args, mesh, args.attention)
  try:
    return _bench_model(name, args, mesh, "cudnn")
  except Exception as e:  # pylint: disable=broad-except  # unsupported backend/shape/dtype
    row = _bench_model(name, args, mesh, "xla")
    row["attention_fallback"] = f"cudnn failed ({type(e).__name__}: {str(e)[:300]}); ran xla"
    return row


def _bench_model(name: str, args: argparse.Namespace, mesh: jax.sharding.Mesh,
                 attention: str) -> dict:
  cfg = encoder_config(name, args.dtype, args.remat, attention)

  def build():
    rngs = nnx.Rngs(0)
    return recommender.CrossEncoderRecommender(
        bert.BertModel(cfg, rngs=rngs), rating_hidden=HEAD_HIDDEN,
        discriminator_hidden=HEAD_HIDDEN, rngs=rngs)

  parts = state_lib.split_model(nnx.eval_shape(build))
  opt = optim.make_optimizer(optim.label_params, {
      "encoder": {"lr": 5e-5}, "rating_head": {"lr": 1e-3}, "discriminator": {"lr": 1e-3}})
  rng = state_lib.make_rng(0)
  init = lambda: state_lib.init_train_state(state_lib.split_model(build()).params, opt.tx, rng)
  t0 = time.perf_counter()
  state, shardings = sharding.create_sharded_state(init, mesh)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - t0

  train_step = step_lib.make_train_step(
      parts.graphdef, parts.rng_state, opt,
      weights={k: schedules.loss_weight_schedule(1.0) for k in ("source", "target", "domain")},
      lam=schedules.dann_lambda(1000), alignment=losses.make_alignment("dann"),
      objective=ce_objective.objective(losses.make_alignment("dann"), "regression"),
      state_sharding=shardings,
      batch_sharding=sharding.batch_sharding(mesh))
  data = np.random.default_rng(0)
  half = args.batch // 2
  host = [(synthetic_batch(half, args.seq, args.fill, cfg.vocab_size, data, 0),
           synthetic_batch(args.batch - half, args.seq, args.fill, cfg.vocab_size, data, 1))
          for _ in range(2)]
  real_tokens = float(np.mean([sum(b["attention_mask"].sum() for b in pair) for pair in host]))
  batches = [tuple(pipeline.shard_batch(b, mesh) for b in pair) for pair in host]

  with jax.set_mesh(mesh):
    t0 = time.perf_counter()
    compiled = train_step.lower(state, *batches[0]).compile()
    compile_s = time.perf_counter() - t0
    for i in range(args.warmup):
      state, metrics = compiled(state, *batches[i % 2])
    jax.block_until_ready(state)
    times = []
    for _ in range(args.trials):
      t0 = time.perf_counter()
      with jax.transfer_guard("disallow"):  # no implicit host<->device copies in the loop
        for i in range(args.steps):
          state, metrics = compiled(state, *batches[i % 2])
      jax.block_until_ready((state, metrics))
      times.append((time.perf_counter() - t0) / args.steps)
  step_s = statistics.median(times)
  loss = float(metrics["loss"])
  if not np.isfinite(loss):
    raise FloatingPointError(f"{name}: non-finite loss {loss}")

  analytic = flops.step_flops(cfg, args.batch, args.seq, head_widths=(HEAD_HIDDEN, HEAD_HIDDEN))
  per_device = flops.xla_flops(compiled)
  xla_total = None if per_device is None else per_device * mesh.size
  peak, peak_name = flops.peak_flops(mesh.devices.flat[0])
  memory = getattr(mesh.devices.flat[0], "memory_stats", lambda: None)() or {}
  return {
      "model": name, "attention": attention,
      "attention_dropout": cfg.attention_probs_dropout_prob, "weights": "random init",
      "params_m": state_lib.tree_size(state.params) / 1e6,
      "dense_params_m": flops.dense_params(cfg) / 1e6, "dtype": args.dtype, "remat": args.remat,
      "batch": args.batch, "seq": args.seq, "mesh": dict(mesh.shape), "devices": mesh.size,
      "device_kind": mesh.devices.flat[0].device_kind, "init_s": init_s, "compile_s": compile_s,
      "step_s": step_s, "step_s_trials": times, "examples_per_s": args.batch / step_s,
      "tokens_per_s_padded": args.batch * args.seq / step_s,
      "tokens_per_s_real": real_tokens / step_s, "real_token_fraction":
          real_tokens / (args.batch * args.seq),
      "flops_per_step": analytic, "xla_flops_per_step": xla_total,
      "xla_over_analytic": None if xla_total is None else xla_total / analytic,
      "tflops_per_s": analytic / step_s / 1e12,
      "mfu": flops.mfu(analytic, step_s, mesh.size, peak), "peak_tflops_per_chip":
          None if peak is None else peak / 1e12, "peak_name": peak_name,
      "peak_bytes_in_use": memory.get("peak_bytes_in_use"), "final_loss": loss,
  }


def print_table(rows: list[dict]) -> None:
  cols = [("model", "{}"), ("attention", "{}"), ("remat", "{}"), ("dtype", "{}"),
          ("batch", "{}"), ("seq", "{}"), ("devices", "{}"),
          ("step_s", "{:.3f}"), ("examples_per_s", "{:.1f}"), ("tokens_per_s_padded", "{:.0f}"),
          ("tokens_per_s_real", "{:.0f}"), ("tflops_per_s", "{:.3f}"),
          ("xla_over_analytic", "{:.3f}"), ("mfu", "{:.1%}"), ("compile_s", "{:.1f}")]
  cells = [[c for c, _ in cols]]
  for r in rows:
    cells.append(["-" if r[c] is None else f.format(r[c]) for c, f in cols])
  widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
  for row in cells:
    print("  ".join(v.rjust(w) for v, w in zip(row, widths)))


def main(argv: list[str] | None = None) -> list[dict]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
  parser.add_argument("--models", help="comma-separated: minilm, bert-base, tiny")
  parser.add_argument("--dtype", choices=("float32", "bfloat16"))
  parser.add_argument("--batch", type=int, help="sequences per step (source + target)")
  parser.add_argument("--seq", type=int, help="padded sequence length")
  parser.add_argument("--steps", type=int, help="timed steps per trial")
  parser.add_argument("--trials", type=int)
  parser.add_argument("--warmup", type=int)
  parser.add_argument("--fill", type=float, default=0.75,
                      help="shortest real length as a fraction of --seq")
  parser.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor sizes (-1 = rest)")
  parser.add_argument("--remat", action="store_true", help="recompute each encoder layer")
  parser.add_argument("--attention", choices=bert.ATTENTION_IMPLS, default="einsum",
                      help="einsum (reference, with attention dropout) | xla | cudnn (fused; "
                      "falls back to xla where unavailable); the fused ones run without "
                      "attention-probability dropout")
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args(argv)
  for key, value in PRESETS[args.preset].items():
    if getattr(args, key) is None:
      setattr(args, key, value)
  mesh = sharding.make_mesh([int(x) for x in args.mesh.split(",")])
  rows = []
  for name in args.models.split(","):
    rows.append(bench_model(name.strip(), args, mesh))
    print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  print_table(rows)
  if args.out:
    env = {"jax": jax.__version__, "backend": jax.default_backend(),
           "python": platform.python_version(), "host": platform.node(),
           "args": {k: v for k, v in vars(args).items()}}
    with open(args.out, "w") as f:
      json.dump({"env": env, "results": rows}, f, indent=2)
  return rows


if __name__ == "__main__":
  main()
