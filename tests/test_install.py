"""The package installs and runs anywhere: a wheel built from the source, installed (not editable)
into a fresh venv, runs `crossrec-demo --preset=tiny` from a directory outside the repository.

The fresh venv gets only the wheel (`--no-deps`); the suite's own environment lends it the
dependencies (jax, flax, ..., the packaged encoder) through a .pth line, so the test installs
nothing from the network. A path line in a .pth file adds that directory only, not the .pth files
inside it: the suite's editable install of this checkout stays out, and `import crossrec_jax`
finds the wheel's copy, which the test asserts.
"""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import venv

import pytest

from conftest import REPO_ROOT

SCRIPTS = ("crossrec-train", "crossrec-study", "crossrec-demo", "crossrec-explain")


def _run(argv, **kwargs):
  return subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
  """(venv python, its bin dir) with the wheel of this checkout installed."""
  tmp = tmp_path_factory.mktemp("install")
  # Build from a copy of what the wheel is made of: setuptools' build/ in the checkout would
  # carry files of earlier builds (a deleted module) into the wheel.
  src = tmp / "src"
  src.mkdir()
  for name in ("pyproject.toml", "README.md", "LICENSE"):
    shutil.copy(REPO_ROOT / name, src / name)
  shutil.copytree(REPO_ROOT / "crossrec_jax", src / "crossrec_jax",
                  ignore=shutil.ignore_patterns("__pycache__"))
  pip = [sys.executable, "-m", "pip"]
  built = _run([*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"),
                str(src)], timeout=300)
  assert built.returncode == 0, built.stderr[-3000:]
  (wheel,) = (tmp / "dist").glob("crossrec_jax-*.whl")
  env_dir = tmp / "venv"
  venv.EnvBuilder(with_pip=False).create(env_dir)
  python = env_dir / "bin" / "python"
  done = _run([*pip, "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
              timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  purelib = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                 timeout=60).stdout.strip()
  (pathlib.Path(purelib) / "_suite_dependencies.pth").write_text(
      sysconfig.get_paths()["purelib"] + "\n")
  return python, env_dir / "bin"


def _outside_env():
  env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
  return env


@pytest.mark.slow
def test_wheel_installs_console_scripts_and_the_packaged_configs(installed, tmp_path):
  python, bin_dir = installed
  for script in SCRIPTS:
    assert (bin_dir / script).exists(), f"the wheel installs no {script}"
  # The bi-encoder study's config reads its EASE references and peer rows from the package
  # (study/recbole_cdr.py), not from a checkout's experiments/.
  probe = ("import crossrec_jax, crossrec_jax.configs as c; print(crossrec_jax.__file__); "
           "print(' '.join(c.names())); print(c.load('bi_joint:tiny').method); "
           "s = c.load('bi_encoder_study:cpu'); print(len(s.peer), ','.join(s.baselines))")
  out = _run([str(python), "-c", probe], cwd=tmp_path, env=_outside_env(), timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  where, names, method, study = out.stdout.strip().splitlines()
  assert study == "3 ease,ease_joint"
  assert pathlib.Path(where).resolve().is_relative_to(python.parent.parent.resolve()), where
  assert {"dann", "transfer_study", "bi_joint"} <= set(names.split())
  assert method == "joint"
  helped = _run([str(bin_dir / "crossrec-train"), "--helpfull"], cwd=tmp_path,
                env=_outside_env(), timeout=300)
  assert "NAME:PRESET" in helped.stdout + helped.stderr


@pytest.mark.slow
def test_installed_demo_runs_from_outside_the_repository(installed, tmp_path):
  python, bin_dir = installed
  cwd = tmp_path / "elsewhere"
  cwd.mkdir()
  workdir = tmp_path / "demo"
  out = _run([str(bin_dir / "crossrec-demo"), "--preset=tiny", f"--workdir={workdir}"], cwd=cwd,
             env=_outside_env(), timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "ML-1M -> ML-100K, hybrid text + ID model (tiny preset)" in out.stdout
  for table in ("| test/rmse (lower is better) | 100% labels | 0% labels |",
                "| test/NDCG@10 (higher is better) |"):
    assert table in out.stdout
  assert "| target_only |" in out.stdout and "| dann |" in out.stdout
  assert (workdir / "results.md").read_text().strip() in out.stdout
  assert not any(cwd.iterdir()), "the demo wrote into its working directory"
