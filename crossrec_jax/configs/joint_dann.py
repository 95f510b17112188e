"""Joint + DANN: source and target rating losses plus the adversarial domain loss.

Phase 'joint_dann': L = L_rate(source) + L_rate(target labelled rows) + 0.1 L_dom(source u
target) through gradient reversal with the DANN ramp (gamma 10). Unlabelled target rows (label
fraction < 1) still feed the domain loss.
Does it adapt? At the cpu preset the discriminator learns (mean pooling; the truncated
MiniLM's [CLS] vector is nearly constant), but within 60 steps neither DANN nor a feature penalty
moves the held-out domain gap beyond noise: docs/adaptation.md (experiments/adaptation_check.py).

Run:
  python -m crossrec_jax.main --config=joint_dann:tiny --workdir=/tmp/joint_dann
  python -m crossrec_jax.main --config=joint_dann:cpu --workdir=runs/jd_cpu
  python -m crossrec_jax.main --config=joint_dann:gpu --workdir=runs/jd_gpu \\
      --config.data.label_fraction=0.1

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.2565, MAE 1.0221; target_test RMSE 1.4554, MAE 1.2006 (128 examples each,
  1-5 stars); 17 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  steps = config_base.steps_for(preset, tiny=20, cpu=1000, gpu=10000)
  return methods.apply(config_base.base_config(preset), "joint_dann", joint=steps)
