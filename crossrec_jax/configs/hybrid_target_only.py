"""The hybrid text + ID rating model (`models/hybrid.py`) trained by method target_only (configs/methods.py).

  python -m crossrec_jax.main --config=hybrid_target_only:tiny --workdir=/tmp/hybrid_target_only
  python -m crossrec_jax.main --config=hybrid_target_only:cpu --workdir=runs/hybrid_target_only

Model and data: `config_base.base_config(preset, kind="hybrid")`; phase lengths
`config_base.HYBRID_STEPS`. The transfer study runs it (`--config=hybrid_study:cpu`, `make demo`).
Hardware: a CPU for every preset (the item vectors are encoded once, then cached; a cpu-preset
run trains in 1-3 minutes on 2 cores). Expected result (cpu preset): the README's demo table
row of this method, within its std.
"""

from crossrec_jax.configs import methods

get_config = methods.hybrid_config("target_only")
