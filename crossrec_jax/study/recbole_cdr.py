"""RecBole-CDR's protocol, the references beside the bi-encoder: EASE on the same splits and the
peer's published numbers.

    from crossrec_jax.study import recbole_cdr
    result = recbole_cdr.run_ease(config, workdir, data=prepared)   # config.method: 'ease' | 'ease_joint'
    recbole_cdr.PEER['CMF (RecBole-CDR)']['NDCG@10']                # 0.2690

Part of the package (not of experiments/), so `python -m crossrec_jax.study
--config=bi_encoder_study:PRESET` runs from an installed wheel; `experiments/bi_encoder.py`
imports them from here.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import ml_collections
import numpy as np

from crossrec_jax.data import bi_prepare
from crossrec_jax.eval import full_ranking
from crossrec_jax.train import trainer

__all__ = ["REFERENCES", "PEER", "run_ease"]

# Not bi-encoders: a linear item-item reference on the same split (`run_ease`), to show what the
# protocol allows. 'ease': target only; 'ease_joint': plus source users' items mapped by text.
REFERENCES = ("ease", "ease_joint")
PEER = {  # RecBole-CDR 0.1.0's own runs on this protocol (one run, its seed 2022 split), @10
    "CMF (RecBole-CDR)": {"Recall@10": 0.2533, "MRR@10": 0.4372, "NDCG@10": 0.2690,
                          "Hit@10": 0.7243, "Precision@10": 0.1724},
    "EMCDR (RecBole-CDR)": {"Recall@10": 0.2252, "MRR@10": 0.3808, "NDCG@10": 0.2345,
                            "Hit@10": 0.6882, "Precision@10": 0.1618},
    "item-KNN (target only)": {"Recall@10": 0.2239, "MRR@10": 0.4073, "NDCG@10": 0.2388,
                               "Hit@10": 0.6723, "Precision@10": 0.1421},
}


def run_ease(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
             data: bi_prepare.BiPreparedData | None = None, lams=(100.0, 300.0, 1000.0),
             source_weights=(0.1, 0.3, 1.0)) -> dict[str, Any]:
  """EASE (Steck, WWW 2019), B = argmin ||X - XB||^2 + lam ||B||^2, diag(B) = 0, in closed form
  on the target's training matrix; 'ease_joint' adds w x the Gram matrix of the source users'
  items that share a catalogue row (item text) with a target item. lam and w are chosen on
  target-valid NDCG@10; test is reported for the choice."""
  t0 = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  data = data or bi_prepare.BiPreparedData(config)
  select = trainer.selection_metric(config) or "NDCG@10"
  tgt = data.train["target"]
  n_items = len(tgt.catalogue_rows)

  def multi_hot(hist):
    x = np.zeros((hist.num_users, n_items), np.float64)
    x[np.repeat(np.arange(hist.num_users), hist.lengths()), hist.item] = 1.0
    return x

  gram = (lambda x: x.T @ x)(multi_hot(tgt))
  src = data.train["source"]
  to_target = np.full(len(data.catalogue), -1)
  to_target[tgt.catalogue_rows] = np.arange(n_items)
  mapped = to_target[src.catalogue_rows[src.item]]
  xs = np.zeros((src.num_users, n_items), np.float64)
  keep = mapped >= 0
  xs[np.repeat(np.arange(src.num_users), src.lengths())[keep], mapped[keep]] = 1.0
  gram_s = xs.T @ xs
  weights = (0.0,) if config.method == "ease" else tuple(source_weights)

  def evaluate(b, which):
    ev = data.eval_sets[which]
    hist = data.eval_hist[which]
    h = multi_hot(hist)[ev.users]
    return full_ranking.full_ranking_eval(h.astype(np.float32), b.T.astype(np.float32),
                                          ev.positives, ev.exclude, ks=tuple(config.data.bi.ks))

  best = None
  history = []
  for w in weights:
    for lam in lams:
      p = np.linalg.inv(gram + w * gram_s + lam * np.eye(n_items))
      b = -p / np.diag(p)[None, :]
      np.fill_diagonal(b, 0.0)
      valid = evaluate(b, "valid")
      history.append({"lambda": lam, "source_weight": w, **valid})
      if best is None or valid[select] > best[0][select]:
        best = (valid, b, {"lambda": lam, "source_weight": w})
  result = {"method": config.method, "seed": int(config.seed), "selected_at": best[2],
            "valid": best[0], "test": evaluate(best[1], "test"), "history": history,
            "data": data.report, "wall_s": time.time() - t0}
  (workdir / "results.json").write_text(json.dumps(result, indent=2, default=str))
  return result
