"""Full-catalogue ranking throughput (users/s): top-K over every item with per-user exclusions.

Scores are dot products of float32 vectors, excluded items are masked inside the compiled function
and `jax.lax.top_k` keeps K (`eval/full_ranking.py`). Catalogues: the ML-100K protocol's 1,196
target items, and a synthetic 100,000-item catalogue. Compile time is excluded (one warm-up call).

Run:
  .venv/bin/python experiments/bench_full_ranking.py                      # both catalogues
  .venv/bin/python experiments/bench_full_ranking.py --items=1196,100000 --users=943,4096 \\
      --dim=128 --chunk=256 --k=10
  XLA_FLAGS=--xla_force_host_platform_device_count=2 .venv/bin/python \\
      experiments/bench_full_ranking.py --shard   # items sharded over the (fake) devices

Hardware: any; the numbers in README were measured on the 2-core CPU of the dev machine.
"""

from __future__ import annotations

import argparse
import json

import jax
from jax.sharding import AxisType

from crossrec_jax.eval import full_ranking


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--items", default="1196,100000")
  ap.add_argument("--users", default="943,4096", help="users per catalogue (same order)")
  ap.add_argument("--dim", type=int, default=128)
  ap.add_argument("--chunk", type=int, default=256)
  ap.add_argument("--k", type=int, default=10)
  ap.add_argument("--exclude", type=int, default=80, help="excluded items per user")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--shard", action="store_true", help="shard items over all local devices")
  args = ap.parse_args()
  mesh = None
  if args.shard:
    mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(AxisType.Auto,))
  for n_items, n_users in zip((int(x) for x in args.items.split(",")),
                              (int(x) for x in args.users.split(","))):
    out = full_ranking.users_per_second(n_users, n_items, args.dim, k=args.k,
                                        chunk_size=args.chunk, exclude_per_user=args.exclude,
                                        repeats=args.repeats, mesh=mesh)
    out.update(devices=jax.device_count() if mesh is not None else 1,
               backend=jax.default_backend(), chunk=args.chunk)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
