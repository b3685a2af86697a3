#!/usr/bin/env bash
# Every benchmark in benchmarks/README.md, with the settings its results were made with
# (2 CPU cores, one thread per job). Run from the repository root:
#   OODKIT_DATA=DIR bash benchmarks/run_all.sh
# DIR holds <name>_<split>.npz arrays (benchmarks/README.md, "Data": how to make them).
# Trained models go to $MODELS (default: ./oodkit-models).
set -euo pipefail
DATA=${OODKIT_DATA:?set OODKIT_DATA to the data folder (benchmarks/README.md, Data)}
M=${MODELS:-oodkit-models}
R=benchmarks/results
export OMP_NUM_THREADS=1
mkdir -p "$M" "$R"
CDM_DETECTORS=loglik,posterior,expected-t,typicality,complexity,profile,profile-gmm,features,features-gauss,fused

# The shipped models and their export into oodkit/weights/. On a GPU (the 2026-11-26 models,
# one H200: 479 s for the two CIFAR-10 models, 185 s for Fashion-MNIST and MNIST):
#   bash benchmarks/gpu_train.sh "$DATA" benchmarks/models 479
#   bash benchmarks/gpu_train.sh "$DATA" benchmarks/models 185 fashionmnist mnist
#   python benchmarks/export_models.py --checkpoints benchmarks/models --data-root "$DATA" \
#       --names "cifar10,cifar10[0-5]" --trained-on "H200 GPU, 479 s"      (likewise fashionmnist,mnist)
#   python benchmarks/gpu_check.py --data-root "$DATA" --out benchmarks/results/gpu_check.json
# Without a GPU, the CPU recipe (long, resumable runs of 2026-11-25; see the script):
[ -f oodkit/weights/cifar10.pt ] || bash benchmarks/train_models.sh

# Single-pass detectors on the pretrained models (names resolve to oodkit/weights/)
oodkit bench fashionmnist-vs-mnist,noise,constant --model fashionmnist --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --output-dir $R/fashionmnist-vs-mnist --quiet
oodkit bench mnist-vs-fashionmnist,noise,constant --model mnist --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --output-dir $R/mnist-vs-fashionmnist --quiet
oodkit bench cifar10-vs-mnist,fashionmnist,noise,constant --model cifar10 --data-root "$DATA" \
  --detectors $CDM_DETECTORS --max-train 10000 --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10 --quiet

# Near-OOD: CIFAR-10 classes 0-5 in, 6-9 out, on the pretrained six-class model `cifar10[0-5]`
oodkit bench "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,noise,constant" --data-root "$DATA" --jpeg-ood 75 \
  --detectors $CDM_DETECTORS --max-train 10000 --max-test 2000 \
  --output-dir $R/cifar10-near --quiet

# The same split on `cifar10[0-5]` fine-tuned with a class head on the six ID labels, on a lent H200
# (2026-11-26, second session of the day; the committed half-precision EMA weights), in two stages, each
# stopped by SIGTERM at the step given here (the learning rate is constant after the warm-up, so --steps
# N ends the same run). Stage 1 shared the card with two other fine-tunes (label weight 0.1), 430 s;
# stage 2 ran alone, 200 s. To redo it on a GPU:
#   oodkit train --kind cdm --data "cifar10[0-5]" --data-root "$DATA" --net compact --hflip \
#     --init oodkit/weights/cifar10_0-5.pt --class-head --label-weight 0.5 --noise-batch 64 --batch-size 256 \
#     --lr 1e-3 --warmup 200 --ema-decay 0.999 --grad-clip 1.0 --seed 0 --steps 2381 --out "$M/exp/stage1.pt"
#   python -c "from oodkit.pretrained import export_model as e; e('$M/exp/stage1.pt', '$M/exp/stage1_half.pt')"
#   oodkit train --kind cdm --data "cifar10[0-5]" --data-root "$DATA" --net compact --hflip \
#     --init "$M/exp/stage1_half.pt" --class-head --label-weight 0.5 --noise-batch 64 --batch-size 256 \
#     --lr 5e-4 --warmup 100 --ema-decay 0.999 --grad-clip 1.0 --seed 1 --steps 2223 --out "$M/exp/stage2.pt"
#   python -c "from oodkit.pretrained import export_model as e; e('$M/exp/stage2.pt', \
#     'benchmarks/models/cifar10_0-5_labelled.pt')"
# and the GPU check on stage 1 (results/gpu_check_labelled.json):
#   PYTHONPATH=. python benchmarks/gpu_check.py --model "$M/exp/stage1_half.pt" --data "cifar10[0-5]" \
#     --data-root "$DATA" --out benchmarks/results/gpu_check_labelled.json
oodkit bench "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,noise,constant" --data-root "$DATA" --jpeg-ood 75 \
  --model benchmarks/models/cifar10_0-5_labelled.pt --detectors $CDM_DETECTORS,msp,energy --max-train 10000 \
  --max-test 2000 --output-dir $R/cifar10-near-labelled --quiet

