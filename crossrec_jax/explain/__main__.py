"""Command line: explain predictions of a finished cross-encoder or hybrid run.

  python -m crossrec_jax.explain --workdir=RUN_DIR --user=ID --item=ID [--method=ig|loo]
      [--examples=N] [--baseline=pad|mask] [--steps=32] [--out=DIR] [--top=3]
  crossrec-explain --workdir=RUN_DIR --examples=5          # the installed console script

Restores the run's selected parameters (its best checkpoint, else the end of its last phase),
rebuilds its target examples, and explains the target rating of (--user, --item) (raw ids of
the target domain; looked for among the held-out test, then valid, ratings) and/or the first N
test examples that show a history. Prints each prediction with its top positive and negative
history items, and writes OUT/explain.html (tokens shaded by attribution, history items ranked)
and one PNG bar chart per example, OUT/explain_<user>_<item>.png (OUT: RUN_DIR/explain).
Attributions are in the target's rating units (stars): 'ig' integrated gradients over the input
embeddings (with its completeness gap), 'loo' the exact change when the entry is removed. A
hybrid run (`model.kind='hybrid'`) is explained over its ID history (each entry one rated item,
named by its title) by 'loo' alone; loading it prepares the run's data first (`explain/run.py`).

Mistakes (an unknown workdir, user or item; bad flags) are one line on stderr and exit code 2,
as for `crossrec_jax.main`.
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys
from typing import NoReturn

__all__ = ["main", "run"]


def _fatal(message: object, code: int = 2) -> NoReturn:
  print(f"FATAL: {' '.join(str(message).split())}", file=sys.stderr)
  sys.exit(code)


class _Parser(argparse.ArgumentParser):
  def error(self, message: str) -> NoReturn:  # one line, not argparse's usage block
    _fatal(message)


def parse(argv: list[str]) -> argparse.Namespace:
  p = _Parser(prog="crossrec-explain", description=__doc__.split("\n\n")[0])
  p.add_argument("--workdir", help="a finished trainer run (config.json, checkpoints); required")
  p.add_argument("--user", help="raw target user id")
  p.add_argument("--item", help="raw target item id")
  p.add_argument("--method", default="ig", choices=("ig", "loo"))
  p.add_argument("--examples", type=int, default=0, help="also explain the first N test examples")
  p.add_argument("--baseline", default="pad", choices=("pad", "mask"),
                 help="integrated gradients' baseline: [PAD] or [MASK] embeddings")
  p.add_argument("--steps", type=int, default=32, help="integrated-gradients quadrature points")
  p.add_argument("--out", default="", help="output folder (default WORKDIR/explain)")
  p.add_argument("--top", type=int, default=3, help="history items printed per sign")
  args, unknown = p.parse_known_args(argv)
  if unknown:  # before the missing ones: `--helpfull` must read as argparse's unknown flag
    _fatal(f"unrecognized arguments: {' '.join(unknown)}")
  if not args.workdir:
    _fatal("--workdir is required (a finished trainer run)")
  if (args.user is None) != (args.item is None):
    _fatal("--user and --item go together")
  if args.user is None and args.examples <= 0:
    _fatal("give --user and --item, or --examples=N")
  if args.steps < 1 or args.examples < 0:
    _fatal(f"--steps must be >= 1 and --examples >= 0 (got {args.steps}, {args.examples})")
  return args


def _safe(name: str) -> str:
  return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:40]


def main(argv: list[str]) -> list[dict]:
  """Runs the command on `argv` (without the program name); returns the explanation records."""
  args = parse(argv)
  workdir = pathlib.Path(args.workdir)
  if not workdir.is_dir():
    _fatal(f"--workdir={workdir}: no such directory")
  from crossrec_jax import logging_setup  # pylint: disable=g-import-not-at-top
  from crossrec_jax.explain import render  # pylint: disable=g-import-not-at-top
  from crossrec_jax.explain import run as run_lib  # pylint: disable=g-import-not-at-top
  logging_setup.configure()
  try:
    explained = run_lib.ExplainedRun.load(workdir, steps=args.steps, baseline=args.baseline)
  except (FileNotFoundError, ValueError, RuntimeError) as e:
    _fatal(e)
  picks = []
  if args.user is not None:
    try:
      picks.append(explained.find(args.user, args.item))
    except ValueError as e:
      _fatal(e)
  picks += [p for p in explained.first(args.examples) if p not in picks]
  try:
    records = explained.explain(picks, args.method)
  except ValueError as e:  # a method the run's model kind does not support
    _fatal(e)
  out = pathlib.Path(args.out) if args.out else workdir / "explain"
  out.mkdir(parents=True, exist_ok=True)
  for record in records:
    print("\n".join(render.summary_lines(record, args.top)))
    png = out / f"explain_{_safe(record['user'])}_{_safe(record['item'])}.png"
    record["png"] = str(render.bar_chart(record, png))
  page = out / "explain.html"
  page.write_text(render.html_page(records, f"Explanations of {workdir.name} ({args.method})"),
                  encoding="utf-8")
  print(f"wrote {page} and {len(records)} PNG chart(s) in {out}")
  return records


def run() -> None:
  """The `crossrec-explain` console script (= `python -m crossrec_jax.explain`)."""
  main(sys.argv[1:])


if __name__ == "__main__":
  run()
