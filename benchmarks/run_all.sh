#!/usr/bin/env bash
# Every benchmark in benchmarks/README.md, with the settings its results were made with
# (2 CPU cores). Run from the repository root:
#   python ../shared/data/materialize.py /work/data && DATA=/work/data bash benchmarks/run_all.sh
set -euo pipefail
DATA=${DATA:-/work/data}
M=${MODELS:-/tmp/oodkit-models}
R=benchmarks/results
mkdir -p "$M" "$R"
CDM_DETECTORS=loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm
train() {  # kind data steps out [extra...]
  local kind=$1 data=$2 steps=$3 out=$4; shift 4
  [ -f "$out" ] || oodkit train --model "$kind" --data "$data" --data-root "$DATA" --net compact --steps "$steps" \
    --batch-size 48 --lr 1e-3 --warmup 100 --save-every 250 --out "$out" --quiet "$@"
}

# Fashion-MNIST: the committed model is the step-750 checkpoint of a 1500-step run
train cdm fashionmnist 750 "$M/fashionmnist_cdm.pt"
oodkit bench fashionmnist-vs-mnist,noise,constant --model "$M/fashionmnist_cdm.pt" --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --output-dir $R/fashionmnist-vs-mnist --quiet

train cdm mnist 400 "$M/mnist_cdm.pt"
oodkit bench mnist-vs-fashionmnist,noise,constant --model "$M/mnist_cdm.pt" --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --output-dir $R/mnist-vs-fashionmnist --quiet

train cdm cifar10 400 "$M/cifar10_cdm.pt" --hflip
oodkit bench cifar10-vs-mnist,fashionmnist,noise --model "$M/cifar10_cdm.pt" --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10 --quiet

train ddpm fashionmnist 300 "$M/fashionmnist_ddpm.pt"
oodkit bench fashionmnist-vs-mnist,noise --model "$M/fashionmnist_cdm.pt,$M/fashionmnist_ddpm.pt" \
  --data-root "$DATA" --detectors loglik,complexity,profile,elbo-k,itd,recon --max-train 300 --max-test 300 \
  --output-dir $R/fashionmnist-vs-mnist-baselines --quiet

python benchmarks/nll_toy.py --steps 200 --net tiny --batch 32 --out $R/nll_toy.json
python benchmarks/train_step_cost.py --net compact --size 32 --batch 32 --repeats 5 | tee $R/train_step_cost.txt
python benchmarks/scoring_cost.py --net compact --size 32 --batch 16 --T 1000 | tee $R/scoring_cost.md
