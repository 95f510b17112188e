"""Input-pipeline benchmark: padding efficiency of length buckets, and examples/s to batches.

Run (2-core CPU numbers are in the issue note; rerun to reproduce):
  .venv/bin/python experiments/bench_pipeline.py                 # synthetic records
  .venv/bin/python experiments/bench_pipeline.py --real          # ML-100K, via data/examples.py
  .venv/bin/python experiments/bench_pipeline.py --demo cpu      # the demo's own joint batches
  .venv/bin/python experiments/bench_pipeline.py --demo gpu --demo_users 600

--demo PRESET: the transfer study's run config at PRESET (ML-1M -> ML-100K, the joint_dann run:
both halves every step), prepared by `data/prepare.py` as the trainer does, then the real-token
share (non-padding tokens / all tokens computed, padding rows included) and the host rate
(examples/s from the prepared sets to padded numpy batch pairs) of its training batches, with
the configured buckets and with `config.data.auto_buckets` = 2, 3, 4 (`data/buckets.py`).
--demo_users N subsamples N users per domain first (the gpu preset has all 6,040 + 943 users;
token counts are per example, so a user sample measures the same distribution).

Measured 2026-12-01 on the shared 2-core CPU (load average 10-20: host rates are depressed),
300 joint steps each (source + target rows, padding rows included):

  command                                      buckets                     real-token share  host ex/s
  --demo cpu  (the `make demo` batches)        configured (40,)            0.711             17,614
                                               auto_buckets=3 (24, 28, 40) 0.895*
                                               auto_buckets=4 (24,28,32,40) 0.930*
  --demo gpu --demo_users 600                  configured (64, 96, 128)    0.897              1,358
                                               auto_buckets=2 (116, 128)   0.928              1,774
                                               auto_buckets=3 (112,120,128) 0.942             1,638
  (* measured with the multiple-of-4 grid of data/buckets.py before it became the default; the
  multiple-of-8 grid gave 0.885 at k=3 and k=4 on the cpu demo.) The gpu preset's 128-token
  examples are mostly truncated (token counts p5/p50/p95 = 101/117/127), the cpu demo's are
  22/27/40 tokens. Host rates include grain's start-up (the gpu preset reads TFDS array_record
  through 2 mp_prefetch workers), so they are lower bounds.

Synthetic records have log-normal lengths (median ~55 tokens, clipped to [8, 128]) like a K=5
history template. Efficiency = real tokens / all tokens in the batches (padding rows are waste).
Throughput = examples/s from the random-access source (in memory, or the array_record TFDS dataset
written by `tfds_builder`) to padded numpy batches, after a few warm-up batches.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import tempfile
import time

import numpy as np

from crossrec_jax.data import pipeline as pl
from crossrec_jax.data import tfds_builder as tb


def synthetic(n: int, seed: int, domain: int) -> dict[str, object]:
  rng = np.random.default_rng(seed)
  lengths = np.clip(rng.lognormal(np.log(55), 0.45, n).astype(int), 8, 128)
  return {
      "input_ids": [np.concatenate([[101], rng.integers(999, 30000, l - 2), [102]]).astype(np.int32)
                    for l in lengths],
      "label": rng.random(n).astype(np.float32), "label_mask": np.ones(n, np.int32),
      "rating": rng.integers(1, 6, n).astype(np.float32), "domain": np.full(n, domain, np.int32),
      "user": rng.integers(0, 1000, n).astype(np.int32),
      "item": rng.integers(0, 5000, n).astype(np.int32), "row": np.arange(n, dtype=np.int64)}


def real_examples(max_len: int, history_k: int, cache_dir: str | None):
  """(source-like, target-like) = ML-100K train and test examples, via data/examples.py."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from crossrec_jax.data import examples, sources, splits, tokenize
  except ImportError as e:
    sys.exit(f"--real needs crossrec_jax.data.examples/sources/splits/tokenize ({e}); "
             "run without --real for synthetic records")
  domain = sources.movielens_domain("ml-100k", cache_dir=sources.default_cache_dir(cache_dir))
  split = splits.make_split(domain, "ratio", seed=0)
  tokenizer = tokenize.load_tokenizer()
  built = {which: examples.build_examples(domain, split, domain_id=1, template="default",
                                          tokenizer=tokenizer, max_len=max_len,
                                          history_len=history_k, which=which)
           for which in ("train", "test")}
  return built["train"], built["test"]


