"""Checkpoints with orbax: the train state (params, optimiser state, step, RNG) plus JSON metadata.

One checkpoint per saved global step, `args.Composite(state=StandardSave, meta=JsonSave)`:

  state  the `TrainState` pytree (arrays; sharded arrays are written by every process's shards).
  meta   plain JSON: phase index and name, step within the phase, global step, the data
         iterator's state (plain ints), the config hash (and config) of the run that wrote it.

Restoring always goes through an *abstract target* (`abstract_like`: `jax.ShapeDtypeStruct`s
with shardings, from `jax.eval_shape` of the phase's initial state). Without one, orbax returns
optax states as plain dicts and puts arrays wherever it likes; with one, the state comes back
with its exact pytree types, on the given devices (restoring onto another mesh works the same).

The state's structure depends on the phase (a frozen group has no Adam state), so callers read
`restore_meta` first, build that phase's abstract state, then call `restore_state`.
Saving is asynchronous (the arrays are copied off the device before `save` returns, so the step
may donate them); orbax finalises a checkpoint directory atomically, so a process killed while
writing leaves the previous checkpoints intact.

Integrity (docs/reliability.md, "Checkpoints"): every checkpoint holds `integrity.json`, the
size and CRC-32 of each of its files, written by process 0 once every process's files are
complete and *before* orbax renames the temporary directory to its final name (orbax's
post-finalisation callback), so a finalised checkpoint always has its record. `intact_step()`
checks the record of the newest checkpoints and falls back past damaged ones (renamed
`N.corrupt-<time>` for inspection, one warning each). A failed asynchronous save raises
`CheckpointError` naming the step, the path and the cause at the next `check()` / `save()` /
`wait()`; the failed checkpoint never gets its final name, so the previous one stays usable.
"""

from __future__ import annotations

import json
import logging
import pathlib
import time
import zlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from crossrec_jax.train import distributed

__all__ = ["Checkpointer", "CheckpointError", "abstract_like", "INTEGRITY_FILE"]

_log = logging.getLogger(__name__)
INTEGRITY_FILE = "integrity.json"
# Rewritten by orbax after the record is written (the commit timestamp): not covered.
_UNRECORDED = (INTEGRITY_FILE, "_CHECKPOINT_METADATA")
_TMP = ".orbax-checkpoint-tmp"
_CHUNK = 1 << 24


class CheckpointError(RuntimeError):
  """A checkpoint could not be saved, or none of the saved ones is intact (one-line message)."""


def abstract_like(tree: Any, sharding: Any = None) -> Any:
  """ShapeDtypeStructs of `tree` (arrays or ShapeDtypeStructs) with shardings.

  `sharding`: a pytree of shardings matching `tree`, one sharding for every leaf, or None (each
  leaf's own sharding when it is an array, else the first local device).
  """
  default = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  if sharding is None or isinstance(sharding, jax.sharding.Sharding):
    def leaf(x):
      s = sharding or getattr(x, "sharding", None) or default
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    return jax.tree.map(leaf, tree)
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, sharding)


# ---------------------------------------------------------------------------- integrity record

def _crc32(path: pathlib.Path) -> int:
  crc = 0
  with open(path, "rb") as f:
    while chunk := f.read(_CHUNK):
      crc = zlib.crc32(chunk, crc)
  return crc


def _files(directory: pathlib.Path) -> list[pathlib.Path]:
  return sorted(p for p in directory.rglob("*") if p.is_file() and p.name not in _UNRECORDED)


def write_record(directory: pathlib.Path) -> None:
  """Writes `directory/integrity.json`: {relative path: [size, crc32]} of every file in it."""
  files = {str(p.relative_to(directory)): [p.stat().st_size, _crc32(p)]
           for p in _files(directory)}
  tmp = directory / f"{INTEGRITY_FILE}.tmp"
  tmp.write_text(json.dumps({"format": 1, "hash": "crc32", "files": files}, indent=0))
  tmp.replace(directory / INTEGRITY_FILE)


def check_record(directory: pathlib.Path) -> str | None:
  """None when `directory` matches its integrity record, else what is wrong (first problem)."""
  if not directory.is_dir():
    return "the directory is missing"
  try:
    record = json.loads((directory / INTEGRITY_FILE).read_text())
    files = record["files"]
  except FileNotFoundError:
    return f"no {INTEGRITY_FILE}"
  except (ValueError, KeyError, TypeError) as e:
    return f"unreadable {INTEGRITY_FILE} ({type(e).__name__})"
  if not files:
    return f"{INTEGRITY_FILE} lists no files"
  for name, (size, crc) in sorted(files.items()):
    path = directory / name
    if not path.is_file():
      return f"{name} is missing"
    if path.stat().st_size != size:
      return f"{name} has {path.stat().st_size} bytes, {size} when saved"
    if _crc32(path) != crc:
      return f"{name} differs from the saved bytes (crc32)"
  return None


def _first_line(e: BaseException) -> str:
  """The innermost cause's message, first line (orbax wraps tensorstore's errors)."""
  while e.__cause__ is not None or e.__context__ is not None:
    e = e.__cause__ or e.__context__
  text = str(e).strip().splitlines()
  return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def _sync(name: str) -> None:
  # The coordination service's barrier, not a device collective: the processes reach it after
  # reading files, which can take one of them far longer (train/distributed.py, barrier).
  distributed.barrier(name)


# ---------------------------------------------------------------------------- the checkpointer

