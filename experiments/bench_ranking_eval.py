"""Ranking-evaluation throughput: candidates scored per second by the cross-encoder on this machine.

Not an experiment config (no get_config): a benchmark script. It takes the model of the transfer
study's `cpu` preset (the packaged MiniLM cut to its layers, untrained heads: speed does not
depend on the weights), builds the sampled-ranking examples of ML-100K (each test user's last
held-out item among 99 sampled negatives, histories as in training) with `eval/evaluate.py`, and
times the protocol's scoring loop (`evaluate.collect` over `pipeline.eval_batches`, jitted eval
step). The first pass compiles and is not timed; we report the median of --repeats timed passes.

  python experiments/bench_ranking_eval.py [--users 50] [--repeats 3] [--layers 0] [--max_len 0]
      [--batch 0] [--out FILE.json]      (0 = the cpu preset's value)

Measured: see the issue note of the evaluation work (2-core CPU); rerun to reproduce.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--users", type=int, default=50, help="ranked users (x 100 candidates)")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--layers", type=int, default=0, help="encoder layers (0: the preset's)")
  parser.add_argument("--max_len", type=int, default=0, help="tokens per example (0: preset's)")
  parser.add_argument("--batch", type=int, default=0, help="eval batch size (0: preset's)")
  parser.add_argument("--out", default="", help="write the result as JSON here")
  args = parser.parse_args()

  from crossrec_jax.data import pipeline, sources, splits, tokenize  # pylint: disable=g-import-not-at-top
  from crossrec_jax.eval import evaluate, study  # pylint: disable=g-import-not-at-top

  study_config = study.load_experiment("transfer_study", "cpu")
  config = study.run_config(study_config, "target_only", 1.0, 0, study.REPO_ROOT / "runs" / "bench")
  config.train.compilation_cache_dir = ""
  if args.layers:
    config.model.encoder.num_layers = args.layers
  max_len = args.max_len or int(config.data.max_len)
  batch = args.batch or int(config.data.eval_batch_size)

  domain = sources.movielens_domain("ml-100k", cache_dir=sources.default_cache_dir())
  split = splits.temporal_ratio(domain)
  plan = evaluate.make_plan(domain, split, evaluate.EvalSpec(
      which=("test",), ranking_users=args.users, num_negatives=99, rating_rows=1))
  part = plan.parts["test"]
  tok = tokenize.load_tokenizer()
  start = time.perf_counter()
  ex, _ = evaluate.candidate_examples(domain, split, part.rank_rows, part.candidates, which="test",
                                      template=config.data.template, tokenizer=tok,
                                      max_len=max_len, history_len=int(config.data.history_len))
  build_s = time.perf_counter() - start
  buckets = tuple(b for b in (16, 32, 48, 64, 96, 128, 256, 512) if b < max_len) + (max_len,)
  bcfg = pipeline.BatchConfig(batch_size=batch, buckets=buckets)

  eval_step, params = study.initial_model(config)
  score_fn = evaluate.score_fn_from_eval_step(eval_step, params)
  start = time.perf_counter()
  evaluate.collect(score_fn, pipeline.eval_batches(ex, bcfg), len(ex))  # compiles every bucket
  first_s = time.perf_counter() - start
  times = []
  for _ in range(args.repeats):
    start = time.perf_counter()
    scores = evaluate.collect(score_fn, pipeline.eval_batches(ex, bcfg), len(ex))
    times.append(time.perf_counter() - start)
  assert np.isfinite(scores).all()
  median = statistics.median(times)
  lengths = ex.lengths
  result = {
      "candidates": len(ex), "users": len(part.rank_rows), "candidates_per_s": len(ex) / median,
      "median_s": median, "times_s": times, "first_pass_s_with_compile": first_s,
      "example_build_s": build_s, "encoder_layers": int(config.model.encoder.num_layers),
      "max_len": max_len, "mean_tokens": float(lengths.mean()), "eval_batch": batch,
      "buckets": list(buckets), "jax": jax.__version__, "backend": jax.default_backend(),
      "device": str(jax.devices()[0]), "cpu_count": os.cpu_count(), "machine": platform.machine(),
      "load_avg_1min": os.getloadavg()[0],
  }
  print(json.dumps(result, indent=1))
  if args.out:
    with open(args.out, "w", encoding="utf-8") as f:
      json.dump(result, f, indent=1)


if __name__ == "__main__":
  main()
