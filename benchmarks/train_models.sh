#!/usr/bin/env bash
# The shipped CDMs and their export into oodkit/weights/. Run from the repository root:
#   OODKIT_DATA=DIR M=MODELS_DIR bash benchmarks/train_models.sh
# In the session of 2026-11-25 they were trained in resumable chunks, round-robin, one
# thread each (cifar10 400 -> 800 -> 1200, fashionmnist 300 -> 700, mnist 200), with the
# same settings; resuming is bit-for-bit and the learning rate is constant after warm-up,
# so one run per model to the same step gives the same weights. To continue training,
# raise --steps and add --resume (benchmarks/models/ holds resumable checkpoints).
set -euo pipefail
DATA=${OODKIT_DATA:?set OODKIT_DATA to the data folder (benchmarks/README.md, Data)}
M=${M:-oodkit-models}
export OMP_NUM_THREADS=1
mkdir -p "$M"
train() {  # name steps [extra...]
  local name=$1 steps=$2; shift 2
  oodkit train --kind cdm --data "$name" --data-root "$DATA" --net compact --steps "$steps" --batch-size 48 \
    --lr 1e-3 --warmup 100 --save-every 100 --out "$M/${name}_cdm.pt" --quiet "$@"
}
[ -f "$M/cifar10_cdm.pt" ] || train cifar10 1200 --hflip
[ -f "$M/fashionmnist_cdm.pt" ] || train fashionmnist 700
[ -f "$M/mnist_cdm.pt" ] || train mnist 200
python benchmarks/export_models.py --checkpoints "$M" --data-root "$DATA"
