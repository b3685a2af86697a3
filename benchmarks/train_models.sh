#!/usr/bin/env bash
# The shipped CDMs: long CPU runs in resumable chunks, round-robin over the data sets, one
# thread each (the machine has two cores and other work). Resuming is bit-for-bit and the
# learning rate is constant after warm-up, so the chunking does not change the weights:
# one `--steps N` run gives the same model. Run from the repository root:
#   DATA=/work/data M=/work/models bash benchmarks/train_models.sh
# Session of 2026-11-25: round 1 trained cifar10 to 400, fashionmnist to 300, mnist to 200;
# later rounds added 400 steps each to cifar10 and fashionmnist (see the export log for the
# final step counts, recorded in oodkit/weights/index.json).
set -euo pipefail
DATA=${DATA:-/work/data}
M=${M:-/work/models}
export OMP_NUM_THREADS=1
mkdir -p "$M"
chunk() {  # name target-steps [extra...]
  local name=$1 steps=$2; shift 2
  local resume=""; [ -f "$M/${name}_cdm.pt" ] && resume="--resume"
  oodkit train --kind cdm --data "$name" --data-root "$DATA" --net compact --steps "$steps" --batch-size 48 \
    --lr 1e-3 --warmup 100 --save-every 100 --out "$M/${name}_cdm.pt" --quiet $resume "$@"
}
chunk cifar10 400 --hflip; chunk fashionmnist 300; chunk mnist 200
for r in $(seq 1 ${ROUNDS:-10}); do
  chunk cifar10 $((400 + 400 * r)) --hflip
  chunk fashionmnist $((300 + 400 * r))
done
python benchmarks/export_models.py --checkpoints "$M" --data-root "$DATA" --train-log "$M/train.log"