# Near-OOD: Fashion-MNIST classes 0-4 in, 5-9 out, on the pretrained `fashionmnist[0-4]` (trained on
# classes 0-4 only, on this CPU, one thread, 2026-11-26; to redo it:)
#   oodkit train --kind cdm --data "fashionmnist[0-4]" --data-root "$DATA" --net compact --steps 1500 \
#     --batch-size 64 --lr 1e-3 --warmup 200 --ema-decay 0.999 --grad-clip 1.0 --seed 0 --save-every 100 \
#     --out "$M/exp/fashionmnist_0-4_cdm.pt"
#   python benchmarks/export_models.py --checkpoints "$M/exp" --data-root "$DATA" --names "fashionmnist[0-4]" \
#     --trained-on "CPU (this machine, one thread), ..."
oodkit bench fashionmnist-near --data-root "$DATA" --detectors $CDM_DETECTORS \
  --max-train 10000 --output-dir $R/fashionmnist-near --quiet

# The same split on `fashionmnist[0-4]` fine-tuned with a class head (this CPU, two threads, 15 minutes; to redo it:)
#   oodkit train --kind cdm --data "fashionmnist[0-4]" --data-root "$DATA" --net compact \
#     --init oodkit/weights/fashionmnist_0-4.pt --class-head --label-weight 0.5 --noise-batch 16 --batch-size 64 \
#     --lr 5e-4 --warmup 100 --ema-decay 0.998 --grad-clip 1.0 --no-amp --seed 0 --steps 1200 --save-every 200 \
#     --device cpu --out "$M/exp/fmnist_0-4_labelled_cdm.pt"
#   python -c "from oodkit.pretrained import export_model as e; e('$M/exp/fmnist_0-4_labelled_cdm.pt', \
#     'benchmarks/models/fashionmnist_0-4_labelled.pt')"
oodkit bench "fashionmnist[0-4]-vs-fashionmnist[5-9],mnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/fashionmnist_0-4_labelled.pt --detectors $CDM_DETECTORS,msp,energy --max-train 10000 \
  --output-dir $R/fashionmnist-near-labelled --quiet

# Near-OOD without labels: the rotation head (2026-12-03, this CPU, one thread). To redo the fine-tunes:
#   oodkit train --kind cdm --data "fashionmnist[0-4]" --data-root "$DATA" --net compact \
#     --init <the fashionmnist[0-4] of 2026-11-26, sha256 c1a46df4...> --rotation-head --rotation-weight 0.25 \
#     --noise-batch 16 --batch-size 32 --lr 5e-4 --warmup 100 --ema-decay 0.998 --grad-clip 1.0 --no-amp --seed 0 \
#     --steps 1000 --save-every 100 --device cpu --out "$M/exp/fm04_rot.pt"      # SIGTERM at step 701
#   oodkit train --kind cdm --data "cifar10[0-5]" --data-root "$DATA" --net compact --init oodkit/weights/cifar10_0-5.pt \
#     --rotation-head --rotation-weight 0.25 --noise-batch 16 --batch-size 32 --lr 5e-4 --warmup 100 --ema-decay 0.998 \
#     --grad-clip 1.0 --hflip --no-amp --seed 0 --steps 600 --save-every 100 --device cpu --out "$M/exp/c05_rot.pt"  # SIGTERM at 408
#   python -c "from oodkit.pretrained import export_model as e; e('$M/exp/fm04_rot.pt', 'benchmarks/models/fashionmnist_0-4_rotation.pt')"
#   (and the same for c05_rot.pt -> benchmarks/models/cifar10_0-5_rotation.pt)
# The second CIFAR-10 run (2026-12-04): the full noise batch, lr scaled to batch 32 (SIGTERM at 645, 68 min):
#   oodkit train --kind cdm --data "cifar10[0-5]" --data-root "$DATA" --net compact --init oodkit/weights/cifar10_0-5.pt \
#     --rotation-head --rotation-weight 0.25 --batch-size 32 --lr 1.25e-4 --warmup 100 --ema-decay 0.998 \
#     --grad-clip 1.0 --hflip --no-amp --seed 0 --steps 3000 --save-every 50 --device cpu --out "$M/exp/c05_rot_full.pt"
#   (exported the same way -> benchmarks/models/cifar10_0-5_rotation_full.pt)
# Its control without the head (2026-12-04, later; 645 steps, 10 min on two threads):
#   oodkit train --kind cdm --data "cifar10[0-5]" --data-root "$DATA" --net compact --init oodkit/weights/cifar10_0-5.pt \
#     --batch-size 32 --lr 1.25e-4 --warmup 100 --ema-decay 0.998 --grad-clip 1.0 --hflip --no-amp --seed 0 \
#     --steps 645 --save-every 50 --device cpu --out "$M/exp/c05_control.pt"
#   (exported the same way -> benchmarks/models/cifar10_0-5_control.pt)
# GPU recipe, not yet run: the same flags with --net small --batch-size 256 --noise-batch 64 --steps 20000 --no-amp dropped.
oodkit bench "fashionmnist[0-4]-vs-fashionmnist[5-9],mnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/fashionmnist_0-4_rotation.pt --detectors $CDM_DETECTORS,upright --max-train 10000 \
  --output-dir $R/fashionmnist-near-rotation --quiet
