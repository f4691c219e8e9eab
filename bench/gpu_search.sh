#!/usr/bin/env bash
# The search at CIFAR scale on one GPU, sized to about 8 minutes on an H200 (--budget 7m plus
# start-up). Real CIFAR-10 where present (DATA_DIR, default ~/.cache/alphac/cifar10), else
# Fashion-MNIST padded to 32x32 RGB and written in CIFAR-10's format (bench/fmnist_as_cifar.py).
# Training runs in bf16 autocast with channels_last (the runtime's CUDA defaults). Prints the
# Pareto table and the training throughput (images/s). Usage:
#   bench/gpu_search.sh [RUN_DIR]           # default .bench/gpu-search
#   DEVICE=cpu BUDGET=3m SUBSET=2000 bench/gpu_search.sh /tmp/smoke    # a CPU smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-.bench/gpu-search}
DEVICE=${DEVICE:-cuda}
BUDGET=${BUDGET:-7m}
MODEL=${MODEL:-zoo:resnet18}
SUBSET=${SUBSET:-0}
DATA_DIR=${DATA_DIR:-$HOME/.cache/alphac/cifar10}
WORKERS=${WORKERS:-1}

if [ ! -d "$DATA_DIR/cifar-10-batches-py" ]; then
    DATA_DIR=.bench/fmnist-as-cifar
    [ -d "$DATA_DIR/cifar-10-batches-py" ] || "$PY" bench/fmnist_as_cifar.py "$DATA_DIR"
    echo "gpu_search: real CIFAR-10 not found; using Fashion-MNIST padded to 32x32 ($DATA_DIR)"
fi
rm -rf "$OUT"
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')"
# Proxy: 2 epochs at batch 256 (the best third train 6); final: 6 epochs from scratch.
"$PY" -m alphac optimize "$MODEL" --target cifar10 --data-dir "$DATA_DIR" --device "$DEVICE" \
    --budget "$BUDGET" --epochs 2 --batch-size 256 --lr 0.2 --workers "$WORKERS" \
    --subset "$SUBSET" --out "$OUT"
"$PY" - "$OUT/report.json" <<'PYEOF'
import json, sys
report = json.load(open(sys.argv[1]))
t = report["timing"]
print(f"train images/s (median over candidates): {t['train_images_per_second_median'] or 0:,.0f}")
print(f"search {t['search_seconds']:.0f} s, final retraining {t['final_seconds']:.0f} s, "
      f"overhead {100 * (t['overhead_fraction'] or 0):.2f}% of a candidate")
seed, best = report["seed_model"], report["best"]
print(f"seed {seed['params']:,} params {100 * seed['test_accuracy']:.1f}% test -> best "
      f"{best['params']:,} params {100 * best['test_accuracy']:.1f}% test")
PYEOF
