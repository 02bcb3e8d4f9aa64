#!/usr/bin/env bash
# The GPU check of issue 17, as one script for a lent device machine (run from the repository
# root; results go to $OUT, default ./gpu-check). About 10 minutes on one H100.
#
#   bash benchmarks/gpu_check.sh            # PYTHON=... to pick the interpreter
#
# It measures, side by side on the card (the card's name is printed first):
#   1. the float32 matmul peak and fused vs one-at-a-time training steps (gpu_fused_steps);
#   2. poolnas search --parallel 1 vs 8 vs KerasTuner RandomSearch, whole processes, on the
#      32x32 shapes folder and on CIFAR-10-sized synthetic data (50,000 x 32x32x3, 10 classes),
#      with mixed precision off and on (benchmarks/throughput.py --whole-process).
# Nothing here needs the network: the data are generated.
set -euo pipefail
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-check}
mkdir -p "$OUT"
log() { echo "== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/log.txt"; }

log "card"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi"; } | tee "$OUT/card.txt"
"$PYTHON" -c "import tensorflow as tf; print(tf.__version__, tf.config.list_physical_devices('GPU'))" \
    | tee -a "$OUT/card.txt"
# The package, from this checkout, without touching the network.
"$PYTHON" -c "import poolnas" 2>/dev/null \
    || "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e . >> "$OUT/log.txt" 2>&1

log "data"
[ -d "$OUT/shapes" ] || "$PYTHON" benchmarks/make_shapes_folder.py "$OUT/shapes" --per-class 300
[ -f "$OUT/cifar_sized.npz" ] || "$PYTHON" - "$OUT/cifar_sized.npz" <<'PY'
import sys
import numpy as np
rng = np.random.default_rng(0)
# Class-dependent mean colour plus noise: learnable, CIFAR-10's shapes and sizes.
y = rng.integers(0, 10, 60_000)
means = rng.integers(40, 216, (10, 1, 1, 3))
x = np.clip(means[y] + rng.normal(0, 40, (60_000, 32, 32, 3)), 0, 255).astype(np.uint8)
np.savez(sys.argv[1], x_train=x[:50_000], y_train=y[:50_000], x_test=x[50_000:],
         y_test=y[50_000:])
PY

log "fused steps vs one at a time, matmul peak"
"$PYTHON" benchmarks/gpu_fused_steps.py --dataset "$OUT/shapes" | tee "$OUT/fused_steps.md"

for mp in "" "--mixed-precision"; do
  log "whole process, shapes ${mp:-float32}"
  timeout 240 "$PYTHON" benchmarks/throughput.py --whole-process --dataset "$OUT/shapes" \
      --trials 8 --epochs 2 --rounds 1 --parallel 1,8 $mp | tee -a "$OUT/whole_shapes.md" || true
done
log "whole process, CIFAR-10-sized float32"
timeout 300 "$PYTHON" benchmarks/throughput.py --whole-process --dataset "$OUT/cifar_sized.npz" \
    --trials 8 --epochs 1 --rounds 1 --parallel 1,8 | tee -a "$OUT/whole_cifar.md" || true
log "done"
