#!/usr/bin/env bash
. /work/venv/bin/activate
cd /work/main
M=/work/models; D=/work/data; R=benchmarks/results
log() { echo "[$(date +%H:%M:%S)] $*" >> $M/queue.log; }
while kill -0 6030 2>/dev/null; do sleep 10; done
log "mnist trained"
oodkit bench mnist-vs-fashionmnist,noise,constant --model $M/mnist_compact.pt --data-root $D \
  --detectors loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm --max-train 10000 \
  --output-dir $R/mnist-vs-fashionmnist --quiet > $M/bench_mnist.log 2>&1
log "mnist bench done"
python benchmarks/nll_toy.py --steps 200 --net tiny --batch 32 --out $R/nll_toy.json > $M/nll_toy.log 2>&1
log "nll toy done"
oodkit train --model cdm --data cifar10 --data-root $D --net compact --steps 400 --batch-size 48 --lr 1e-3 \
  --warmup 100 --save-every 200 --hflip --out $M/cifar10_compact.pt --quiet > $M/cifar10.log 2>&1
oodkit bench cifar10-vs-mnist,fashionmnist,noise --model $M/cifar10_compact.pt --data-root $D \
  --detectors loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm --max-train 10000 \
  --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10 --quiet > $M/bench_cifar.log 2>&1
log "cifar done"
oodkit train --model ddpm --data fashionmnist --data-root $D --net compact --steps 300 --batch-size 48 --lr 1e-3 \
  --warmup 100 --save-every 200 --out $M/fashionmnist_ddpm.pt --quiet > $M/ddpm.log 2>&1
oodkit bench fashionmnist-vs-mnist,noise --model $M/fashionmnist_compact.pt,$M/fashionmnist_ddpm.pt --data-root $D \
  --detectors loglik,complexity,profile,elbo-k,itd,recon --max-train 300 --max-test 300 \
  --output-dir $R/fashionmnist-vs-mnist-baselines --quiet > $M/bench_baselines.log 2>&1
log "baselines done"
