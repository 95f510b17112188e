"""Source only: train on the source domain's ratings, evaluate zero-shot on the target.

Phase 'source': rating loss on source rows (movies, ML-1M); no target data is used in training.
The target-valid / target-test numbers measure what transfers through the text alone.

Run:
  python -m crossrec_jax.main --config=source_only:tiny --workdir=/tmp/source_only
  python -m crossrec_jax.main --config=source_only:cpu --workdir=runs/source_only_cpu
  python -m crossrec_jax.main --config=source_only:gpu --workdir=runs/source_only_gpu

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.2859, MAE 1.0297; target_test RMSE 1.4883, MAE 1.2158 (128 examples each,
  1-5 stars); 34 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  steps = config_base.steps_for(preset, tiny=20, cpu=1000, gpu=10000)
  return methods.apply(config_base.base_config(preset), "source_only", source=steps)
