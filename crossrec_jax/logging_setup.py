"""Quiet by default, verbose on request: the command lines' logging, in one place.

    from crossrec_jax import logging_setup
    logging_setup.quiet_environment()   # at import of a CLI module, before jax / transformers load
    ...
    def main(argv):
      logging_setup.configure()         # in main(): absl has parsed --verbosity by then

By default (absl's `--verbosity=0`) the log shows crossrec_jax's own INFO lines (one per phase,
per run) and WARNING and above from everyone; INFO from third-party code (orbax's dozen lines per
checkpoint, JAX's "Unable to initialize backend 'tpu'", tfds, grain, transformers) is dropped.
`--verbosity=1` (or higher) lets every record through. What cannot be stopped by a logger level
is stopped at its source by `quiet_environment`: transformers' import-time advice ("PyTorch was
not found ...") reads TRANSFORMERS_NO_ADVISORY_WARNINGS / TRANSFORMERS_VERBOSITY when it is first
imported, and TensorFlow's C++ logging (tfds) reads TF_CPP_MIN_LOG_LEVEL.
"""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

# Files under these directories are "ours": their INFO lines are kept at verbosity 0.
_OURS = (str(pathlib.Path(__file__).resolve().parent), str(pathlib.Path.cwd() / "experiments"))
_QUIET_ENV = {
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",  # logger.warning_advice, e.g. "PyTorch was not found"
    "TRANSFORMERS_VERBOSITY": "error",  # transformers' own default level, read at its import
    "TF_CPP_MIN_LOG_LEVEL": "2",  # TensorFlow C++ INFO/WARNING (tfds imports TF when present)
}


def quiet_environment() -> None:
  """Sets the environment switches third-party libraries read at import (not overriding any the
  user set). Call before importing jax, transformers or tensorflow_datasets."""
  for key, value in _QUIET_ENV.items():
    os.environ.setdefault(key, value)


def verbosity() -> int:
  """absl's --verbosity once flags are parsed (0 before), else 0."""
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS
  return int(fv["verbosity"].value) if "verbosity" in fv and fv.is_parsed() else 0


def is_ours(record: logging.LogRecord) -> bool:
  """A record from crossrec_jax (or experiments/): by logger name or by the calling file (absl's
  logger is shared by every library that uses absl.logging, orbax included)."""
  return record.name.startswith("crossrec_jax") or record.pathname.startswith(_OURS)


class QuietThirdParty(logging.Filter):
  """Drops third-party records below WARNING unless --verbosity >= 1 (checked per record, so a
  later change of the flag applies)."""

  def __init__(self, level: int | None = None):
    super().__init__()
    self.level = level  # None: read absl's --verbosity per record

  def filter(self, record: logging.LogRecord) -> bool:
    level = verbosity() if self.level is None else self.level
    return level >= 1 or record.levelno >= logging.WARNING or is_ours(record)


def configure(level: int | None = None) -> None:
  """Installs `QuietThirdParty` on absl's handler (and the root logger's other handlers) once,
  and silences transformers' logger below ERROR unless verbose."""
  quiet_environment()
  from absl import logging as absl_logging  # pylint: disable=g-import-not-at-top
  handlers = [absl_logging.get_absl_handler(), *logging.getLogger().handlers]
  for handler in handlers:
    if not any(isinstance(f, QuietThirdParty) for f in handler.filters):
      handler.addFilter(QuietThirdParty(level))
  verbose = (verbosity() if level is None else level) >= 1
  # transformers installs its own stderr handler on its library logger: a filter on root's
  # handlers does not reach it, its level does.
  logging.getLogger("transformers").setLevel(logging.INFO if verbose else logging.ERROR)


def config_text(config: Any, prefix: str = "") -> str:
  """A ConfigDict (nested dicts, lists of ConfigDicts) as sorted `a.b.c = value` lines, no YAML
  tags or ConfigDict internals."""
  if hasattr(config, "items"):
    items = [(f"{prefix}.{k}" if prefix else str(k), v)
             for k, v in sorted(config.items(), key=lambda kv: str(kv[0]))]
  else:  # a list / tuple of ConfigDicts (the phases)
    items = [(f"{prefix}[{k}]", v) for k, v in enumerate(config)]
  lines = []
  for name, value in items:
    nested = hasattr(value, "items") or (isinstance(value, (list, tuple)) and value
                                         and all(hasattr(v, "items") for v in value))
    lines.append(config_text(value, name) if nested else f"{name} = {value!r}")
  return "\n".join(line for line in lines if line)
