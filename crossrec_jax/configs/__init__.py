"""The experiment configs, shipped inside the package, and the `--config=` flag that loads them.

Every config is a module `crossrec_jax/configs/NAME.py` with `get_config(preset)`, preset one of
tiny | cpu | gpu (the one argument form of every config), and a docstring that gives its command,
hardware and expected result. A `--config=` value is either a packaged name or a file path,
with the preset after the colon:

    --config=dann:tiny                          # crossrec_jax/configs/dann.py, from any directory
    --config=crossrec_jax/configs/dann.py:tiny  # a file path (your own config file works the same)

Overrides are ml_collections' `--config.key=value` (the only override path). `experiments/`
holds benchmarks and the bi-encoder's run/table script, no configs: an old
`--config=experiments/NAME.py:PRESET` is an error that names the packaged spelling.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import pathlib
import types
from typing import Any

from absl import flags
from ml_collections import config_flags

CONFIG_DIR = pathlib.Path(__file__).resolve().parent
_NOT_CONFIGS = ("__init__", "methods")


def names() -> tuple[str, ...]:
  """The packaged config names (`dann`, `bi_joint`, `transfer_study`, ...)."""
  return tuple(sorted(p.stem for p in CONFIG_DIR.glob("*.py") if p.stem not in _NOT_CONFIGS))


def resolve(spec: str) -> str:
  """`NAME[:ARG]` -> `<package>/configs/NAME.py[:ARG]`; a file path is returned unchanged.

  A path that does not exist but names a packaged config (`experiments/dann.py`, the configs'
  old home) is an error naming the packaged spelling, not a silent fallback.
  """
  path, colon, arg = spec.partition(":")
  if path in names():
    return f"{CONFIG_DIR / path}.py{colon}{arg}"
  stem = pathlib.Path(path).stem
  if path.endswith(".py") and not pathlib.Path(path).exists() and stem in names():
    raise ValueError(f"--config={spec}: no file {path}; the configs ship in the package: "
                     f"--config={stem}{colon}{arg}")
  if not path.endswith(".py") and not pathlib.Path(path).exists():
    raise ValueError(f"--config={spec}: {path!r} is neither a config file nor a packaged "
                     f"config (one of {', '.join(names())})")
  return spec


def load(spec: str) -> Any:
  """The config `spec` (`NAME:PRESET` or `FILE.py:PRESET`) names, unlocked (for code; the
  command line goes through `define_config_flag`)."""
  name, colon, arg = spec.partition(":")
  if name in names():
    module = importlib.import_module(f"{__name__}.{name}")
  else:
    path = resolve(spec).partition(":")[0]
    stem = pathlib.Path(path).stem
    loader = importlib.machinery.SourceFileLoader(f"crossrec_config_{stem}", path)
    module = types.ModuleType(loader.name)
    module.__file__ = path  # as ml_collections loads it: a config may find files beside it
    loader.exec_module(module)
  return module.get_config(*([arg] if colon else []))


class _ResolvingParser(flags.ArgumentParser):
  """Wraps ml_collections' config-file parser: packaged names are resolved to their file first."""

  def __init__(self, inner: flags.ArgumentParser):
    self._inner = inner

  def parse(self, argument):
    return self._inner.parse(resolve(argument))

  def flag_type(self):
    return self._inner.flag_type()


def define_config_flag(name: str = "config", default: str | None = None,
                       help_string: str = "Config and preset: NAME:PRESET (packaged, e.g. "
                                          "dann:tiny) or FILE.py:PRESET.",
                       flag_values: flags.FlagValues = flags.FLAGS,
                       lock_config: bool = True) -> flags.FlagHolder:
  """`config_flags.DEFINE_config_file` (with its `--NAME.key=value` overrides) whose value may
  also be a packaged config name."""
  holder = config_flags.DEFINE_config_file(name, default, help_string, flag_values=flag_values,
                                           lock_config=lock_config)
  # absl calls `flag.parser.parse(value)`; only the path resolution is added.
  flag_values[name].parser = _ResolvingParser(flag_values[name].parser)
  return holder
