"""The bi-encoder trained by method finetune (configs/methods.py) on RecBole-CDR's protocol.

  python -m crossrec_jax.main --config=bi_finetune:tiny --workdir=/tmp/bi_finetune
  python experiments/bi_encoder.py --config=bi_finetune:cpu --seeds=2022,2023,2024

finetune: a source phase, then a target phase with a fresh optimiser.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024): test NDCG@10 0.2582 ± 0.0064, 160-270 s
a run with cached item vectors (README table). Hardware: a CPU for tiny and cpu, an accelerator
for gpu. Model and protocol: `config_base.base_config(preset, kind="bi_encoder")`.
"""

from crossrec_jax.configs import methods

get_config = methods.bi_encoder_config("finetune")
