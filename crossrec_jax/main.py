"""Command line: train and evaluate one experiment config.

  python -m crossrec_jax.main --config=finetune:tiny --workdir=/tmp/ft \\
      [--config.optimizer.encoder.lr=3e-5 --config.phases[1].steps=200 ...]
  crossrec-train --config=finetune:tiny --workdir=/tmp/ft      # the installed console script

`--config` is a packaged config name (`crossrec_jax/configs/`) or a file with
`get_config(preset)`, and its preset after the colon (tiny | cpu | gpu). The run uses every device
JAX sees, on the mesh `config.mesh` (default: data parallel over all of them; e.g.
`--config.mesh.fsdp=4 --config.mesh.data=-1`). Multi-process (multi-host) runs start one process
per host with `--coordinator_address`, `--num_processes`, `--process_id` (or the JAX_* environment
variables, or `--distributed_auto`; see train/distributed.py); only process 0 writes metrics and
summaries. The config is locked (nested phases included): overriding or reading a key that does
not exist is an error that names it. Running again with the same --workdir resumes the run.

Mistakes are one line on stderr, no traceback (docs/reliability.md): a bad command line or config
(an unknown key, a wrong type, a missing file or preset, an index out of range, a value out of
range, `config_checks.py`; an unusable --workdir) exits with code 2 before any work and before
the workdir is created; a run stopped by a failed checkpoint save or a non-finite loss exits 1.
In a multi-process run a process that fails, for any reason, exits at once with code 1 instead of
waiting for its peers (`exit_now`), and the peers stop within about two minutes (docs/reliability.md,
"When one process fails").
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import traceback
import warnings
from typing import Any, NoReturn

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags

from crossrec_jax import config_checks
from crossrec_jax import configs
from crossrec_jax import logging_setup
from crossrec_jax.train import distributed

_CONFIG = configs.define_config_flag(
    "config", None, "Config and preset: NAME:PRESET (packaged, e.g. dann:tiny) or FILE.py:PRESET.",
    lock_config=True)
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


class _QuietLibraries:
  """absl logging filter: drops INFO lines of orbax (a dozen lines per checkpoint) and orbax's
  tracebacks of a failed background save (hundreds of lines; `CheckpointError` says it in one)."""

  def filter(self, record) -> bool:
    if record.name == "asyncio" and _from_orbax(record):
      # With the state sharded over several devices, orbax's save writes several fragments at
      # once; when they all fail (disk full) only the first error is retrieved, and asyncio
      # logs each of the others as "Task (or _GatheringFuture) exception was never retrieved"
      # with its traceback.
      return False
    if "/orbax/" not in record.pathname:
      return True
    return record.levelno >= logging.converter.STANDARD_WARNING and not record.exc_info


def _from_orbax(record) -> bool:
  """Whether a log record is about orbax: named in its message (a Task's coroutine, or the
  checkpoint's `*.orbax-checkpoint-tmp` path in a tensorstore Future's error) or raised inside it
  (a _GatheringFuture's message names only the exception; its traceback says where)."""
  if "orbax" in record.getMessage():
    return True
  tb = record.exc_info[2] if record.exc_info else None
  return tb is not None and any("/orbax/" in frame.filename for frame in traceback.extract_tb(tb))


def _quiet_unraisable(report: Any) -> None:
  """sys.unraisablehook: after a failed save, tensorstore's pending writes call back into
  orbax's closed event loop, one 'Event loop is closed' traceback each; the save's own error
  is reported (CheckpointError), so these are dropped. Everything else prints as usual."""
  if isinstance(report.exc_value, RuntimeError) and "Event loop is closed" in str(report.exc_value):
    return
  sys.__unraisablehook__(report)


def fatal(message: Any, code: int = 2) -> NoReturn:
  """Ends the process with `FATAL: message` as one line on stderr."""
  text = " ".join(str(message).split())
  if _multi_process():
    print(f"FATAL: process {jax.process_index()} of {jax.process_count()}: {text}", file=sys.stderr)
    exit_now(code)
  print(f"FATAL: {text}", file=sys.stderr)
  sys.exit(code)


def _multi_process() -> bool:
  return jax.distributed.is_initialized() and jax.process_count() > 1


def exit_now(code: int) -> NoReturn:
  """Ends a process of a multi-process run without waiting for its peers.

  sys.exit would run jax's atexit `distributed.shutdown`, which waits (up to 300 s) for every
  process to shut down too, and a peer blocked in a collective or a barrier with this process
  never does: the whole job would hang. Exiting here drops the connections instead; a peer in a
  collective with this process fails at once (its gloo connection closes), and one anywhere else
  is ended by the coordination service when this process's heartbeats stop (100 s, jax's
  default). Buffered output is flushed first; files were closed as the error unwound.
  """
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(code)  # pylint: disable=protected-access


def check_run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Every check that needs no device and creates nothing: ranges, phases, selection, workdir."""
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top
  config_checks.check_config(config)
  trainer.validate_phases(config)
  trainer.selection_metric(config)
  config_checks.check_workdir(workdir)


def main(argv: list[str]) -> None:
  if len(argv) > 1:
    fatal(f"unexpected arguments: {argv[1:]}")
  logging_setup.configure()  # third-party INFO off unless --verbosity=1 (logging_setup.py)
  # Imported here so that `--help` and flag errors do not pay for flax/tfds imports.
  from crossrec_jax.train import checkpoint  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import sharding  # pylint: disable=g-import-not-at-top
  from crossrec_jax.train import trainer  # pylint: disable=g-import-not-at-top

  config = lock_all(_CONFIG.value)
  try:
    check_run(config, _WORKDIR.value)
  except ValueError as e:
    fatal(e)
  # Before anything touches a device: the runtime must connect the processes first.
  distributed.initialize_from_flags()
  logging.get_absl_handler().addFilter(_QuietLibraries())
  sys.unraisablehook = _quiet_unraisable
  try:
    partitioner = sharding.MeshPartitioner.from_config(config.mesh)
  except ValueError as e:
    fatal(f"config.mesh: {e}")
  if distributed.is_main_process():
    logging.info("config %s, overrides %s (every key: %s/config.json)",
                 config_flags.get_config_filename(flags.FLAGS["config"]),
                 config_flags.get_override_values(flags.FLAGS["config"]) or "none", _WORKDIR.value)
    logging.debug("config:\n%s", logging_setup.config_text(config))
    logging.info("mesh %s over %d devices in %d processes", dict(partitioner.mesh.shape),
                 partitioner.mesh.size, jax.process_count())
  try:
    final = trainer.train_and_evaluate(config, _WORKDIR.value, partitioner=partitioner)
  except (checkpoint.CheckpointError, trainer.NonFiniteLossError) as e:
    if isinstance(e, checkpoint.CheckpointError):
      # The failed save's other fragment writes are abandoned; at exit Python would warn once
      # per coroutine that never ran ("... was never awaited"). The error above says it all.
      warnings.filterwarnings("ignore", r"coroutine '.*' was never awaited", RuntimeWarning)
    fatal(e, code=1)
  except Exception:  # pylint: disable=broad-except
    if not _multi_process():
      raise  # a bug: the traceback, as usual
    print(f"process {jax.process_index()} of {jax.process_count()} failed:", file=sys.stderr)
    traceback.print_exc()
    exit_now(1)
  if distributed.is_main_process():
    summary = {k: v for k, v in final.items() if k not in ("data", "phases")}
    print(json.dumps(summary, indent=2, default=str))


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing; every mistake on the command line is one line and exit code 2."""
  try:
    rest = flags.FLAGS(argv)
    # A config file that failed to load is an object that raises on first use: use it here.
    _CONFIG.value.keys()  # pylint: disable=pointless-statement
    return rest
  except Exception as e:  # pylint: disable=broad-except
    fatal(describe_flag_error(e, argv[1:]))


def _config_arg(args: list[str]) -> str:
  for i, a in enumerate(args):
    if a.startswith("--config="):
      return a[len("--config="):]
    if a == "--config" and i + 1 < len(args):
      return args[i + 1]
  return ""


def describe_flag_error(error: BaseException, args: list[str]) -> str:
  """One line for a flag-parsing failure, naming the override, the flag or the config file."""
  root = error
  while root.__cause__ is not None or root.__context__ is not None:
    root = root.__cause__ or root.__context__
  overrides = [a for a in args if a.startswith("--config.")]
  if isinstance(error, (AttributeError, KeyError)) and overrides:
    # config_flags raises a bare AttributeError/KeyError for `--config.a.b=...` when `a.b` is
    # not a key of the config; name the override instead (the outer error holds the hint).
    msg = error
    while isinstance(msg, BaseException) and msg.args:  # AttributeError(KeyError("'k'\n..."))
      msg = msg.args[0]
    first, _, hint = str(msg).partition("\n")
    key = first.strip("'\"")
    culprits = [a for a in overrides if key in a] or overrides
    return f"unknown config key {key!r} in {culprits}. {hint}".strip()
  if isinstance(root, IndexError) and overrides:
    indexed = [a for a in overrides if "[" in a.partition("=")[0]] or overrides
    return f"index out of range in {indexed} (the list has fewer entries; see config.json)"
  text = str(error).strip()
  if "must have a value other than None" in text:
    name = text.partition("flag --")[2].partition("=")[0]
    return f"--{name} is required ({flags.FLAGS[name].help})"
  config_arg = _config_arg(args)
  if config_arg and (text.startswith("flag --config=") or "config file" in text
                     or "Configuration is not available" in text):
    try:  # a packaged name is its file; an old experiments/ path names the packaged spelling
      path = configs.resolve(config_arg).partition(":")[0]
    except ValueError as resolved:
      return str(resolved)
    if not pathlib.Path(path).is_file():
      return f"--config={config_arg}: no such file {path!r}"
    return f"--config={config_arg}: {type(root).__name__}: {_first_line(root)}"
  if text.startswith("flag --"):  # absl's own message names the flag and the value
    return text[len("flag "):].splitlines()[0]
  return f"{type(root).__name__}: {_first_line(root)}"


def _first_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return lines[0] if lines else ""


def run() -> None:
  """The `crossrec-train` console script (= `python -m crossrec_jax.main`)."""
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  run()
