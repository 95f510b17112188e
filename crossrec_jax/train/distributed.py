"""Multi-process (multi-host) start-up and process-0-only logging.

One process per host (or per GPU), all running the same program; JAX's own runtime connects
them (`jax.distributed.initialize`) so `jax.devices()` lists every device of every process and
one mesh spans them. Each process then loads only its slice of every global batch
(`data.pipeline` reads `jax.process_index()` / `jax.process_count()`), `pipeline.shard_batch`
assembles the global arrays, and orbax writes one checkpoint cooperatively.

Settings come from flags, else environment variables, else nothing:

    --coordinator_address / JAX_COORDINATOR_ADDRESS   host:port of process 0
    --num_processes       / JAX_NUM_PROCESSES
    --process_id          / JAX_PROCESS_ID

With none set, a single process runs uninitialised (the usual case), unless
`--distributed_auto` asks JAX to detect a cluster (SLURM, Open MPI, Cloud TPU, ...) itself.
Example, two processes on one machine (each with 4 CPU devices):

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m crossrec_jax.main ... \\
      --coordinator_address=127.0.0.1:12345 --num_processes=2 --process_id=0   # and =1

`main.py` calls `add_distributed_flags()` at import and `initialize_from_flags()` first thing in
`main()`, before anything touches a device.

`barrier(name)` lines the processes up on the coordination service, not through a device
collective. It matters on CPU: XLA's gloo collectives give a process 30 s (fixed, not a flag in
jax 0.10) to see its peers join a new communicator, so when host work before the first
collective takes one process more than 30 s longer than another (an item-vector cache miss in
one process and a hit in the other, a loaded machine), the early one fails ("Gloo context
initialization failed ... GetKeyValue() timed out") and the run hangs. The trainer waits at a
barrier after such work (train/trainer.py).
"""

from __future__ import annotations

import itertools
import logging
import os
from typing import Any

import jax
from absl import flags

__all__ = [
    "maybe_initialize", "add_distributed_flags", "initialize_from_flags", "is_main_process",
    "main_process_logger", "log_main", "barrier",
]

BARRIER_TIMEOUT_S = 1800  # as long as the slowest host work before a barrier may take
_barrier_count = itertools.count()

_ENV = {"coordinator_address": "JAX_COORDINATOR_ADDRESS", "num_processes": "JAX_NUM_PROCESSES",
        "process_id": "JAX_PROCESS_ID"}


def _from_env(name: str, value: Any) -> Any:
  if value not in (None, ""):
    return value
  return os.environ.get(_ENV[name]) or None


def maybe_initialize(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None, *, auto: bool = False,
                     initialization_timeout: int = 300) -> bool:
  """Calls `jax.distributed.initialize` when a multi-process run is configured.

  Arguments left None fall back to the JAX_* environment variables above. Returns True when
  the runtime was initialised (now or before), False for a plain single-process run.

  Raises:
    ValueError: a partial configuration (e.g. an address without a process id), naming the
      missing flag and its environment variable.
  """
  address = _from_env("coordinator_address", coordinator_address)
  num = _from_env("num_processes", num_processes)
  pid = _from_env("process_id", process_id)
  given = {"coordinator_address": address, "num_processes": num, "process_id": pid}
  if all(v is None for v in given.values()) and not auto:
    return False
  if not auto:
    missing = [k for k, v in given.items() if v is None]
    if missing:
      raise ValueError("incomplete multi-process settings: missing "
                       + ", ".join(f"--{k} (or ${_ENV[k]})" for k in missing))
  num = None if num is None else int(num)
  pid = None if pid is None else int(pid)
  if num is not None and pid is not None and not 0 <= pid < num:
    raise ValueError(f"--process_id={pid} must be in [0, --num_processes={num})")
  if jax.distributed.is_initialized():
    return True
  # The CPU backend needs a cross-process collectives library (gloo is built into jaxlib); it
  # must be chosen before the backend starts. Harmless for GPU/TPU runs.
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid,
                             initialization_timeout=initialization_timeout)
  return True


def add_distributed_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
  """Defines --coordinator_address, --num_processes, --process_id, --distributed_auto."""
  if "coordinator_address" in flag_values:
    return  # already defined (e.g. imported twice)
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 for multi-process runs ($JAX_COORDINATOR_ADDRESS).",
                      flag_values=flag_values)
  flags.DEFINE_integer("num_processes", None, "Number of processes ($JAX_NUM_PROCESSES).",
                       flag_values=flag_values)
  flags.DEFINE_integer("process_id", None, "This process's index ($JAX_PROCESS_ID).",
                       flag_values=flag_values)
  flags.DEFINE_bool("distributed_auto", False,
                    "Let jax.distributed.initialize detect the cluster (SLURM, MPI, TPU).",
                    flag_values=flag_values)


def initialize_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> bool:
  """`maybe_initialize` from the flags of `add_distributed_flags` (after absl parsed them)."""
  return maybe_initialize(flag_values.coordinator_address, flag_values.num_processes,
                          flag_values.process_id, auto=flag_values.distributed_auto)


def is_main_process() -> bool:
  """True in process 0: the one that writes logs, metrics files and summaries."""
  return jax.process_index() == 0


class _MainProcessFilter(logging.Filter):

  def filter(self, record: logging.LogRecord) -> bool:
    return is_main_process()


def main_process_logger(name: str) -> logging.Logger:
  """A logger that drops records in every process but process 0 (checked per record)."""
  logger = logging.getLogger(name)
  if not any(isinstance(f, _MainProcessFilter) for f in logger.filters):
    logger.addFilter(_MainProcessFilter())
  return logger


def log_main(msg: str, *args: Any, level: int = logging.INFO) -> None:
  """`logging.log` in process 0 only (for one-off messages)."""
  if is_main_process():
    logging.log(level, msg, *args)


def barrier(name: str, timeout_s: float = BARRIER_TIMEOUT_S) -> None:
  """Blocks until every process reached `barrier(name)` (a no-op in a single process).

  Every process must call it in the same order with the same `name`: the barrier's id is the
  name and its position in that order, so processes at different barriers fail after
  `timeout_s` (DEADLINE_EXCEEDED from the coordination service) instead of waiting forever.
  """
  index = next(_barrier_count)
  if jax.process_count() == 1:
    return
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  client = jax_distributed.global_state.client  # what orbax's barriers use too
  if client is None:
    raise RuntimeError(f"barrier {name!r}: {jax.process_count()} processes but no distributed "
                       "client (call distributed.maybe_initialize first)")
  client.wait_at_barrier(f"crossrec_jax/{index}/{name}", int(timeout_s * 1000))
