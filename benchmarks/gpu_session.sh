#!/usr/bin/env bash
# The GPU work of issue 8, one step per call of the device tool (each well inside 10 minutes):
#
#   bash benchmarks/gpu_session.sh test    # the whole test suite: NumPy, fake-CuPy and CuPy cases
#   bash benchmarks/gpu_session.sh bench   # bench_gpu.py: training steps beside PyTorch (cuDNN),
#                                          # then the data loader against the GPU (idle fraction)
#   bash benchmarks/gpu_session.sh train   # the GPU recipe: ssd-cpu on voc5-mini trainval, AdamW,
#                                          # MAX_MINUTES of epochs; its model comes back in $OUT:
#   minissd evaluate --checkpoint voc5-gpu.npz --data ../shared/data/voc5-mini --split test  # here
#
# Logs, and the training run's checkpoint and log, go to $OUT (the device tool's folder that
# comes back), else runs/gpu. voc5-mini does not travel by itself, and all of it (46 MB) with the
# tracked tree (about 31 MiB) is over the call's 64 MiB: `prepare`, here, copies its trainval
# half (1207 photos, 28 MiB) into the git-ignored .dev/voc5-trainval; name that in the call's carry:
#
#   bash benchmarks/gpu_session.sh prepare   # here, once
#
# Settings (environment): DATA (.dev/voc5-trainval), MAX_MINUTES (8), WORKERS (12),
# LOADER (processes: train's loader workers; threads are bound by the interpreter lock there),
# PYTHON (python3: the device's, which has CuPy and torch; nothing is installed there).
# DEVICE=cpu QUICK=1 runs the same steps on NumPy, tiny, to check this script without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOGS=${OUT:-runs/gpu}
DATA=${DATA:-.dev/voc5-trainval}
DEVICE=${DEVICE:-cuda}
CLASSES=bus,car,cat,person,train
WORKERS=${WORKERS:-12}
LOADER=${LOADER:-processes}
mkdir -p "$LOGS"

need_data() {
    [ -f "$DATA/ImageSets/Main/trainval.txt" ] || {
        echo "gpu_session.sh: no voc5-mini trainval at $DATA: run 'bash benchmarks/gpu_session.sh" \
             "prepare' here and carry $DATA" >&2
        exit 2
    }
}

case "${1:-}" in
prepare)
    src=${SRC:-../shared/data/voc5-mini}
    mkdir -p "$DATA/JPEGImages" "$DATA/Annotations" "$DATA/ImageSets/Main"
    while read -r id; do
        cp "$src/JPEGImages/$id.jpg" "$DATA/JPEGImages/"
        cp "$src/Annotations/$id.xml" "$DATA/Annotations/"
    done < "$src/ImageSets/Main/trainval.txt"
    cp "$src/ImageSets/Main/trainval.txt" "$DATA/ImageSets/Main/"
    du -sh "$DATA"
    ;;
test)
    { nvidia-smi -L || true; "$PY" -c "import numpy, minissd.nn.backend as b; print('numpy', numpy.__version__,
'cupy', getattr(b.cupy_module(), '__version__', None), 'GPU', b.cuda_available())"; } 2>&1 \
        | tee "$LOGS/tests.log"
    "$PY" -m pytest -q -p no:cacheprovider -o addopts="-ra --durations=15" 2>&1 | tee -a "$LOGS/tests.log"
    ;;
bench)
    need_data
    quick=()
    [ -n "${QUICK:-}" ] && quick=(--quick)
    "$PY" benchmarks/bench_gpu.py --device "$DEVICE" "${quick[@]}" --data "$DATA" \
        --classes "$CLASSES" --workers "$WORKERS" 2>&1 | tee "$LOGS/bench_gpu.log"
    ;;
train)
    need_data
    plan=(--epochs auto --max-minutes "${MAX_MINUTES:-8}")
    [ -n "${QUICK:-}" ] && plan=(--epochs 1)
    "$PY" -m minissd train --data "$DATA" --classes "$CLASSES" --config ssd-cpu --optimizer adamw \
        --lr 1e-3 --weight-decay 0.05 --decay-at 0.85,0.95 --augment ssd "${plan[@]}" \
        --device "$DEVICE" --workers "$WORKERS" --loader "$LOADER" --out "$LOGS/voc5-gpu" \
        2>&1 | tee "$LOGS/train.log"
    "$PY" -m minissd export "$LOGS/voc5-gpu/last.npz" "$LOGS/voc5-gpu.npz"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh prepare|test|bench|train   (see the comments at its top)" >&2
    exit 2
    ;;
esac
