"""The transfer study under its historical name: `crossrec_jax.study` (runner, report, features).

    python -m crossrec_jax.eval.study --config=experiments/transfer_study.py:cpu --workdir=runs/study

is `python -m crossrec_jax.study ...`; the names below are that package's (see its modules).
"""

from crossrec_jax.eval import evaluate  # noqa: F401  (for callers that used study.evaluate)
from crossrec_jax.study.cell import Cell
from crossrec_jax.study.features import feature_panels
from crossrec_jax.study.finished import final_metrics, initial_model, restore_final
from crossrec_jax.study.grid import (REPO_ROOT, apply_overrides, cells, eval_spec,
                                     experiment_module, load_experiment, run_config)
from crossrec_jax.study.report import (LOWER_IS_BETTER, header, markdown_table, metric_table,
                                       summarise, verdict, write_csv, write_outputs)
from crossrec_jax.study.runner import result_rows, run_baseline_cell, run_lm, run_study

__all__ = ["Cell", "feature_panels", "final_metrics", "initial_model", "restore_final",
           "REPO_ROOT", "apply_overrides", "cells", "eval_spec", "experiment_module",
           "load_experiment", "run_config", "LOWER_IS_BETTER", "header", "markdown_table",
           "metric_table", "summarise", "verdict", "write_csv", "write_outputs", "result_rows",
           "run_baseline_cell", "run_lm", "run_study"]

if __name__ == "__main__":
  from crossrec_jax.study import runner  # pylint: disable=g-import-not-at-top
  runner.cli()
