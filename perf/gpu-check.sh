#!/usr/bin/env bash
# The paper-scale check for one lent GPU (H100/H200), in about 9 minutes:
#   1. perf/throughput.py on CUDA: the seeds' reference loop against kdbench's loop at batch 128,
#      at the suite's batch size and compiled, for ResNet-18 and MobileNetV2, and the lock-step
#      distillation of both students against two reference-style runs (peak GPU memory of each);
#   2. perf/streaming.py: ResNet-18 on 224-px images with the training images on the device
#      against streamed from host memory (images/s, peak GPU memory, same trained model);
#   3. perf/teacher.py: cifar10-paper's clean ResNet-18 teacher on the attacker half, to its
#      clean-accuracy target (92 %).
# Figures and CSVs go to $OUT (a new temporary folder when unset): env.txt, throughput.txt,
# throughput.csv, streaming.txt, streaming.csv, teacher.txt, teacher.csv (the summary),
# teacher-history.csv (per epoch).
#
#   perf/gpu-check.sh                      # on the GPU machine, from the checkout's root
#   perf/gpu-check.sh --device cpu --tiny  # the same steps at a tiny size, on the CPU (CI)
#
# CIFAR-10 is read from $KDBENCH_CIFAR10, default .data/cifar10 (git-ignored): copy the
# JPEG copy's train.tar.gz and test.tar.gz there.  The GPU machine reaches no registry, so
# kdbench is installed from the checkout without dependencies (torch, timm and the others
# are there already).  $PYTHON picks the interpreter (default python3).
set -euo pipefail

device=cuda
tiny=0
while [ $# -gt 0 ]; do
    case "$1" in
        --device) [ $# -ge 2 ] || { echo "gpu-check.sh: --device needs a value" >&2; exit 2; }
                  device=$2; shift 2 ;;
        --tiny) tiny=1; shift ;;
        *) echo "gpu-check.sh: unknown argument '$1' (expected --device DEVICE, --tiny)" >&2; exit 2 ;;
    esac
done

cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
OUT=${OUT:-$(mktemp -d -t kdbench-gpu-check-XXXXXX)}
mkdir -p "$OUT"
export KDBENCH_CIFAR10=${KDBENCH_CIFAR10:-$PWD/.data/cifar10}
export PYTHONUNBUFFERED=1
if [ ! -f "$KDBENCH_CIFAR10/train.tar.gz" ] || [ ! -f "$KDBENCH_CIFAR10/test.tar.gz" ]; then
    echo "gpu-check.sh: no CIFAR-10 archives in $KDBENCH_CIFAR10 (copy train.tar.gz and test.tar.gz there)" >&2
    exit 2
fi
if ! "$python" -c "import kdbench" 2>/dev/null; then
    "$python" -m pip install -q --no-deps --no-build-isolation -e .
fi
work=$(mktemp -d -t kdbench-gpu-check-work-XXXXXX)
trap 'rm -rf "$work"' EXIT

if [ "$tiny" = 1 ]; then  # every step, at a size that takes seconds on two cores
    throughput=(--models "small_cnn(width=8),small_cnn(width=4)" --teacher "small_cnn(width=8)"
                --steps 1 --warmup 1 --repeats 1 --workers 2 --threads 1 --no-compile)
    streaming=(--tiny --threads 1)
    teacher=(--dataset "cifar10(max_per_class=30,test_per_class=10)" --teacher "small_cnn(width=8)"
             --epochs 3 --batch-size 50 --target 0.1 --threads 1)
else
    throughput=(--steps 50 --warmup 10 --repeats 1)  # a GPU of its own: one run of each is steady
    streaming=()
    teacher=()
fi

{
    echo "kdbench gpu-check on $device$([ "$tiny" = 1 ] && echo ' (tiny)'), $(date -u +%FT%TZ)"
    "$python" -c "import importlib.metadata, torch; print('torch', torch.__version__, 'timm',
importlib.metadata.version('timm'), 'cuda', torch.cuda.get_device_name() if torch.cuda.is_available() else 'none')"
    if command -v nvidia-smi >/dev/null; then nvidia-smi; fi
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

started=$SECONDS
"$python" perf/throughput.py --device "$device" --root "$KDBENCH_CIFAR10" "${throughput[@]}" \
    --csv "$OUT/throughput.csv" | tee "$OUT/throughput.txt"
echo "throughput: $((SECONDS - started)) s"
"$python" perf/streaming.py --device "$device" "${streaming[@]}" --csv "$OUT/streaming.csv" | tee "$OUT/streaming.txt"
"$python" perf/teacher.py --suite cifar10-paper --device "$device" --workdir "$work" "${teacher[@]}" \
    --csv "$OUT/teacher-history.csv" --summary "$OUT/teacher.csv" | tee "$OUT/teacher.txt"
echo "gpu-check: $((SECONDS - started)) s in all; figures in $OUT"
