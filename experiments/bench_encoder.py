"""Forward throughput of the packaged encoder: our JAX/NNX BertModel vs PyTorch transformers.

Not an experiment config (no get_config): a benchmark script. Both models get the same token
arrays (real text, padded to --seq), run back to back in one process, warm-up excluded; we
report the median over --repeats timed forwards (JAX: jitted, block_until_ready; torch:
inference_mode with every available thread).

  python experiments/bench_encoder.py [--batch 32] [--seq 128] [--repeats 10] [--out FILE.json]

Measured (2-core CPU, jax 0.10.2, torch 2.13.0, batch 32 x seq 128, float32): see the report in
the commit adding this file; rerun to reproduce on your machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from crossrec_jax.models import hf_import

_TEXTS = [
    "User history: Toy Story (1995) rated 5/5; Heat (1995) rated 4/5; Fargo (1996) rated 5/5. "
    "Candidate: Pulp Fiction (1994), Crime | Drama.",
    "The Lord of the Rings: a hobbit inherits a ring that must be destroyed in Mount Doom.",
    "Harry Potter and the Sorcerer's Stone by J. K. Rowling (Scholastic, 1998).",
    "Heat",
]


def _time(fn, repeats: int, warmup: int) -> list[float]:
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return times


def bench_jax(inputs: dict[str, np.ndarray], repeats: int, warmup: int, dtype) -> list[float]:
  graphdef, state = nnx.split(hf_import.load_pretrained(dtype=dtype))

  @jax.jit
  def forward(state, input_ids, attention_mask, token_type_ids):
    return nnx.merge(graphdef, state)(input_ids, attention_mask, token_type_ids).pooler_output

  args = [jnp.asarray(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
  return _time(lambda: forward(state, *args).block_until_ready(), repeats, warmup)


def bench_torch(inputs: dict[str, np.ndarray], repeats: int, warmup: int) -> tuple[list[float], str]:
  import torch  # pylint: disable=g-import-not-at-top  (optional: only the reference)
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  model = transformers.BertModel.from_pretrained(
      str(hf_import.default_encoder_dir()), local_files_only=True).eval()
  tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}

  def forward():
    with torch.inference_mode():
      model(**tensors)

  return _time(forward, repeats, warmup), model.config._attn_implementation


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--batch", type=int, default=32)
  parser.add_argument("--seq", type=int, default=128)
  parser.add_argument("--repeats", type=int, default=10)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--bf16", action="store_true", help="also time JAX with bfloat16 compute")
  parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch reference")
  parser.add_argument("--out", help="write the results as JSON here")
  args = parser.parse_args()

  tokenizer = hf_import.load_tokenizer()
  texts = [_TEXTS[i % len(_TEXTS)] for i in range(args.batch)]
  inputs = dict(tokenizer(texts, padding="max_length", truncation=True, max_length=args.seq,
                          return_tensors="np"))
  rows = []
  def add(name, times, note=""):
    med = statistics.median(times)
    rows.append({"impl": name, "median_s": med, "examples_per_s": args.batch / med,
                 "min_s": min(times), "max_s": max(times), "note": note})

  add("jax float32 (jit)", bench_jax(inputs, args.repeats, args.warmup, jnp.float32),
      f"backend {jax.default_backend()}")
  if args.bf16:
    add("jax bfloat16 (jit)", bench_jax(inputs, args.repeats, args.warmup, jnp.bfloat16),
        f"backend {jax.default_backend()}")
  versions = {"jax": jax.__version__}
  if not args.no_torch:
    import torch  # pylint: disable=g-import-not-at-top
    times, attn = bench_torch(inputs, args.repeats, args.warmup)
    add("torch float32 (inference_mode)", times, f"attn {attn}, {torch.get_num_threads()} threads")
    versions["torch"] = torch.__version__

  machine = {"platform": platform.platform(), "processor": platform.processor() or "?",
             "cpu_count": os.cpu_count(), "devices": [str(d) for d in jax.devices()], **versions}
  print(f"Encoder forward, packaged all-MiniLM-L6-v2, batch {args.batch} x seq {args.seq}, "
        f"median of {args.repeats} (warm-up {args.warmup} excluded)")
  print(f"Machine: {json.dumps(machine)}\n")
  print("| implementation | median s/batch | examples/s | min s | max s | note |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['impl']} | {r['median_s']:.4f} | {r['examples_per_s']:.1f} | "
          f"{r['min_s']:.4f} | {r['max_s']:.4f} | {r['note']} |")
  if args.out:
    with open(args.out, "w") as f:
      json.dump({"batch": args.batch, "seq": args.seq, "repeats": args.repeats,
                 "machine": machine, "results": rows}, f, indent=2)


if __name__ == "__main__":
  main()
