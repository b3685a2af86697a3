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

# Fashion-MNIST: the committed model is the step-754 checkpoint (saved on SIGTERM) of a run started
# for 1500 steps; the learning rate is constant after warm-up, so a 754-step run gives the same weights
train cdm fashionmnist 754 "$M/fashionmnist_cdm.pt"
oodkit bench fashionmnist-vs-mnist,noise,constant --model "$M/fashionmnist_cdm.pt" --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --output-dir $R/fashionmnist-vs-mnist --quiet

train cdm mnist 400 "$M/mnist_cdm.pt"
oodkit bench mnist-vs-fashionmnist,noise,constant --model "$M/mnist_cdm.pt" --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --output-dir $R/mnist-vs-fashionmnist --quiet

train cdm cifar10 400 "$M/cifar10_cdm.pt" --hflip
oodkit bench cifar10-vs-mnist,fashionmnist,noise --model "$M/cifar10_cdm.pt" --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10 --quiet

# Baselines: DDPM and joint models on the same UNet and data; 300 images per set (50-64 passes each)
BASELINE_DETECTORS=loglik,complexity,profile,elbo-k,itd,recon,msp,energy
train ddpm fashionmnist 300 "$M/fashionmnist_ddpm.pt"
train joint fashionmnist 300 "$M/fashionmnist_joint.pt"
oodkit bench fashionmnist-vs-mnist,noise --model "$M/fashionmnist_cdm.pt,$M/fashionmnist_ddpm.pt,$M/fashionmnist_joint.pt" \
  --data-root "$DATA" --detectors $BASELINE_DETECTORS --max-train 300 --max-test 300 \
  --output-dir $R/fashionmnist-vs-mnist-baselines --quiet

train ddpm mnist 300 "$M/mnist_ddpm.pt"
train joint mnist 300 "$M/mnist_joint.pt"
oodkit bench mnist-vs-fashionmnist,noise --model "$M/mnist_cdm.pt,$M/mnist_ddpm.pt,$M/mnist_joint.pt" \
  --data-root "$DATA" --detectors $BASELINE_DETECTORS --max-train 300 --max-test 300 \
  --output-dir $R/mnist-vs-fashionmnist-baselines --quiet

train ddpm cifar10 300 "$M/cifar10_ddpm.pt" --hflip
train joint cifar10 300 "$M/cifar10_joint.pt" --hflip
oodkit bench cifar10-vs-mnist,fashionmnist,noise --model "$M/cifar10_cdm.pt,$M/cifar10_ddpm.pt,$M/cifar10_joint.pt" \
  --data-root "$DATA" --detectors $BASELINE_DETECTORS --max-train 300 --max-test 300 --jpeg-ood 75 \
  --output-dir $R/cifar10-baselines --quiet

# the CIFAR-10 DDPM at the CDM's step count: does more training close the gap?
train ddpm cifar10 400 "$M/cifar10_ddpm400.pt" --hflip
oodkit bench cifar10-vs-mnist,fashionmnist --model "$M/cifar10_ddpm400.pt" --data-root "$DATA" \
  --detectors elbo-k,itd --max-train 300 --max-test 300 --jpeg-ood 75 --output-dir $R/cifar10-ddpm-400-steps --quiet

python benchmarks/nll_toy.py --steps 200 --net tiny --batch 32 --out $R/nll_toy.json
python benchmarks/cdl_toy.py --steps 1500 --cdl-weight 0.1 --out $R/cdl_toy.json | tee $R/cdl_toy.md
python benchmarks/train_step_cost.py --net compact --size 32 --batch 32 --repeats 5 | tee $R/train_step_cost.txt
python benchmarks/scoring_cost.py --net compact --size 32 --batch 16 --T 1000 | tee $R/scoring_cost.md
