"""Joint + DANN: source and target rating losses plus the adversarial domain loss.

Phase 'joint_dann': L = L_rate(source) + L_rate(target labelled rows) + 0.1 L_dom(source u
target) through gradient reversal with the DANN ramp (gamma 10). Unlabelled target rows (label
fraction < 1) still feed the domain loss.

Run:
  python -m crossrec_jax.main --config=experiments/joint_dann.py:tiny --workdir=/tmp/joint_dann
  python -m crossrec_jax.main --config=experiments/joint_dann.py:cpu --workdir=runs/jd_cpu
  python -m crossrec_jax.main --config=experiments/joint_dann.py:gpu --workdir=runs/jd_gpu \\
      --config.data.label_fraction=0.1

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.2565, MAE 1.0221; target_test RMSE 1.4554, MAE 1.2006 (128 examples each,
  1-5 stars); 17 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base


def get_config(arg: str = "tiny"):
  config = config_base.base_config(arg)
  steps = config_base.steps_for(arg, tiny=20, cpu=1000, gpu=10000)
  config.phases = [config_base.phase("joint_dann", steps, source=1.0, target=1.0, domain=0.1,
                                     alignment="dann")]
  return config
