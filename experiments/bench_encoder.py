"""Forward throughput of the packaged encoder: our JAX/NNX BertModel vs PyTorch transformers.

Not an experiment config (no get_config): a benchmark script. Both models get the same token
arrays (real text, padded to --seq) in one process; warm-up excluded; timed forwards alternate
between implementations round by round (so load from other processes hits both alike); we
report the median of --repeats (JAX: jitted, block_until_ready; torch: inference_mode with
every available thread).

  python experiments/bench_encoder.py [--batch 32] [--seq 128] [--repeats 10] [--bf16]
      [--no-torch] [--out FILE.json]

Measured with `--bf16 --repeats 20` on a shared 2-core CPU (load average ~8 from other jobs, so
absolute numbers are contention-bound; the ratio is the useful part), jax 0.10.2, torch 2.13.0:
JAX float32 8.8 examples/s, JAX bfloat16 8.5, torch float32 (sdpa) 6.9.
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


def _time_interleaved(fns: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
  """Times each fn `repeats` times, alternating between them round by round, so that load
  from other processes on a shared machine hits every implementation alike."""
  for fn in fns.values():
    for _ in range(warmup):
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return times


def jax_forward(inputs: dict[str, np.ndarray], dtype):
  """A no-argument callable running the jitted (functional) forward to completion."""
  graphdef, state = nnx.split(hf_import.load_pretrained(dtype=dtype))

  @jax.jit
  def forward(state, input_ids, attention_mask, token_type_ids):
    return nnx.merge(graphdef, state)(input_ids, attention_mask, token_type_ids).pooler_output

  args = [jnp.asarray(inputs[k]) for k in ("input_ids", "attention_mask", "token_type_ids")]
  return lambda: forward(state, *args).block_until_ready()


def torch_forward(inputs: dict[str, np.ndarray]):
  """(callable, note) for the PyTorch reference under inference_mode, all CPU threads."""
  import torch  # pylint: disable=g-import-not-at-top  (optional: only the reference)
  import transformers  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count() or 1)
  model = transformers.BertModel.from_pretrained(
      str(hf_import.default_encoder_dir()), local_files_only=True).eval()
  tensors = {k: torch.from_numpy(v) for k, v in inputs.items()}

  def forward():
    with torch.inference_mode():
      model(**tensors)

  note = f"attn {model.config._attn_implementation}, {torch.get_num_threads()} threads"
  return forward, note


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
  backend = f"backend {jax.default_backend()}"
  fns, notes = {"jax float32 (jit)": jax_forward(inputs, jnp.float32)}, {}
  notes["jax float32 (jit)"] = backend
  if args.bf16:
    fns["jax bfloat16 (jit)"] = jax_forward(inputs, jnp.bfloat16)
    notes["jax bfloat16 (jit)"] = backend
  versions = {"jax": jax.__version__}
  if not args.no_torch:
    import torch  # pylint: disable=g-import-not-at-top
    name = "torch float32 (inference_mode)"
    fns[name], notes[name] = torch_forward(inputs)
    versions["torch"] = torch.__version__
  rows = []
  for name, times in _time_interleaved(fns, args.repeats, args.warmup).items():
    med = statistics.median(times)
    rows.append({"impl": name, "median_s": med, "examples_per_s": args.batch / med,
                 "min_s": min(times), "max_s": max(times), "note": notes[name]})

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
