"""Joint training: source and target rating losses in every step (one shared encoder and head).

Phase 'joint': L = L_rate(source) + L_rate(target labelled rows); no domain alignment.

Run:
  python -m crossrec_jax.main --config=joint:tiny --workdir=/tmp/joint
  python -m crossrec_jax.main --config=joint:cpu --workdir=runs/joint_cpu
  python -m crossrec_jax.main --config=joint:gpu --workdir=runs/joint_gpu \\
      --config.data.label_fraction=0.1

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.2634, MAE 1.0238; target_test RMSE 1.4635, MAE 1.2045 (128 examples each,
  1-5 stars); 16 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  steps = config_base.steps_for(preset, tiny=20, cpu=1000, gpu=10000)
  return methods.apply(config_base.base_config(preset), "joint", joint=steps)
