#!/usr/bin/env bash
# The GPU stage at real size on one GPU, offline: Whisper large-v3-turbo and Gemma-2-9B + LoRA
# r=16 shapes with random weights, production's loop under a 22 GiB cap, the long-form baseline
# in the same run. Prints the benchmark's JSON and writes it under $OUT (or ./bench-out).
#
#   tools/gpu-bench.sh --prepare   # on a machine with network: wheels/ and bench-voices/
#   tools/gpu-bench.sh             # on the GPU machine (no network needed)
#   tools/gpu-bench.sh --tiny      # the same steps on the CPU with the tiny models (a smoke run)
#
# Environment: PYTHON (default python3), SKIP_INSTALL=1 to use the installed packages as they
# are, SCALE (default 8: 73 files, ~20 h of audio), CAP_GIB (default 22), FULL=1 to also run
# on the whole card.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
OUT=${OUT:-$PWD/bench-out}
WHEELS=$PWD/wheels
VOICES=$PWD/bench-voices
# What the GPU machine's image lacks or holds in another version (its Python is 3.12; it has
# torch, numpy, tokenizers, huggingface-hub, safetensors, accelerate, pyyaml, tqdm, typer).
PINS=(transformers==5.24.0 peft==0.21.2 soundfile==0.14.0 soxr==1.1.0 silero-vad==6.2.3
    sqlalchemy==2.1.9 regex==2026.11.19 cffi pycparser)

if [[ ${1:-} == --prepare ]]; then
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip download --quiet --dest "$WHEELS" --only-binary=:all: --no-deps \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 "${PINS[@]}"
    PYTHONPATH=include:tools "$PYTHON" -m earmark_dev.bench.gpu_stage --save-voices "$VOICES"
    du -sh "$WHEELS" "$VOICES"
    exit 0
fi

mode=(--models-dir "${MODELS_DIR:-/tmp/earmark-bench-models}" --scale "${SCALE:-8}")
if [[ ${1:-} == --tiny ]]; then
    mode=(--tiny --scale 1)
fi
mkdir -p "$OUT"
site=""
if [[ -z ${SKIP_INSTALL:-} ]]; then
    [[ -d $WHEELS ]] || { echo "no wheels/: run tools/gpu-bench.sh --prepare first" >&2; exit 1; }
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/earmark-site "$WHEELS"/*.whl
    site=/tmp/earmark-site:
fi
export PYTHONPATH=$site$PWD/include:$PWD/tools HF_HUB_OFFLINE=1
"$PYTHON" - <<'PY'
import torch
import transformers
print("torch", torch.__version__, "transformers", transformers.__version__,
      "cuda", torch.cuda.is_available() and torch.cuda.get_device_name(0))
PY
voices=()
command -v espeak-ng >/dev/null 2>&1 || voices=(--voices-dir "$VOICES")
run() {  # name, extra arguments
    local name=$1
    shift
    /usr/bin/time -v "$PYTHON" -m earmark_dev.bench.gpu_stage "${mode[@]}" "${voices[@]}" \
        --work-dir "${WORK_DIR:-/tmp/earmark-bench-work}" --json "$@" \
        >"$OUT/$name.json" 2>"$OUT/$name.log" || { tail -40 "$OUT/$name.log"; exit 1; }
    echo "$name: $(cat "$OUT/$name.json")"
}
if [[ ${1:-} == --tiny ]]; then
    run tiny
else
    run capped --gpu-memory-gib "${CAP_GIB:-22}"
    [[ -z ${FULL:-} ]] || run full
fi
