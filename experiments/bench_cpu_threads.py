"""Which XLA:CPU operations use a second core: each op class of the cpu-preset train step, timed
alone with one and with all threads (issue 15: "first find why the second core is idle").

Not an experiment config: a benchmark script. Every op runs at the `cpu` preset's shapes (source +
target batch 2 x 32, sequence 96, MiniLM hidden 384, intermediate 1536, 12 heads), jitted on its
own, in a fresh process per setting (XLA reads its flags once, at start-up): one core; all
cores with `--xla_cpu_multi_thread_eigen=false`; all cores. A row's speed-up is (time on 1 core)
/ (time on all): ~N where XLA:CPU splits the op across its threads, ~1 where it runs on one core.

  python experiments/bench_cpu_threads.py [--repeats 20] [--flags "EXTRA XLA FLAGS"]

"1 core" is the process pinned to one core (`os.sched_setaffinity`, as `bench_train_step.py
--threads 1` does) with `--xla_cpu_multi_thread_eigen=false` as well, so no thread of XLA's can
use a second core.

Measured 2026-12-02 on the quiet 2-core x86_64 CPU (AVX-512; jax 0.10.2; load ~0, this script
alone), `python experiments/bench_cpu_threads.py --repeats 10` (ms; runs agree to ~20-30%):

  op                                          1 core   2 cores,    2 cores  speed-up
                                                       eigen off
  dot [6144,384]x[384,1536] (FFN in)          126.7     68.1       75.6    1.68
  dot [6144,1536]x[1536,384] (FFN out)         88.0     54.7       55.9    1.57
  dot weight grad [384,6144]x[6144,1536]       77.4     55.5       54.7    1.42
  GELU (erf) [6144,1536]                       34.5     24.0       26.5    1.30
  layer norm [6144,384]                         3.4      2.1        2.3    1.50
  attention, einsum + softmax                  70.8     49.3      100.3    0.71
  attention, heads-major matmul + softmax      46.5     41.3       36.6    1.27
  attention grad, einsum + softmax            174.8    125.1      129.1    1.35
  dropout mask, rbg bits [6144,1536]          168.1    121.5      120.5    1.39
  dropout mask, threefry2x32 bits             257.4    157.5      175.0    1.47
  dropout mask, philox4x32 bits                18.1     11.3       11.2    1.61
  cpu-preset encoder forward + backward      3627     2206       2281      1.59

`--xla_cpu_multi_thread_eigen=false` alone (middle column) does not single-thread XLA:CPU: the
encoder runs as fast with it as without. Every op class but one gains from the second core:
the [B, L, h, d] einsum attention forward loses (0.64-0.84 over five runs), the same products
heads-major gain. Moving the model's einsum
attention to heads-major did not move the whole cpu-preset step (`bench_train_step.py --presets
cpu --steps 3 --repeats 5 --warmup 1`: JAX / torch 0.67 either way; the backward, about the same
in both layouts, dominates), so the model keeps the einsums. Likewise philox4x32's bits are ~10x
cheaper than rbg's alone, but the step with `--set train.dropout_rng_impl=philox4x32` ran at
0.67 against rbg's 0.68.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROWS, SEQ, HIDDEN, INTER, HEADS = 64, 96, 384, 1536, 12


def _key(impl: str):
  """Arguments of a dropout-mask op: one PRNG key of `impl`."""
  import jax  # pylint: disable=g-import-not-at-top
  return lambda: [jax.random.key(0, impl=impl)]


def _encoder_grad():
  """(function, arguments) of the cpu preset's encoder forward + backward with dropout on: the
  whole of the step's encoder work, so that its two-core speed-up can be set beside the ops'."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  from crossrec_jax import config_base  # pylint: disable=g-import-not-at-top
  from crossrec_jax.models import recommender  # pylint: disable=g-import-not-at-top

  encoder = recommender.build_cross_encoder(config_base.base_config("cpu").model,
                                            rngs=nnx.Rngs(0)).encoder
  graphdef, state = nnx.split(encoder)
  ids = np.random.default_rng(0).integers(1000, 30000, (ROWS, SEQ)).astype(np.int32)
  ones, zeros = np.ones_like(ids), np.zeros_like(ids)

  def loss(state):
    out = nnx.merge(graphdef, state)(ids, ones, zeros, deterministic=False)
    return out.last_hidden_state.mean()

  return jax.grad(loss, allow_int=True), lambda: [state]


