#!/usr/bin/env bash
. /work/venv/bin/activate
cd /work/main
M=/work/models; D=/work/data; R=benchmarks/results
log() { echo "[$(date +%H:%M:%S)] $*" >> $M/queue.log; }
# 1. stop FMNIST training at its step-750 checkpoint
until python -c "
import sys, torch; c = torch.load('$M/fashionmnist_compact.pt', weights_only=True); sys.exit(0 if c['train_state']['step'] >= 750 else 1)" 2>/dev/null; do sleep 15; done
pkill -f "oodkit train --model cdm --data fashionmnist"; sleep 3
log "fmnist stopped at 750"
# 2. FMNIST -> MNIST with every CDM detector
oodkit bench fashionmnist-vs-mnist,noise,constant --model $M/fashionmnist_compact.pt --data-root $D \
  --detectors loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm --max-train 10000 \
  --output-dir $R/fashionmnist-vs-mnist --quiet > $M/bench_fmnist.log 2>&1
log "fmnist bench done"
# 3. cost ratios
python benchmarks/train_step_cost.py --net compact --size 32 --batch 32 --repeats 5 > $R/train_step_cost.txt 2>&1
python benchmarks/scoring_cost.py --net compact --size 32 --batch 16 --T 1000 > $R/scoring_cost.md 2>&1
log "costs done"
# 4. MNIST model and MNIST -> FMNIST
oodkit train --model cdm --data mnist --data-root $D --net compact --steps 400 --batch-size 48 --lr 1e-3 \
  --warmup 100 --save-every 200 --out $M/mnist_compact.pt --quiet > $M/mnist.log 2>&1
oodkit bench mnist-vs-fashionmnist,noise,constant --model $M/mnist_compact.pt --data-root $D \
  --detectors loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm --max-train 10000 \
  --output-dir $R/mnist-vs-fashionmnist --quiet > $M/bench_mnist.log 2>&1
log "mnist done"
# 5. DDPM baseline on FMNIST and the same pair, side by side with the CDM scores
oodkit train --model ddpm --data fashionmnist --data-root $D --net compact --steps 400 --batch-size 48 --lr 1e-3 \
  --warmup 100 --save-every 200 --out $M/fashionmnist_ddpm.pt --quiet > $M/ddpm.log 2>&1
oodkit bench fashionmnist-vs-mnist,noise --model $M/fashionmnist_compact.pt,$M/fashionmnist_ddpm.pt --data-root $D \
  --detectors loglik,profile,elbo-k,itd,recon --max-train 2000 --max-test 500 \
  --output-dir $R/fashionmnist-vs-mnist-baselines --quiet > $M/bench_baselines.log 2>&1
log "baselines done"
# 6. appendix D toy likelihoods
python benchmarks/nll_toy.py --steps 300 --net tiny --batch 32 --out $R/nll_toy.json > $M/nll_toy.log 2>&1
log "nll toy done"
# 7. CIFAR-10 model and CIFAR-10 -> MNIST, Fashion-MNIST, noise (JPEG round trip on the OOD side)
oodkit train --model cdm --data cifar10 --data-root $D --net compact --steps 600 --batch-size 48 --lr 1e-3 \
  --warmup 100 --save-every 200 --hflip --out $M/cifar10_compact.pt --quiet > $M/cifar10.log 2>&1
oodkit bench cifar10-vs-mnist,fashionmnist,noise --model $M/cifar10_compact.pt --data-root $D \
  --detectors loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm --max-train 10000 \
  --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10 --quiet > $M/bench_cifar.log 2>&1
log "cifar done"
