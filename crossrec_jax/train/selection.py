"""Which target-valid evaluation is the best (`train.select`): higher or lower, by the metric.

Error metrics (RMSE, MAE, a loss) are better when lower; everything else an evaluator reports
(AUC, NDCG@10, Recall@10, HR@10, MRR ...) when higher.
"""

from __future__ import annotations

LOWER_IS_BETTER = ("rmse", "mae", "loss", "logloss")


def lower_is_better(metric: str) -> bool:
  return metric.split("/")[-1].lower() in LOWER_IS_BETTER


def improves(metric: str, value: float, best: float) -> bool:
  """`value` strictly better than `best` for `metric` (ties keep the earlier evaluation)."""
  return value < best if lower_is_better(metric) else value > best
