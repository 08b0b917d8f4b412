#!/usr/bin/env bash
# The GPU-stage benchmark as one prepared run (tools/earmark_dev/bench/device_run.py):
# Whisper large-v3-turbo and Gemma-2-9B shapes with random weights built on the card straight
# in their prepared form, a 9.9 h corpus, production and the fair baseline under a 22 GiB cap,
# the JSON figures in $OUT. About 3 minutes on an H200 (README: "GPU-stage benchmark").
#
#   tools/gpu-bench.sh --prepare    # here, with network: wheels/ and bench-voices/ (ignored)
#   tools/gpu-bench.sh              # on the lent machine, carrying wheels and bench-voices
#   tools/gpu-bench.sh --rehearse   # the same script on the CPU with the tiny models (CI)
#
# On the lent machine, one call of the device tool:
#   run(command="tools/gpu-bench.sh", carry=["wheels", "bench-voices"], timeout_s=540)
# Environment: PYTHON (default .venv/bin/python, else python3), OUT (default ./bench-out),
# LIMIT_S (default 500: the run is interrupted then, and still writes what it has).
# Further arguments go to device_run (--scale, --gpu-memory-gib, --batch1-max-s, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${PYTHON:-} ]]; then
    PYTHON=python3
    [[ -x .venv/bin/python ]] && PYTHON=.venv/bin/python
fi
WHEELS=$PWD/wheels
VOICES=$PWD/bench-voices
export PYTHONPATH=$PWD/include:$PWD/tools${PYTHONPATH:+:$PYTHONPATH}
mapfile -t PINS < <("$PYTHON" -m earmark_dev.bench.device_run --pins)

if [[ ${1:-} == --prepare ]]; then
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$WHEELS" \
        --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
        --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "${PINS[@]}"
    "$PYTHON" -m earmark_dev.bench.gpu_stage --save-voices "$VOICES"
    du -sh "$WHEELS" "$VOICES"
    exit 0
fi

mode=()
if [[ ${1:-} == --rehearse ]]; then
    mode=(--rehearse)
    shift
elif compgen -G "$WHEELS/*.whl" >/dev/null; then
    # The lent machine's Python is 3.12 and lacks some packages (device_run's CARRIED).
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/earmark-site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/earmark-site:$PYTHONPATH
else
    echo "no wheels/: run tools/gpu-bench.sh --prepare here, then carry wheels" >&2
    exit 1
fi
OUT=${OUT:-$PWD/bench-out}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error
export PYTHONUNBUFFERED=1
timeout -s INT "${LIMIT_S:-500}" "$PYTHON" -m earmark_dev.bench.device_run "${mode[@]}" \
    --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-bench.log"
