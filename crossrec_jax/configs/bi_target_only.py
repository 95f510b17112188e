"""The bi-encoder trained by method target_only (configs/methods.py) on RecBole-CDR's protocol.

  python -m crossrec_jax.main --config=bi_target_only:tiny --workdir=/tmp/bi_target_only
  python experiments/bi_encoder.py --config=bi_target_only:cpu --seeds=2022,2023,2024

target_only: the target's ranking loss only: the no-transfer reference.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024): test NDCG@10 0.2521 ± 0.0048, 50-60 s
a run with cached item vectors (README table). Hardware: a CPU for tiny and cpu, an accelerator
for gpu. Model and protocol: `config_base.base_config(preset, kind="bi_encoder")`.
"""

from crossrec_jax.configs import methods

get_config = methods.bi_encoder_config("target_only")
