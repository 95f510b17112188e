"""Tests for crossrec_jax/logging_setup.py: third-party INFO off by default, a tiny main run's
stderr free of the noise issue 17 lists."""

import logging
import os
import pathlib
import subprocess
import sys

import ml_collections
import pytest

from crossrec_jax import logging_setup

REPO = pathlib.Path(__file__).resolve().parents[1]


def _record(level, name="absl", pathname="/venv/site-packages/orbax/checkpoint/x.py"):
  return logging.LogRecord(name, level, pathname, 1, "msg", (), None)


def test_filter_keeps_ours_and_warnings_drops_third_party_info():
  quiet, verbose = logging_setup.QuietThirdParty(0), logging_setup.QuietThirdParty(1)
  ours = str(REPO / "crossrec_jax" / "train" / "trainer.py")
  assert not quiet.filter(_record(logging.INFO))  # orbax through absl's logger
  assert not quiet.filter(_record(logging.INFO, "jax._src.xla_bridge", "/venv/jax/x.py"))
  assert quiet.filter(_record(logging.WARNING))
  assert quiet.filter(_record(logging.INFO, "crossrec_jax.train.trainer", ours))
  assert quiet.filter(_record(logging.INFO, "absl", ours))  # main.py logs through absl
  assert verbose.filter(_record(logging.DEBUG))  # --verbosity=1: everything


def test_config_text_is_plain_key_value_lines():
  c = ml_collections.ConfigDict(dict(b=1, a=dict(x=(1, 2), y="s"),
                                     phases=[ml_collections.ConfigDict(dict(name="dann"))]))
  c.lock()
  assert logging_setup.config_text(c).splitlines() == [
      "a.x = (1, 2)", "a.y = 's'", "b = 1", "phases[0].name = 'dann'"]


_NO_TORCH = "import sys; sys.modules['torch'] = None  # transformers then finds no PyTorch\n"


@pytest.mark.parametrize("quiet", [False, True])
def test_no_pytorch_advice_from_transformers(quiet):
  setup = "from crossrec_jax import logging_setup; logging_setup.quiet_environment()\n"
  code = _NO_TORCH + (setup if quiet else "") + "import transformers\n"
  # Without the switches an earlier in-process CLI call may have put into os.environ (inherited).
  env = {k: v for k, v in os.environ.items() if k not in logging_setup._QUIET_ENV}  # pylint: disable=protected-access
  err = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       check=True, env=env).stderr
  assert ("PyTorch was not found" in err) != quiet, err


@pytest.mark.slow
def test_tiny_main_run_stderr_is_quiet(tmp_path):
  args = ["--config=dann:tiny", f"--workdir={tmp_path}",
          "--config.phases[0].steps=6", "--config.phases[0].alignment=mmd",
          "--config.train.log_every=3", "--config.train.tensorboard=False"]
  code = _NO_TORCH + ("import runpy; sys.argv = ['crossrec_jax.main', *sys.argv[1:]]; "
                      "runpy.run_module('crossrec_jax.main', run_name='__main__')")
  run = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True,
                       text=True, timeout=600)
  assert run.returncode == 0, run.stderr[-3000:]
  err = run.stderr
  for noise in ("libtpu", "Unable to initialize backend", "PyTorch was not found", "!!python",
                "_locked", "orbax", "rematerialization"):
    assert noise not in err, noise
  assert "config dann:tiny" in err and "config.json" in err
  assert "dann (mmd):" in err  # the progress bar names the alignment the phase really runs
  # The bar advances when the host syncs on the metrics (every log_every=3 steps), not per dispatch.
  assert " 3/6 " in err and " 1/6 " not in err and " 2/6 " not in err
