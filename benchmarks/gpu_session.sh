#!/usr/bin/env bash
# Issues 19 and 22 on a lent GPU, in one device call (at most 600 s).
# First, while the card is otherwise idle (issue 22: timings that want the card alone):
#   gpu_throughput.py  every shipped model's pass in fp32 / TF32 / bf16, row-major and
#                      channels-last, batch 256 and 1024, a CUDA graph of the fastest, and
#                      oodkit's own pass from host memory; bits/dim drift and ranks against fp32
#   precision_check.py the fused AUROC and the shipped threshold in each arithmetic, for the
#                      models whose detectors travel (cifar10, cifar10[0-5], digits-0to4)
# Then issue 19: four CDMs of cifar10[0-5] train side by side for SECS seconds each (the
# compact net leaves most of the card idle at batch 256):
#   finetune  the rotation head chosen on Fashion-MNIST (weight 0.25), from the shipped
#             cifar10[0-5]; the noise-level loss sees every image of each batch (chosen on MNIST)
#   control   the same fine-tune without the head (what the head changes, bits/dim included)
#   simclr    the same fine-tune with the contrastive projection (NT-Xent) in place of the
#             rotation head: the large-batch comparison the CPU could not make (measured,
#             not chosen: CIFAR-10 is the check split)
#   small     the larger `small` net from scratch with the rotation head
# Each is exported as shipped, its test bits/dim measured and the near / far / synthetic suite
# benched, the four at once. Last, if time is left, the kNN bank's exact search on the GPU
# against scikit-learn on one CPU thread.
# Here, first:  python benchmarks/device_pack.py pack --source ../shared/data
#               git commit ...; python benchmarks/device_pack.py slim
# Then:         run(command="bash benchmarks/gpu_session.sh 230", carry=["devpack"], timeout_s=600)
# After:        python benchmarks/device_pack.py unslim; python benchmarks/gpu_throughput.py --replot --out DIR
# What comes back in $OUT: throughput.{md,json}, precision.json, log.txt (training logs,
# tables, bits/dim) and, per model, NAME.tgz (the model as shipped, EMA in half precision,
# its score log and its bench results.json). Stages that would run past BUDGET seconds (default 540) are skipped.
# A dry run on a CPU (needs devpack/):
#   DEVICE=cpu BATCH=8 MAX_TRAIN=300 MAX_TEST=100 N_THR=256 OUT=/tmp/dry bash benchmarks/gpu_session.sh 30
set -uo pipefail
SECS=${1:-230}
BUDGET=${BUDGET:-540}
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
OUT=$(mkdir -p "${OUT:-gpu-session-out}" && cd "${OUT:-gpu-session-out}" && pwd)
DEVICE=${DEVICE:-cuda}
MAX_TRAIN=${MAX_TRAIN:-10000}
MAX_TEST=${MAX_TEST:-2000}
BATCH=${BATCH:-256}
N_THR=${N_THR:-4096}
WORK=${WORK:-/tmp/oodkit-gpu}
D=$WORK/data
mkdir -p "$D" "$WORK/models" "$WORK/ship"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 OODKIT_CACHE=$WORK/cache
PY=${PY:-python3}
log() { echo "$@" | tee -a "$OUT/log.txt"; }

log "== $(date -u +%FT%TZ) $DEVICE, $SECS s per run, git $(git rev-parse --short HEAD 2>/dev/null)"
[ "$DEVICE" = cpu ] || nvidia-smi --query-gpu=name,memory.total --format=csv,noheader >>"$OUT/log.txt" 2>&1
$PY benchmarks/device_pack.py unpack devpack "$D" >>"$OUT/log.txt" 2>&1 || { log "unpack failed"; exit 1; }
log "== unpacked $(date -u +%T)"

# issue 22, the card alone
graph=(); [ "$DEVICE" = cpu ] || graph=(--graph)
timeout -s TERM 100 $PY benchmarks/gpu_throughput.py --data-root "$D" --device "$DEVICE" --n "$N_THR" \
    --names "cifar10,fashionmnist,digits-0to4,cifar10[0-5],mnist,fashionmnist[0-4]" \
    --batch-sizes 256,1024 "${graph[@]}" --out "$WORK/throughput" >"$WORK/throughput.log" 2>&1
