"""Source pretraining, then target fine-tuning, with LoRA adapters on a frozen encoder.

As finetune.py, but the encoder's weights never change: rank-8 LoRA adapters on every attention
and MLP projection (models/lora.py, optimiser group 'lora') and the heads are what trains.
`--config.model.encoder.lora.per_domain=True` gives each domain its own adapters on the shared
base (each row uses its domain's: source rows in phase 1, target rows in phase 2).

Run:
  python -m crossrec_jax.main --config=experiments/lora.py:tiny --workdir=/tmp/lora
  python -m crossrec_jax.main --config=experiments/lora.py:cpu --workdir=runs/lora_cpu
  python -m crossrec_jax.main --config=experiments/lora.py:gpu --workdir=runs/lora_gpu \\
      --config.model.encoder.lora.per_domain=True

Hardware: tiny and cpu run on a CPU (tiny: 2-core CPU, ~30 s); gpu wants one accelerator.
Cost beside full fine-tuning: experiments/bench_lora.py (trainable parameters, step time, memory).
Expected result (tiny, 2-core CPU, seed 0; a smoke test, not a measurement of transfer):
  target_valid RMSE 1.1500, MAE 0.9873; target_test RMSE 1.3146, MAE 1.1193 (128 examples each,
  1-5 stars); 149 s wall at load average 17 (about 30 s idle). The tiny encoder is random:
  frozen, it gives the adapters little to adapt. Logged lr_encoder is 0 throughout.
"""

from crossrec_jax import config_base


def get_config(arg: str = "tiny"):
  config = config_base.base_config(arg)
  config.model.encoder.lora.update(dict(rank=8, alpha=16.0))
  config.optimizer.lora.lr = 1e-3
  steps = config_base.steps_for(arg, tiny=20, cpu=500, gpu=5000)
  config.phases = [
      config_base.phase("source", steps, source=1.0, frozen=("encoder",)),
      config_base.phase("target", steps, target=1.0, frozen=("encoder",)),
  ]
  return config
