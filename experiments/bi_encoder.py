"""Bi-encoder on RecBole-CDR's protocol (ML-1M -> ML-100K): run methods over seeds, print the table.

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

Hybrid text + ID terms (`models/bi_ids.py`), all overrides of `model.bi_encoder.*`: the text-only
row is `item_id_embedding=False` (no parameter indexed by an id); SVD++-like terms are
`history_id_embedding`, `user_id_embedding` and `id_dropout` (train-time drop of each ID embedding);
`item_item=True` adds an EASE-like linear item-item path over the target's items. The README's
"Hybrid text + ID" rows give the commands and what each measured.

Configs: the packaged `bi_<method>` (`crossrec_jax/configs/bi_*.py`, preset after the colon,
like every config), one per method of `configs/methods.py` (target_only, source_only, finetune,
dann, joint, joint_dann); the keys are `config_base.base_config(preset, kind="bi_encoder")`'s
(docs/configuration.md). Overrides: `--config.key=value` only. One run alone is also
`python -m crossrec_jax.main --config=bi_joint:tiny --workdir=DIR`.

Run (one config, three seeds; results in WORKDIR/<method>/seed<s>/results.json; each run directory
also holds the trainer's checkpoints, so rerunning the same command after a kill resumes it):
  python experiments/bi_encoder.py --config=bi_joint:cpu --seeds=2022,2023,2024 \\
      --workdir=runs/bi_recbole
  python experiments/bi_encoder.py --config=bi_target_only:cpu --reference=ease \\
      --seeds=2022,2023,2024 --workdir=runs/bi_recbole    # EASE on the same splits, no text
  python experiments/bi_encoder.py --table --workdir=runs/bi_recbole   # the table

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

import json
import logging
import pathlib
import time
from typing import Any

from absl import app
from absl import flags
import ml_collections
import numpy as np

from crossrec_jax import configs
from crossrec_jax.configs import methods
from crossrec_jax import tasks
from crossrec_jax.data import bi_prepare
from crossrec_jax.study import recbole_cdr
from crossrec_jax.train import trainer

METHODS = methods.METHODS
REFERENCES, PEER = recbole_cdr.REFERENCES, recbole_cdr.PEER  # the package's: one copy
_log = logging.getLogger("bi_encoder")


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


run_ease = recbole_cdr.run_ease  # EASE / EASE + source rows on the same splits


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


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _TABLE.value:
    print(table(_WORKDIR.value))
    return
  if _CONFIG.value is None:
    raise app.UsageError("--config=bi_<method>:PRESET is required (or --table)")
  logging.basicConfig(level=logging.INFO)
  config = _CONFIG.value
  method = _REFERENCE.value or config.method
  seeds = [int(s) for s in _SEEDS.value.split(",")] if _SEEDS.value else [int(config.seed)]
  for seed in seeds:
    config.seed = seed
    if _REFERENCE.value:
      config.method = _REFERENCE.value
    out = pathlib.Path(_WORKDIR.value) / method / f"seed{seed}"
    res = run_ease(config, out) if method in REFERENCES else run(config, out)
    print(json.dumps({"method": method, "seed": seed, "valid": res["valid"], "test": res["test"],
                      "selected_at": res["selected_at"], "wall_s": round(res["wall_s"], 1)}),
          flush=True)


if __name__ == "__main__":
  # Flags only when run as a script: tests import this file beside main.py's flags.
  _CONFIG = configs.define_config_flag("config", None, "A bi-encoder config and preset, e.g. "
                                       "bi_joint:cpu (overrides: --config.key=value).",
                                       lock_config=True)
  _SEEDS = flags.DEFINE_string("seeds", "", "Comma-separated seeds ('' = the config's seed).")
  _WORKDIR = flags.DEFINE_string("workdir", "runs/bi_recbole",
                                 "Results: WORKDIR/<method>/seed<s>/results.json.")
  _TABLE = flags.DEFINE_bool("table", False, "Print the table of WORKDIR's results and exit.")
  _REFERENCE = flags.DEFINE_enum("reference", "", ["", *REFERENCES],
                                 "Fit this non-text reference on the config's splits instead of "
                                 "training the config's method.")
  app.run(main)
