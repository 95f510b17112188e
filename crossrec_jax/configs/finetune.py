"""Source pretraining, then target fine-tuning (the classic transfer recipe).

Phase 1 'source': rating loss on the source domain only (movies, ML-1M).
Phase 2 'target': rating loss on the target's labelled rows only (ML-100K), fresh optimiser.

Run:
  python -m crossrec_jax.main --config=finetune:tiny --workdir=/tmp/finetune
  python -m crossrec_jax.main --config=finetune:cpu --workdir=runs/finetune_cpu
  python -m crossrec_jax.main --config=finetune:gpu --workdir=runs/finetune_gpu \\
      --config.data.label_fraction=0.1

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.1553, MAE 0.9897; target_test RMSE 1.3244, MAE 1.1265 (128 examples each,
  1-5 stars); 28 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  steps = config_base.steps_for(preset, tiny=20, cpu=500, gpu=5000)
  return methods.apply(config_base.base_config(preset), "finetune", source=steps, target=steps)
