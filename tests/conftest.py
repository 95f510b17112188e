"""Shared pytest fixtures.

Real data lives in ../shared/data beside the repository. Tests that need it skip with a reason
where it is absent (a fresh clone on a user's machine) but FAIL when CI=true, so a wrong path can
never turn them silently green.
"""

import importlib.util
import os
import pathlib
import subprocess
import sys
import types

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("CROSSREC_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def require_shared_data(*parts: str) -> pathlib.Path:
  """Path under ../shared/data; skip when missing locally, fail when CI=true."""
  path = SHARED_DATA.joinpath(*parts)
  if not path.exists():
    msg = f"real data not found at {path} (set CROSSREC_DATA_DIR or place ../shared/data beside the repo)"
    if os.environ.get("CI", "").lower() == "true":
      pytest.fail(msg + " -- CI=true, so this is an error, not a skip")
    pytest.skip(msg)
  return path


@pytest.fixture
def shared_data():
  """Callable fixture: shared_data('bookcrossing', 'BX-Ratings.csv') -> Path."""
  return require_shared_data


def fake_devices_env(devices: int) -> dict[str, str]:
  """Environment for a subprocess whose CPU JAX shows `devices` devices (XLA_FLAGS must be set
  before jax starts, and only for that process, not the whole suite)."""
  return {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
          "JAX_PLATFORMS": "cpu"}


def run_on_fake_devices(script: str, devices: int, timeout: int) -> subprocess.CompletedProcess:
  """Runs `python -c script` in the repository root with `devices` fake CPU devices."""
  return subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, env=fake_devices_env(devices),
                        capture_output=True, text=True, timeout=timeout)


def experiment_module(name: str) -> types.ModuleType:
  """experiments/<name>.py as a fresh module (experiments/ is not a package)."""
  spec = importlib.util.spec_from_file_location(f"experiment_{name}",
                                                REPO_ROOT / "experiments" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module