oodkit bench "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/cifar10_0-5_rotation.pt --detectors $CDM_DETECTORS,upright --max-train 10000 --max-test 2000 \
  --jpeg-ood 75 --output-dir $R/cifar10-near-rotation --quiet
oodkit bench "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/cifar10_0-5_rotation_full.pt --detectors $CDM_DETECTORS,upright --max-train 10000 \
  --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10-near-rotation_full --quiet
oodkit bench "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/cifar10_0-5_control.pt --detectors $CDM_DETECTORS --max-train 10000 \
  --max-test 2000 --jpeg-ood 75 --output-dir $R/cifar10-near-control --quiet
(cd benchmarks && python fusion_variants.py "fashionmnist[0-4]-vs-fashionmnist[5-9],mnist,noise,constant" \
  models/fashionmnist_0-4_rotation.pt --data-root "$DATA" --variants A,B,H,I,J --json results/fusion_variants.json)
(cd benchmarks && python fusion_variants.py "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,constant" \
  models/cifar10_0-5_rotation.pt --data-root "$DATA" --jpeg-ood 75 --max-test 2000 --variants A,H,J \
  --json results/fusion_variants.json)

# The second check split (2026-12-04): MNIST digits 0-4 against 5-9, the same fine-tune with and
# without the rotation head. To redo the models (47 and 21 minutes on one thread):
#   for h in rotation plain; do extra=(); [ $h = rotation ] && extra=(--rotation-head --rotation-weight 0.25 --noise-batch 16)
#     oodkit train --kind cdm --data "mnist[0-4]" --data-root "$DATA" --net compact --init oodkit/weights/fashionmnist.pt \
#       "${extra[@]}" --batch-size 32 --lr 5e-4 --warmup 50 --ema-decay 0.998 --grad-clip 1.0 --no-amp --seed 1 \
#       --steps 800 --save-every 100 --device cpu --out "$M/exp/mnist_0-4_$h.pt"
#     python -c "from oodkit.pretrained import export_model as e; e('$M/exp/mnist_0-4_$h.pt', 'benchmarks/models/mnist_0-4_$h.pt')"
#   done
for h in rotation plain; do
  dets=$CDM_DETECTORS; v=A,B,D; [ $h = rotation ] && { dets=$CDM_DETECTORS,upright; v=A,B,H,I,J; }
  oodkit bench "mnist[0-4]-vs-mnist[5-9],fashionmnist,noise,constant" --data-root "$DATA" \
    --model benchmarks/models/mnist_0-4_$h.pt --detectors $dets --max-train 10000 --max-test 2000 \
    --output-dir $R/mnist-near-$h --quiet
  (cd benchmarks && python fusion_variants.py "mnist[0-4]-vs-mnist[5-9],fashionmnist,noise,constant" \
    models/mnist_0-4_$h.pt --data-root "$DATA" --max-train 10000 --max-test 2000 --variants $v \
    --json results/mnist-near-$h/fusion_variants.json)
done

