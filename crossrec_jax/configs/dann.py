"""DANN (Ganin et al. 2016): source ratings + a domain discriminator behind gradient reversal.

Phase 'dann': L = L_rate(source) + 0.1 L_dom(source u target), the discriminator reading
GRL_lam(h) with lam ramping 0 -> 1 over the phase (gamma 10). Target rows enter only through the
domain loss (unsupervised adaptation: their ratings are never a loss). Swap the alignment with
`--config.phases[0].alignment=mmd` (or coral) to compare feature penalties.
Does it adapt? At the cpu preset the discriminator learns (mean pooling; the truncated
MiniLM's [CLS] vector is nearly constant), but within 60 steps neither DANN nor a feature penalty
moves the held-out domain gap beyond noise: docs/adaptation.md (experiments/adaptation_check.py).

Run:
  python -m crossrec_jax.main --config=dann:tiny --workdir=/tmp/dann
  python -m crossrec_jax.main --config=dann:cpu --workdir=runs/dann_cpu
  python -m crossrec_jax.main --config=dann:gpu --workdir=runs/dann_gpu

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.1989, MAE 1.0065; target_test RMSE 1.3841, MAE 1.1638 (128 examples each,
  1-5 stars); 21 s wall in-process under load. The random 2-layer tiny model learns little more
  than the mean rating in 20 steps per phase: use the cpu/gpu presets for real comparisons.
"""

from crossrec_jax import config_base
from crossrec_jax.configs import methods


def get_config(preset: str = "tiny"):
  steps = config_base.steps_for(preset, tiny=20, cpu=1000, gpu=10000)
  return methods.apply(config_base.base_config(preset), "dann", source=steps)