def _ops():
  """name -> (function, argument shapes or a callable building the arguments): the step's op
  classes, forward and backward, then the whole encoder."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top

  tokens = ROWS * SEQ
  head = HIDDEN // HEADS

  def layer_norm(x):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + 1e-12)

  def attention(q, k, v):
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / head ** 0.5
    return jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v)

  def heads_major_attention(q, k, v):
    q, k, v = (t.transpose(0, 2, 1, 3) for t in (q, k, v))  # [B, h, L, d]: batch dims leading
    s = q @ k.transpose(0, 1, 3, 2) / head ** 0.5
    return (jax.nn.softmax(s, -1) @ v).transpose(0, 2, 1, 3)

  def fused_attention(q, k, v):
    return jax.nn.dot_product_attention(q, k, v)

  qkv = [(ROWS, SEQ, HEADS, head)] * 3
  return {
      "dot [6144,384]x[384,1536] (FFN in)": (lambda x, w: x @ w, [(tokens, HIDDEN), (HIDDEN, INTER)]),
      "dot [6144,1536]x[1536,384] (FFN out)": (lambda x, w: x @ w, [(tokens, INTER), (INTER, HIDDEN)]),
      "dot weight grad [384,6144]x[6144,1536]": (lambda x, g: x.T @ g, [(tokens, HIDDEN), (tokens, INTER)]),
      "GELU (erf) [6144,1536]": (lambda x: jax.nn.gelu(x, approximate=False), [(tokens, INTER)]),
      "GELU (tanh) [6144,1536]": (lambda x: jax.nn.gelu(x, approximate=True), [(tokens, INTER)]),
      "GELU (erf) grad [6144,1536]": (
          jax.grad(lambda x: jax.nn.gelu(x, approximate=False).sum()), [(tokens, INTER)]),
      "layer norm [6144,384]": (layer_norm, [(tokens, HIDDEN)]),
      "attention, einsum + softmax": (attention, qkv),
      "attention, heads-major matmul + softmax": (heads_major_attention, qkv),
      "attention scores only, einsum": (
          lambda q, k: jnp.einsum("bqhd,bkhd->bhqk", q, k), qkv[:2]),
      "attention softmax only [64,12,96,96]": (
          lambda s: jax.nn.softmax(s, -1), [(ROWS, HEADS, SEQ, SEQ)]),
      "attention, jax.nn.dot_product_attention": (fused_attention, qkv),
      "attention grad, einsum + softmax": (
          jax.grad(lambda q, k, v: attention(q, k, v).sum(), argnums=(0, 1, 2)), qkv),
      "attention grad, heads-major matmul + softmax": (
          jax.grad(lambda q, k, v: heads_major_attention(q, k, v).sum(), argnums=(0, 1, 2)), qkv),
      "dropout mask, rbg bits [6144,1536]": (
          lambda k: jax.random.bernoulli(k, 0.9, (tokens, INTER)), _key("rbg")),
      "dropout mask, threefry bits [6144,1536]": (
          lambda k: jax.random.bernoulli(k, 0.9, (tokens, INTER)), _key("threefry2x32")),
      "dropout mask, unsafe_rbg bits [6144,1536]": (
          lambda k: jax.random.bernoulli(k, 0.9, (tokens, INTER)), _key("unsafe_rbg")),
      "dropout mask, philox4x32 bits [6144,1536]": (
          lambda k: jax.random.bernoulli(k, 0.9, (tokens, INTER)), _key("philox4x32")),
      "dropout mask, rbg uint8 bits [6144,1536]": (
          lambda k: jax.random.bits(k, (tokens, INTER), jnp.uint8) < 230, _key("rbg")),
      "dropout mask, unsafe_rbg uint8 bits [6144,1536]": (
          lambda k: jax.random.bits(k, (tokens, INTER), jnp.uint8) < 230, _key("unsafe_rbg")),
      "dropout mask, rbg raw uint32 bits [6144,1536]": (
          lambda k: jax.random.bits(k, (tokens, INTER), jnp.uint32), _key("rbg")),
      "dropout mask, rbg raw uint32 bits [6144,384]": (
          lambda k: jax.random.bits(k, (tokens, INTER // 4), jnp.uint32), _key("rbg")),
      "cpu-preset encoder forward + backward, dropout on": _encoder_grad(),
  }


def _child(repeats: int) -> dict[str, float]:
  """Seconds per call (median of `repeats`) of every op, in this process's XLA setting."""
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top

  out = {}
  rng = np.random.default_rng(0)
  for name, (fn, shapes) in _ops().items():
    if callable(shapes):
      args = shapes()
    else:
      args = [jax.device_put(rng.standard_normal(s, np.float32)) for s in shapes]
    f = jax.jit(fn)
    jax.block_until_ready(f(*args))
    times = []
    for _ in range(repeats):
      t = time.perf_counter()
      jax.block_until_ready(f(*args))
      times.append(time.perf_counter() - t)
    out[name] = float(np.median(times))
  return out


def _run(flags: str, one_core: bool, repeats: int) -> dict[str, float]:
  env = dict(os.environ, XLA_FLAGS=flags.strip(), JAX_PLATFORMS="cpu")
  cmd = [sys.executable, __file__, "--child", "--repeats", str(repeats)]
  if one_core:
    cmd.append("--one-core")
  result = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
  if result.returncode:
    raise SystemExit(f"child run with XLA_FLAGS={flags!r} failed:\n{result.stderr[-2000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--repeats", type=int, default=20)
  parser.add_argument("--flags", default="", help="extra XLA_FLAGS for both settings")
  parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
  parser.add_argument("--one-core", action="store_true", help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    if args.one_core:
      os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    print(json.dumps(_child(args.repeats)))
    return
  cores = len(os.sched_getaffinity(0))
  no_eigen = args.flags + " --xla_cpu_multi_thread_eigen=false"
  one = _run(no_eigen, True, args.repeats)
  flag_only = _run(no_eigen, False, args.repeats)
  many = _run(args.flags, False, args.repeats)
  print(f"XLA_FLAGS extra: {args.flags or '(none)'}; {cores} cores; median of {args.repeats} calls")
  print(f"| op | ms, 1 core | ms, {cores} cores, multi_thread_eigen=false | ms, {cores} cores "
        "| speed-up, 1 core -> all |")
  print("|---|---|---|---|---|")
  for name in one:
    print(f"| {name} | {1e3 * one[name]:.2f} | {1e3 * flag_only[name]:.2f} | "
          f"{1e3 * many[name]:.2f} | {one[name] / many[name]:.2f} |")


if __name__ == "__main__":
  main()