# The contrastive (SimCLR-style) candidate against the rotation head (2026-12-04, this CPU, one thread):
# the same fine-tunes as above with --contrastive-head (weight 0.1, temperature 0.2) in place of the rotation head.
#   oodkit train --kind cdm --data "fashionmnist[0-4]" --data-root "$DATA" --net compact \
#     --init <the fashionmnist[0-4] of 2026-11-26, sha256 c1a46df4...> --contrastive-head --noise-batch 16 --batch-size 32 \
#     --lr 5e-4 --warmup 100 --ema-decay 0.998 --grad-clip 1.0 --no-amp --seed 0 --steps 701 --save-every 50 --device cpu \
#     --out "$M/exp/fm04_simclr.pt"                                                                    # 24 min
#   oodkit train --kind cdm --data "mnist[0-4]" --data-root "$DATA" --net compact --init oodkit/weights/fashionmnist.pt \
#     --contrastive-head --noise-batch 16 --batch-size 32 --lr 5e-4 --warmup 50 --ema-decay 0.998 --grad-clip 1.0 \
#     --no-amp --seed 1 --steps 800 --save-every 100 --device cpu --out "$M/exp/mnist_0-4_simclr.pt"
#   (each exported with export_model to benchmarks/models/{fashionmnist,mnist}_0-4_simclr.pt)
oodkit bench "fashionmnist[0-4]-vs-fashionmnist[5-9],mnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/fashionmnist_0-4_simclr.pt --detectors $CDM_DETECTORS --max-train 10000 \
  --output-dir $R/fashionmnist-near-simclr --quiet
(cd benchmarks && python fusion_variants.py "fashionmnist[0-4]-vs-fashionmnist[5-9],mnist,noise,constant" \
  models/fashionmnist_0-4_simclr.pt --data-root "$DATA" --variants A,B,C,D,E \
  --json results/fashionmnist-near-simclr/fusion_variants.json)
oodkit bench "mnist[0-4]-vs-mnist[5-9],fashionmnist,noise,constant" --data-root "$DATA" \
  --model benchmarks/models/mnist_0-4_simclr.pt --detectors $CDM_DETECTORS --max-train 10000 --max-test 2000 \
  --output-dir $R/mnist-near-simclr --quiet
(cd benchmarks && python fusion_variants.py "mnist[0-4]-vs-mnist[5-9],fashionmnist,noise,constant" \
  models/mnist_0-4_simclr.pt --data-root "$DATA" --max-train 10000 --max-test 2000 --variants A,B,C,D,E \
  --json results/mnist-near-simclr/fusion_variants.json)

# Thresholds on fresh ID images (issue 20)
python benchmarks/threshold_check.py --data-root "$DATA" --n-fit 500 1500 2000 \
  --json $R/thresholds/fashionmnist_0-4_labelled.json
# ... fitted, calibrated and judged in fp32 and in bf16 (oodkit fit --precision; issue 22)
python benchmarks/threshold_check.py --data-root "$DATA" --n-fit 1500 --precision fp32 bf16 \
  --json $R/thresholds/precision.json

# Which block's pooled output the feature scores read, and which fusion (every variant fitted on ID only)
python benchmarks/feature_layers.py cifar10-vs-fashionmnist,mnist,constant,noise cifar10 --data-root "$DATA" --jpeg-ood 75 --max-test 2000 --json $R/feature_layers.json
python benchmarks/feature_layers.py fashionmnist-vs-mnist,noise,constant fashionmnist --data-root "$DATA" --json $R/feature_layers.json
python benchmarks/feature_layers.py mnist-vs-fashionmnist,noise,constant mnist --data-root "$DATA" --json $R/feature_layers.json
python benchmarks/feature_layers.py "cifar10[0-5]-vs-cifar10[6-9]" "cifar10[0-5]" --data-root "$DATA" --max-test 2000 --json $R/feature_layers.json
python benchmarks/feature_layers.py "fashionmnist[0-4]-vs-fashionmnist[5-9]" "fashionmnist[0-4]" --data-root "$DATA" --json $R/feature_layers.json
python benchmarks/fusion_variants.py cifar10-vs-fashionmnist,mnist,constant cifar10 --data-root "$DATA" --jpeg-ood 75 --max-test 2000 --json $R/fusion_variants.json
python benchmarks/fusion_variants.py fashionmnist-vs-mnist,noise,constant fashionmnist --data-root "$DATA" --json $R/fusion_variants.json
python benchmarks/fusion_variants.py mnist-vs-fashionmnist,noise,constant mnist --data-root "$DATA" --variants A,B,E --json $R/fusion_variants.json
python benchmarks/fusion_variants.py "cifar10[0-5]-vs-cifar10[6-9]" "cifar10[0-5]" --data-root "$DATA" --max-test 2000 --variants A,B,E --json $R/fusion_variants.json
python benchmarks/fusion_variants.py "fashionmnist[0-4]-vs-fashionmnist[5-9]" "fashionmnist[0-4]" --data-root "$DATA" --variants A,B,E --json $R/fusion_variants.json
python benchmarks/fusion_variants.py "fashionmnist[0-4]-vs-fashionmnist[5-9],mnist,noise,constant" benchmarks/models/fashionmnist_0-4_labelled.pt --data-root "$DATA" --variants A,B,F,G --json $R/fusion_variants.json
python benchmarks/fusion_variants.py "cifar10[0-5]-vs-cifar10[6-9],mnist,fashionmnist,constant" benchmarks/models/cifar10_0-5_labelled.pt --data-root "$DATA" --jpeg-ood 75 --max-test 2000 --json $R/fusion_variants.json

