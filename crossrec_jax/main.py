"""Command line: train and evaluate one experiment config.

  python -m crossrec_jax.main --config=experiments/finetune.py:tiny --workdir=/tmp/ft \\
      [--config.optimizer.encoder.lr=3e-5 --config.phases[1].steps=200 ...]

`--config` is an experiment file with `get_config(arg)` and its preset after the colon (tiny |
cpu | gpu). The run uses every device JAX sees, on the mesh `config.mesh` (default: data
parallel over all of them; e.g. `--config.mesh.fsdp=4 --config.mesh.data=-1`). Multi-process
(multi-host) runs start one process per host with `--coordinator_address`, `--num_processes`,
`--process_id` (or the JAX_* environment variables, or `--distributed_auto`; see
train/distributed.py); only process 0 writes metrics and summaries. The config is locked (nested phases included): overriding or reading a key that does
not exist is an error that names it. Running again with the same --workdir resumes the run.
"""

from __future__ import annotations

import json
import sys

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from crossrec_jax import logging_setup
from crossrec_jax.train import distributed

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment file and preset, e.g. experiments/dann.py:tiny.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory: metrics, checkpoints, results.")
flags.mark_flags_as_required(["config", "workdir"])
distributed.add_distributed_flags()


def lock_all(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Locks `config` and every ConfigDict inside lists/tuples (e.g. the phases), which
  ConfigDict.lock() does not reach."""
  config.lock()
  for value in config.values():
    if isinstance(value, ml_collections.ConfigDict):
      lock_all(value)
    elif isinstance(value, (list, tuple)):
      for item in value:
        if isinstance(item, ml_collections.ConfigDict):
          lock_all(item)
  return config


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging_setup.configure()  # third-party INFO off unless --verbosity=1 (logging_setup.py)
  # Before anything touches a device: the runtime must connect the processes first.
  distributed.initialize_from_flags()
  # Imported here so that `--help` and flag errors do not pay for flax/tfds imports.
  from crossrec_jax.train import sharding  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top

  config = lock_all(_CONFIG.value)
  partitioner = sharding.MeshPartitioner.from_config(config.mesh)
  if distributed.is_main_process():
    logging.info("config %s, overrides %s (every key: %s/config.json)",
                 config_flags.get_config_filename(flags.FLAGS["config"]),
                 config_flags.get_override_values(flags.FLAGS["config"]) or "none", _WORKDIR.value)
    logging.debug("config:\n%s", logging_setup.config_text(config))
    logging.info("mesh %s over %d devices in %d processes", dict(partitioner.mesh.shape),
                 partitioner.mesh.size, jax.process_count())
  final = trainer.train_and_evaluate(config, _WORKDIR.value, partitioner=partitioner)
  if distributed.is_main_process():
    summary = {k: v for k, v in final.items() if k not in ("data", "phases")}
    print(json.dumps(summary, indent=2, default=str))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with config overrides of unknown keys reported as one clear line."""
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as e:
    # config_flags raises a bare AttributeError/KeyError (a traceback) for `--config.a.b=...`
    # when `a.b` is not a key of the config; name the override instead.
    msg = e
    while isinstance(msg, BaseException) and msg.args:  # AttributeError(KeyError("'k'\n..."))
      msg = msg.args[0]
    first, _, hint = str(msg).partition("\n")
    key = first.strip("'\"")
    culprits = [a for a in argv[1:] if a.startswith("--config.") and key in a] or argv[1:]
    print(f"FATAL: unknown config key {key!r} in {culprits}. {hint}".strip(), file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags)