tail -n 4 "$WORK/throughput.log" >>"$OUT/log.txt"; cp "$WORK"/throughput/throughput.{md,json} "$OUT/" 2>/dev/null  # the plot: --replot here
log "== throughput $(date -u +%T)"
timeout -s TERM 60 $PY benchmarks/precision_check.py --data-root "$D" --device "$DEVICE" --n "$MAX_TEST" \
    --names "digits-0to4,cifar10[0-5],cifar10" --out "$WORK/precision" >"$WORK/precision.log" 2>&1
tail -n 12 "$WORK/precision.log" >>"$OUT/log.txt"; cp "$WORK/precision/precision.json" "$OUT/" 2>/dev/null
log "== precision $(date -u +%T)"

# issue 19: four runs share the card
base=(--kind cdm --data "cifar10[0-5]" --data-root "$D" --hflip --batch-size "$BATCH" --warmup 100 --ema-decay 0.999
      --grad-clip 1.0 --seed 1 --steps 1000000 --save-every 500 --device "$DEVICE" --quiet --overwrite)
tune=(--net compact --init devpack/cifar10_0-5.pt --lr 5e-4)
rot=(--rotation-head --rotation-weight 0.25)
train() {
    local m=$1; shift
    timeout -s TERM "$SECS" $PY -m oodkit train "${base[@]}" "$@" --out "$WORK/models/$m.pt" >"$WORK/train_$m.log" 2>&1 &
}
train finetune "${tune[@]}" "${rot[@]}"
train control "${tune[@]}"
train simclr "${tune[@]}" --contrastive-head
train small --net small --lr 1e-3 "${rot[@]}"
wait
for m in finetune control simclr small; do { echo "-- train_$m.log"; tail -n 4 "$WORK/train_$m.log"; } >>"$OUT/log.txt"; done
log "== trained $(date -u +%T)"

score() {  # export as shipped, test bits/dim, then the suite
    local m=$1 dets=loglik,profile,features,features-gauss,fused
    case $m in finetune|small) dets=$dets,upright;; esac
    mkdir -p "$WORK/ship/$m"
    local limit=$(( $(left) - 10 ))  # the stage ends inside the budget, bench or not
    timeout -s TERM "$limit" $PY benchmarks/device_pack.py ship "$WORK/models/$m.pt" "$WORK/ship/$m/$m.pt" "$D" "$DEVICE" >"$WORK/score_$m.log" 2>&1 &&
    cp "$WORK/score_$m.log" "$WORK/ship/$m/" && tar czf "$OUT/$m.tgz" -C "$WORK/ship/$m" . &&  # back even if the bench is cut
    OMP_NUM_THREADS=4 timeout -s TERM "$(( $(left) - 10 ))" $PY -m oodkit bench "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,noise,constant" \
        --model "$WORK/ship/$m/$m.pt" --data-root "$D" --detectors $dets --jpeg-ood 75 --max-train "$MAX_TRAIN" \
        --max-test "$MAX_TEST" --device "$DEVICE" --output-dir "$WORK/bench_$m" --quiet >>"$WORK/score_$m.log" 2>&1 &&
    cp "$WORK/bench_$m/results.json" "$WORK/ship/$m/${m}_results.json"
    cp "$WORK/score_$m.log" "$WORK/ship/$m/"; tar czf "$OUT/$m.tgz" -C "$WORK/ship/$m" .
}
for m in finetune control simclr small; do
    [ -f "$WORK/models/$m.pt" ] || { log "$m: no checkpoint (see train_$m.log above)"; continue; }
    [ "$(left)" -gt 45 ] || { log "$m: not scored, $(left) s of the budget left"; continue; }
    score $m &
done
wait
for m in finetune control simclr small; do cat "$WORK/score_$m.log" >>"$OUT/log.txt" 2>/dev/null; done
log "== scored $(date -u +%T)"

# issue 22, if time is left: the kNN bank's exact search in torch blocks on the GPU against
# scikit-learn's on one CPU thread, n = 50,000 synthetic features
for dev in "" cuda; do
    [ "$DEVICE" = cpu ] && [ -n "$dev" ] && continue
    [ "$(left)" -gt 40 ] || { log "kNN timing skipped, $(left) s of the budget left"; break; }
    OMP_NUM_THREADS=1 timeout -s TERM 35 $PY benchmarks/fit_scaling.py --n 50000 --exact-n --scorers features \
        ${dev:+--search-device $dev} --out "$WORK/fit_scaling_${dev:-sklearn}" >>"$OUT/log.txt" 2>&1
done
log "== done $(date -u +%T)"
