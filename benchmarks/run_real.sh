#!/usr/bin/env bash
# The real-data benchmarks committed in benchmarks/results/, as they were run (2 CPU cores).
# DATA: arrays written by `python ../shared/data/materialize.py DATA`; MODELS: checkpoints.
set -euo pipefail
DATA=${DATA:-/tmp/oodkit-data}
MODELS=${MODELS:-/tmp/oodkit-models}
OUT=${OUT:-benchmarks/results}
mkdir -p "$MODELS" "$OUT"

train() {  # name steps [extra...]
  local name=$1 steps=$2; shift 2
  [ -f "$MODELS/${name}_cdm.pt" ] || oodkit train --model cdm --data "$name" --data-root "$DATA" --net compact \
    --steps "$steps" --batch-size 48 --lr 1e-3 --warmup 100 --save-every 250 --out "$MODELS/${name}_cdm.pt" "$@"
}

train fashionmnist 750
oodkit bench fashionmnist-vs-mnist,noise,constant --model "$MODELS/fashionmnist_cdm.pt" --data-root "$DATA" \
  --detectors loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm \
  --max-train 10000 --output-dir "$OUT/fashionmnist-vs-mnist"