# Baselines with the corrected runner: a DDPM on the same UNet and data (300 images per set:
# the 50-term ELBO and 64-point ITD cost 50-64 passes per image)
[ -f "$M/fashionmnist_ddpm.pt" ] || oodkit train --kind ddpm --data fashionmnist --data-root "$DATA" --net compact \
  --steps 300 --batch-size 48 --lr 1e-3 --warmup 100 --save-every 100 --out "$M/fashionmnist_ddpm.pt" --quiet
oodkit bench fashionmnist-vs-mnist,noise --model "fashionmnist,$M/fashionmnist_ddpm.pt" --data-root "$DATA" \
  --detectors loglik,complexity,profile,fused,elbo-k,itd,recon --max-train 300 --max-test 300 \
  --output-dir $R/fashionmnist-vs-mnist-baselines --quiet
[ -f "$M/mnist_ddpm.pt" ] || oodkit train --kind ddpm --data mnist --data-root "$DATA" --net compact \
  --steps 300 --batch-size 48 --lr 1e-3 --warmup 100 --save-every 100 --out "$M/mnist_ddpm.pt" --quiet
oodkit bench mnist-vs-fashionmnist,noise --model "mnist,$M/mnist_ddpm.pt" --data-root "$DATA" \
  --detectors loglik,complexity,profile,fused,elbo-k,itd,recon --max-train 300 --max-test 300 \
  --output-dir $R/mnist-vs-fashionmnist-baselines --quiet
[ -f "$M/cifar10_ddpm.pt" ] || oodkit train --kind ddpm --data cifar10 --data-root "$DATA" --net compact --hflip \
  --steps 300 --batch-size 48 --lr 1e-3 --warmup 100 --save-every 100 --out "$M/cifar10_ddpm.pt" --quiet
oodkit bench cifar10-vs-mnist,fashionmnist --model "cifar10,$M/cifar10_ddpm.pt" --data-root "$DATA" --jpeg-ood 75 \
  --detectors loglik,complexity,profile,fused,elbo-k,itd,recon --max-train 300 --max-test 300 \
  --output-dir $R/cifar10-baselines --quiet

python benchmarks/nll_toy.py --steps 1500 --net tiny --batch 32 --cases gaussian --out $R/nll_toy.json
# on a CPU with AVX-512 BF16 / AMX (bf16 native); no-native-bf16.txt is the run of a CPU without it
OMP_NUM_THREADS=1 python benchmarks/train_step_cost.py --net compact --size 32 --batch 32 --repeats 5 --no-compile \
  > $R/train_step_cost/avx512-bf16-1-thread.txt
OMP_NUM_THREADS=2 python benchmarks/train_step_cost.py --net compact --size 32 --batch 32 --repeats 5 --threads 2 \
  --no-compile > $R/train_step_cost/avx512-bf16-2-threads.txt
python benchmarks/scoring_cost.py --net compact --size 32 --batch 16 --T 1000 --k 20 --points 16 --repeats 3 \
  --exact-levels 50 > $R/scoring_cost.md
python benchmarks/summary.py > $R/summary.md

# the detectors shipped with each pretrained model, what they cost a new user, and how fitting grows
python benchmarks/export_detectors.py --data-root "$DATA"
python benchmarks/bundled_cost.py --data-root "$DATA" --model fashionmnist --ood mnist --out $R/bundled
python benchmarks/fit_scaling.py --n 10000 50000 200000 500000 --exact-n 200000 --out $R/fit_scaling
python benchmarks/knn_bank.py --data-root "$DATA" --out $R/knn_bank
python benchmarks/precision_check.py --data-root "$DATA" --n 1000 --out $R/precision
# the detection pass in each arithmetic and layout (on a lent GPU gpu_session.sh runs it with --device cuda)
OMP_NUM_THREADS=2 python benchmarks/gpu_throughput.py --device cpu --data-root "$DATA" --n 512 --batch-sizes 256 \
  --repeats 3 --out $R/throughput/cpu