def efficiency_rows(src, tgt, batch_size: int) -> list[tuple[str, float, int]]:
  lengths = pl.source_lengths(pl.as_source(src))
  max_len = 128
  rows = [("pad every example to max_len 128", lengths.sum() / (len(lengths) * max_len), 1)]

  def train(cfg, name):
    batches = list(pl.train_batches(src, cfg, num_epochs=1))
    eff, _ = pl.padding_efficiency(batches)
    rows.append((name, eff, len({b["input_ids"].shape for b in batches})))

  coarse = (32, 64, 96, 128)
  train(pl.BatchConfig(batch_size, buckets=coarse, window=1), f"buckets {coarse}, no sorting")
  train(pl.BatchConfig(batch_size, buckets=coarse), f"buckets {coarse}, sorted windows of 32 B")
  train(pl.BatchConfig(batch_size, window=1), "16-token grid (default), no sorting")
  train(pl.BatchConfig(batch_size), "16-token grid (default), sorted windows of 32 B")
  for k in (4, 6):
    fitted = pl.choose_buckets(lengths, k)
    train(pl.BatchConfig(batch_size, buckets=fitted), f"choose_buckets(k={k}) {fitted}, sorted")
  steps = len(lengths) // batch_size
  for pair_window, name in ((1, "paired, independent order"),
                            (128, "paired, length-matched (default)")):
    pairs = list(pl.paired_batches(src, tgt, pl.BatchConfig(batch_size, pair_window=pair_window),
                                   num_steps=steps))
    eff, _ = pl.padding_efficiency(pairs)
    rows.append((name, eff, len({p[0]["input_ids"].shape[1] for p in pairs})))
  ev = list(pl.eval_batches(tgt, pl.BatchConfig(batch_size)))
  rows.append(("eval (sorted by length, padded last batch)", pl.padding_efficiency(ev)[0],
               len({b["input_ids"].shape for b in ev})))
  return rows


def demo_rows(preset: str, users: int, steps: int, autos=(0, 2, 3, 4)) -> list[dict]:
  """Real-token share + host rate of the demo's (source, target) training batches per bucketing."""
  # pylint: disable-next=g-import-not-at-top
  import dataclasses, pathlib  # noqa: E401
  from crossrec_jax.data import buckets as buckets_lib, prepare  # pylint: disable=g-import-not-at-top
  from crossrec_jax.eval import study as study_lib  # pylint: disable=g-import-not-at-top
  study = study_lib.load_experiment("transfer_study", preset)
  config = study_lib.run_config(study, "joint_dann", 1.0, 0, pathlib.Path(tempfile.gettempdir()))
  if users:
    config.data.users.update(dict(source=users, target=users))
  start = time.perf_counter()
  data = prepare.prepare_data(config)
  print(f"# demo {preset}: joint_dann run config, users {config.data.users.to_dict()}, "
        f"examples {data.report['examples']}, prepared in {time.perf_counter() - start:.0f} s")
  rows = []
  for k in autos:
    fitted = data.buckets if k == 0 else buckets_lib.fit_buckets(data.sources, k)
    run = dataclasses.replace(data, buckets=tuple(fitted))
    start = time.perf_counter()
    share = buckets_lib.token_share(run.train_batches(use_source=True, use_target=True,
                                                      seed=0, num_steps=steps))
    seconds = time.perf_counter() - start
    rows.append({"preset": preset, "auto_buckets": k, "buckets": list(fitted), "steps": steps,
                 **share, "host_examples_per_s": share["rows"] / seconds})
  return rows