class Checkpointer:
  """Saves and restores (TrainState, meta) pairs under `directory`, keeping the last `keep`."""

  def __init__(self, directory: str | pathlib.Path, *, keep: int = 2, async_save: bool = True):
    if keep < 1:
      raise ValueError(f"train.keep_checkpoints must be >= 1, got {keep}")
    self.directory = pathlib.Path(directory).absolute()
    self._async = async_save
    # Steps whose save was started and whose record is not written yet, oldest first (orbax
    # finishes saves in order; the background thread pops, `save` appends).
    self._pending: list[int] = []
    self._last_saved: int | None = None
    self._unchecked = False  # a save was started and its outcome not seen yet
    self._failed: CheckpointError | None = None  # reported once; close() does not repeat it
    async_options = ocp.AsyncOptions(post_finalization_callback=self._on_finalised)
    # Orbax names its save barriers alike in every manager ("ThreadSaveMultiHostValueHolder:
    # set_value_start"): in a multi-process run, the best-parameters manager finishing a save
    # while the main one started another failed with "Barrier ... is already ongoing" (a
    # fresh-clone CI run, 2026-12-02). A prefix per manager, the same in every process (the
    # folder's name, not its path, which may differ between hosts), keeps their barriers apart.
    multiprocessing = ocp.options.MultiprocessingOptions(
        barrier_sync_key_prefix=f"crossrec_{self.directory.name}")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, enable_async_checkpointing=async_save,
        async_options=async_options if async_save else None,
        multiprocessing_options=multiprocessing)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's global step, or None (not verified: `intact_step`)."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self._manager.all_steps())

  def intact_step(self) -> int | None:
    """The newest checkpoint that matches its integrity record, or None when there is none.

    Newer damaged ones are renamed `N.corrupt-<unix time>` (kept for inspection; orbax no longer
    sees them) with one warning each. Checkpoints exist but none is intact: `CheckpointError`.
    """
    steps = sorted(self.all_steps(), reverse=True)
    if steps and not any((self.directory / str(s) / INTEGRITY_FILE).exists() for s in steps):
      _log.warning("checkpoints in %s were written before integrity records: resuming from %d "
                   "unverified", self.directory, steps[0])
      return steps[0]
    bad = []
    for step in steps:
      problem = check_record(self.directory / str(step))
      if problem is None:
        break
      bad.append((step, problem))
    else:
      step = None
    if not bad:
      return step
    if step is None:
      raise CheckpointError(
          f"no intact checkpoint in {self.directory}: "
          + "; ".join(f"{s}: {p}" for s, p in bad)
          + ". Inspect or delete that directory (or use a new --workdir) to start over")
    _sync(f"checkpoint check {self.directory}")  # every process has read before one renames
    if jax.process_index() == 0:
      for s, problem in bad:
        keep_as = self.directory / f"{s}.corrupt-{int(time.time())}"
        (self.directory / str(s)).rename(keep_as)
        _log.warning("checkpoint %d in %s is damaged (%s): moved to %s; resuming from "
                     "checkpoint %d", s, self.directory, problem, keep_as.name, step)
    _sync(f"checkpoint fallback {self.directory}")
    self._manager.reload()
    return step

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Writes checkpoint `step` (asynchronously; `wait()` blocks until it is on disk).

    Raises `CheckpointError` when the previous asynchronous save failed.
    """
    self.check()
    self._pending.append(int(step))
    self._last_saved = int(step)
    self._unchecked = True
    try:
      self._manager.save(int(step), args=ocp.args.Composite(
          state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._error(e) from None
    if not self._async:
      self._pending.pop(0)
      if jax.process_index() == 0:
        write_record(self.directory / str(step))  # finalised when a synchronous save returns

  def check(self) -> None:
    """Raises `CheckpointError` (step, path, cause) when an asynchronous save has failed.

    Cheap (no waiting): the train loop calls it every step, so a failed save stops the run.
    """
    if self._failed is not None:
      raise self._failed
    if not self._unchecked or self._manager.is_saving_in_progress():
      return
    try:  # the save has ended: joining its finished thread re-raises what it failed with
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._error(e) from None
    self._unchecked = False  # nothing to poll until the next save

  def restore_meta(self, step: int | None = None) -> dict[str, Any]:
    step = self._resolve(step)
    out = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(out.meta)

  def restore_state(self, step: int | None, abstract_state: Any) -> Any:
    """The state of checkpoint `step` (None: latest), shaped and placed like `abstract_state`."""
    step = self._resolve(step)
    out = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))
    return out.state

  def wait(self) -> None:
    self.check()
    try:
      self._manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._error(e) from None
    self.check()

  def close(self) -> None:
    if self._failed is not None:  # already raised: release what orbax holds, quietly
      try:
        self._manager.close()
      except Exception:  # pylint: disable=broad-except
        pass
      return
    try:
      self.wait()
    finally:
      self._manager.close()

  def _on_finalised(self) -> None:
    """orbax's post-finalisation callback (process 0, every process's files written, before
    the rename to the final name): the integrity record goes into the temporary directory."""
    step = self._pending.pop(0)
    final = self.directory / str(step)
    pending = sorted(self.directory.glob(f"{step}{_TMP}*"),
                     key=lambda p: p.stat().st_mtime)
    write_record(pending[-1] if pending else final)  # no temporary dir on commit-file storage

  def _error(self, e: BaseException) -> CheckpointError:
    step = self._pending[0] if self._pending else self._last_saved
    previous = [s for s in self.all_steps() if s != step]
    self._failed = CheckpointError(
        f"saving checkpoint {step} to {self.directory / str(step)} failed: "
        f"{_first_line(e)}. The previous checkpoint "
        f"({previous[-1] if previous else 'none'}) is unchanged")
    return self._failed

  def _resolve(self, step: int | None) -> int:
    if step is None:
      step = self.latest_step()
      if step is None:
        raise FileNotFoundError(f"no checkpoint in {self.directory}")
    return int(step)
