"""The bi-encoder's RecBole-CDR table (ML-1M -> ML-100K) through the study runner.

The method x seed grid of `experiments/bi_encoder.py` (label fraction 100%: the protocol's whole
target train split) next to EASE (`study/recbole_cdr.run_ease`, no text) and RecBole-CDR's published numbers on the
same protocol, @10: Recall, MRR, NDCG, Hit, Precision (mean ± std over seeds), with the study's
resume (runs/<method>/frac1/seed<s>/eval.json), results.csv, verdict lines and learning curves.
See `crossrec_jax/study/bi_encoder.py` for how runs are scored (final_metrics.json: the test
metrics of the parameters selected on target-valid NDCG@10).

Run:
  python -m crossrec_jax.study --config=bi_encoder_study:tiny --workdir=/tmp/bi_study
  python -m crossrec_jax.study --config=bi_encoder_study:cpu --workdir=runs/bi_study

Presets:
  tiny: the end-to-end test (tests/test_study_bi.py): target_only and joint, 2 seeds, EASE, the
    experiment's tiny preset (random 2-layer BERT, a few steps). A smoke test, not a measurement.
  cpu: the README's bi-encoder table: all six methods, seeds 2022-2024, EASE and EASE + source
    rows, the experiment's cpu preset (~1 hour on a 2-core CPU, item encoding cached once).
  gpu: the same grid at the experiment's gpu preset.
Expected result (cpu): the README's bi-encoder table within one std (same configs; the study
checkpoints at phase ends only, which does not change what a run computes).
"""

import ml_collections

from crossrec_jax.configs import methods as methods_lib
from crossrec_jax.study import recbole_cdr


def get_config(preset: str = "tiny") -> ml_collections.ConfigDict:
  if preset not in ("tiny", "cpu", "gpu"):
    raise ValueError(f"unknown preset {preset!r}; choose tiny, cpu or gpu")
  c = ml_collections.ConfigDict()
  c.name = f"bi-encoder, ML-1M -> ML-100K, RecBole-CDR protocol ({preset} preset)"
  c.architecture = "bi_encoder"
  c.preset = preset
  c.experiment = "bi_{method}"  # the packaged bi-encoder config of each method ...
  c.config_arg = "{preset}"  # ... at the study's preset
  c.experiments_dir = ""  # a folder of your own method configs, searched before the packaged ones
  c.source = "movielens_1m_to_100k"
  c.data_dir = ""
  c.methods = tuple(methods_lib.METHODS)
  c.label_free = ()  # every method runs at the one fraction (the protocol's target train split)
  c.baselines = tuple(recbole_cdr.REFERENCES)
  c.label_fractions = (1.0,)
  c.seeds = (2022, 2023, 2024)
  c.phase_steps = 0  # the experiment's own steps
  c.keep_checkpoints = False
  c.table_metrics = tuple(f"test/{m}@10" for m in ("Recall", "MRR", "NDCG", "Hit", "Precision"))
  c.verdict_metrics = ("test/NDCG@10",)
  c.labels = ml_collections.ConfigDict({"ease": "EASE, target only (ours, no text)",
                                        "ease_joint": "EASE + source rows by title (ours, no text)"})
  c.peer = ml_collections.ConfigDict({k: dict(v) for k, v in recbole_cdr.PEER.items()})
  c.pca = ml_collections.ConfigDict(dict(enabled=False))
  c.run = ml_collections.ConfigDict()  # overrides of every run config
  if preset == "tiny":
    c.methods = ("target_only", "joint")
    c.baselines = ("ease",)
    c.seeds = (2022, 2023)
  return c