def throughput(source, cfg: pl.BatchConfig, num_batches: int, warmup: int = 5) -> float:
  it = pl.train_batches(source, cfg)
  for _ in range(warmup):
    next(it)
  start = time.perf_counter()
  for _ in range(num_batches):
    next(it)
  seconds = time.perf_counter() - start
  it.close()
  return num_batches * cfg.batch_size / seconds


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--real", action="store_true", help="ML-100K examples via data/examples.py")
  parser.add_argument("--n_source", type=int, default=20000)
  parser.add_argument("--n_target", type=int, default=5000)
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--num_batches", type=int, default=200)
  parser.add_argument("--workers", type=int, default=0, help="also time grain mp_prefetch workers")
  parser.add_argument("--max_len", type=int, default=128)
  parser.add_argument("--history_k", type=int, default=5)
  parser.add_argument("--cache_dir", default=None)
  parser.add_argument("--demo", choices=("tiny", "cpu", "gpu"),
                      help="the transfer study's own batches at this preset (see docstring)")
  parser.add_argument("--demo_users", type=int, default=0, help="users per domain (0: preset's)")
  parser.add_argument("--demo_steps", type=int, default=300, help="joint steps measured")
  args = parser.parse_args(argv)

  if args.demo:
    print("| preset | buckets | real-token share | padded tokens/row | host examples/s | "
          "host tokens/s padded / real |\n|---|---|---|---|---|---|")
    for r in demo_rows(args.demo, args.demo_users, args.demo_steps):
      name = f"auto_buckets={r['auto_buckets']} {tuple(r['buckets'])}" if r["auto_buckets"] \
          else f"configured {tuple(r['buckets'])}"
      print(f"| {r['preset']} | {name} | {r['real_token_share']:.3f} | "
            f"{r['padded_tokens_per_row']:.1f} | {r['host_examples_per_s']:,.0f} | "
            f"{r['host_examples_per_s'] * r['padded_tokens_per_row']:,.0f} / "
            f"{r['host_examples_per_s'] * r['padded_tokens_per_row'] * r['real_token_share']:,.0f} |")
    return

  if args.real:
    src, tgt = real_examples(args.max_len, args.history_k, args.cache_dir)
    what = f"ML-100K train ({len(src)}) / test ({len(tgt)}) examples, K={args.history_k}"
  else:
    src = pl.RecordSource(synthetic(args.n_source, 0, 0))
    tgt = pl.RecordSource(synthetic(args.n_target, 1, 1))
    what = f"synthetic log-normal lengths, {args.n_source} source / {args.n_target} target"
  lengths = pl.source_lengths(pl.as_source(src))
  print(f"# {what}; batch_size {args.batch_size}; token counts p5/p50/p95/max = "
        f"{np.percentile(lengths, [5, 50, 95]).astype(int).tolist()}/{lengths.max()}\n")

  print(f"| {'batching':58s} | efficiency | shapes |\n|{'-' * 60}|------------|--------|")
  for name, eff, shapes in efficiency_rows(src, tgt, args.batch_size):
    print(f"| {name:58s} | {eff:10.3f} | {shapes:6d} |")

  with tempfile.TemporaryDirectory() as data_dir:
    name = tb.config_name({"dataset": "bench", "n": len(src), "real": args.real})
    start = time.perf_counter()
    tb.build_prepared_dataset(data_dir, name, {"source_train": src})
    build_rate = len(src) / (time.perf_counter() - start)
    on_disk = tb.load_prepared(data_dir, name)["source_train"]
    configs = [("in memory", src, 0, 0), ("in memory", src, 2, 0),
               ("TFDS array_record", on_disk, 0, 0), ("TFDS array_record", on_disk, 2, 0)]
    if args.workers:
      configs.append(("TFDS array_record", on_disk, 2, args.workers))
    print(f"\nTFDS build (validate + write array_record): {build_rate:,.0f} examples/s\n")
    print(f"| {'source':18s} | threads | workers | examples/s |")
    print(f"|{'-' * 20}|---------|---------|------------|")
    for label, source, threads, workers in configs:
      cfg = pl.BatchConfig(args.batch_size, num_threads=threads, worker_count=workers,
                           prefetch_batches=4 if threads else 0)
      rate = throughput(source, cfg, args.num_batches)
      print(f"| {label:18s} | {threads:7d} | {workers:7d} | {rate:10,.0f} |")


if __name__ == "__main__":
  main()
