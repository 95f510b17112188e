"""Target only: train on the target domain's labelled ratings; the no-transfer reference.

Phase 'target': rating loss on the target's labelled training rows (ML-100K). With
`--config.data.label_fraction=0.1` it sees 10% of the target labels, like the transfer methods.

Run:
  python -m crossrec_jax.main --config=target_only:tiny --workdir=/tmp/target_only
  python -m crossrec_jax.main --config=target_only:cpu --workdir=runs/target_only_cpu
  python -m crossrec_jax.main --config=target_only:gpu --workdir=runs/target_only_gpu

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.1994, MAE 1.0064; target_test RMSE 1.3854, MAE 1.1646 (128 examples each,
  1-5 stars); 15 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  steps = config_base.steps_for(preset, tiny=20, cpu=1000, gpu=10000)
  return methods.apply(config_base.base_config(preset), "target_only", target=steps)
