#!/usr/bin/env bash
# The GPU work of issue 8, one step per call of the device tool (each well inside 10 minutes):
#
#   bash benchmarks/gpu_session.sh test    # the whole test suite: NumPy, fake-CuPy and CuPy cases
#   bash benchmarks/gpu_session.sh bench   # bench_gpu.py: training steps beside PyTorch (cuDNN),
#                                          # then the data loader against the GPU (idle fraction)
#   bash benchmarks/gpu_session.sh train   # ssd-tiny on voc5-mini trainval on the GPU, then its
#                                          # VOC07 mAP on the test split
#
# Logs, and the training run's checkpoint and log, go to $OUT (the device tool's folder that
# comes back), else runs/gpu. voc5-mini does not travel by itself: copy it into the git-ignored
# .dev/ first and name it in the call's carry (46 MB, inside the 64 MiB limit):
#
#   cp -r ../shared/data/voc5-mini .dev/voc5-mini
#
# Settings (environment): DATA (.dev/voc5-mini), EPOCHS (100), MAX_MINUTES (8), WORKERS (12),
# PYTHON (python3: the device's, which has CuPy and torch; nothing is installed there).
# DEVICE=cpu QUICK=1 runs the same steps on NumPy, tiny, to check this script without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
LOGS=${OUT:-runs/gpu}
DATA=${DATA:-.dev/voc5-mini}
DEVICE=${DEVICE:-cuda}
CLASSES=bus,car,cat,person,train
WORKERS=${WORKERS:-12}
mkdir -p "$LOGS"

need_data() {
    [ -f "$DATA/ImageSets/Main/trainval.txt" ] || {
        echo "gpu_session.sh: no voc5-mini at $DATA: cp -r ../shared/data/voc5-mini .dev/voc5-mini" \
             "and carry .dev/voc5-mini" >&2
        exit 2
    }
}

case "${1:-}" in
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
    epochs=${EPOCHS:-100}
    [ -n "${QUICK:-}" ] && epochs=1
    "$PY" -m minissd train --data "$DATA" --classes "$CLASSES" --config ssd-tiny --epochs "$epochs" \
        --lr 3e-3 --device "$DEVICE" --workers "$WORKERS" --max-minutes "${MAX_MINUTES:-8}" \
        --out "$LOGS/voc5-gpu" --eval-split test 2>&1 | tee "$LOGS/train.log"
    ;;
*)
    echo "usage: bash benchmarks/gpu_session.sh test|bench|train   (see the comments at its top)" >&2
    exit 2
    ;;
esac
