#!/usr/bin/env bash
# Train CDMs on one GPU for a fixed wall-clock time, one process per data set sharing
# the card: by default all ten CIFAR-10 classes (the shipped `cifar10`) and classes 0-5
# (the ID side of the cifar10-near suite).
#
#   bash benchmarks/gpu_train.sh DATA_ROOT OUT_DIR SECONDS [DATA_SET ...]
#
# Each run is killed with SIGTERM after SECONDS and saves on the way out (and every
# 500 steps) to OUT_DIR/<stem>_cdm.pt (cifar10[0-5] -> cifar10_0-5); continue one with
# the same flags plus --resume. CIFAR-10 sets train with horizontal flips. The steps
# reached are in the checkpoint and in OUT_DIR/train_<stem>.log. The 2026-11-26 runs
# (H200) are described in benchmarks/README.md.
set -u
DATA=$1 OUT=$2 SECS=${3:-420}
shift 3 2>/dev/null || shift $#
SETS=("$@")
[ ${#SETS[@]} -gt 0 ] || SETS=(cifar10 "cifar10[0-5]")
DEVICE=${DEVICE:-cuda}
common=(--kind cdm --net compact --batch-size 256 --lr 1e-3 --warmup 200 --ema-decay 0.999 --grad-clip 1.0
        --seed 0 --steps 200000 --save-every 500 --device "$DEVICE" --data-root "$DATA")
for name in "${SETS[@]}"; do
    stem=$(echo "$name" | sed 's/\[/_/; s/\]//; s/+/-/g')
    flip=(); case $name in cifar10*) flip=(--hflip);; esac
    timeout -s TERM "$SECS" python3 -m oodkit train "${common[@]}" "${flip[@]}" --data "$name" \
        --out "$OUT/${stem}_cdm.pt" >"$OUT/train_${stem}.log" 2>&1 &
done
wait
