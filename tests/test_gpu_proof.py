"""experiments/gpu_proof.sh in its CPU smoke mode writes one JSON with every field the GPU run
reports (examples/s, tokens/s, TFLOP/s, MFU against 989 TFLOP/s, the real-data step rate)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_proof_smoke_writes_valid_json(tmp_path):
  out = tmp_path / "proof.json"
  env = {**os.environ, "GPU_PROOF_SMOKE": "1", "PYTHON": sys.executable}
  run = subprocess.run(["bash", str(REPO / "experiments" / "gpu_proof.sh"), str(out)], env=env,
                       capture_output=True, text=True, timeout=1500, check=False)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  proof = json.loads(out.read_text())
  assert proof["smoke"] is True and proof["errors"] == {}, proof["errors"]
  assert proof["peak_tflops_per_chip"] == 989.0
  assert any("random" in n for n in proof["notes"])
  rows = proof["benchmarks"]
  assert sorted({r["part"] for r in rows}) == ["cudnn", "cudnn_remat", "einsum"]
  for r in rows:
    assert r["examples_per_s"] > 0 and r["tflops_per_s"] > 0
    assert r["tokens_per_s_padded"] >= r["tokens_per_s_real"] > 0
    assert r["mfu"] == pytest.approx(r["tflops_per_s"] / 989.0)
    assert r["remat"] == (r["part"] == "cudnn_remat")
    if r["part"].startswith("cudnn") and proof["env"]["backend"] == "cpu":
      assert r["attention"] == "xla" and "cudnn failed" in r["attention_fallback"]
  real = proof["real_data"]
  assert real["rc"] == 0 and real["examples_per_s"] > 0 and 0 < real["real_token_share"] <= 1
  assert real["tokens_per_s_padded"] >= real["tokens_per_s_real"] > 0
  assert real["mfu"] == pytest.approx(real["tflops_per_s"] / 989.0)
  assert proof["target"]["met"] is None  # no bert-base row at smoke shapes
