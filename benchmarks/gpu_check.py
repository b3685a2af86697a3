"""GPU correctness and throughput for a trained CDM, side by side with the CPU of the
same machine (run on a machine with CUDA; prints a table and writes JSON).

    python benchmarks/gpu_check.py --model cifar10 --data-root DATA --out gpu_check.json

Checks: bits/dim and the default (fused) detector's scores on CUDA against the CPU:
through oodkit (full fp32), and the model's own pass with TF32 off and on; for a model
with a class head, its logits too; images/s of the one forward pass on each device; a CDM
training step's time in float32 and bf16 on CUDA (with the class loss on labels for a
model with a class head: --data must then carry labels inside the head's classes).
The JSON records the model (reference and SHA-256), the data and the git commit.
"""
import argparse
import json
import time

import numpy as np
import torch

import oodkit
from oodkit.bench import _git_commit
from oodkit.models import has_class_head
from oodkit.data import to_float
from oodkit.representation import clear_cache, represent, tf32
from oodkit.training import _Objective


def _rate(fn, n_images, repeats=3):
    fn()  # warm-up: kernels, allocator, cuDNN plans
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return n_images / float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="cifar10")
    ap.add_argument("--data", default="cifar10")
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--device", default="cuda", help="the accelerator to compare with the CPU")
    ap.add_argument("--n-fit", type=int, default=2000, help="training images the detectors are fitted on")
    ap.add_argument("--n-forward", type=int, default=4096, help="images timed on the accelerator (a quarter on the CPU)")
    args = ap.parse_args()
    dev_name = args.device
    out = {"gpu": torch.cuda.get_device_name(0) if dev_name.startswith("cuda") else dev_name, "torch": torch.__version__, "cpu_threads": torch.get_num_threads()}

    data = oodkit.load_dataset(args.data, split="train", root=args.data_root)
    train = data.tensor()
    out.update(model=args.model, data=args.data, git_commit=_git_commit())
    fit, test = train[:args.n_fit], train[args.n_fit:args.n_fit + 500]
    # a shifted copy as OOD: the check is agreement between devices, not the AUROC itself
    ood = test.flip(-2)
    cpu_model = oodkit.load_model(args.model, device="cpu")
    gpu_model = oodkit.load_model(args.model, device=dev_name)
    out["model_sha256"] = getattr(gpu_model, "checkpoint_sha256", None)
    labels = None
    if has_class_head(gpu_model):  # its training step needs labels the head knows
        if data.labels is None or not (0 <= data.labels[:256].min() and data.labels[:256].max() < gpu_model.num_labels):
            raise SystemExit(f"--data {args.data}: the model's class head has {gpu_model.num_labels} classes; "
                             "give a data set with labels among them (e.g. the one it was trained on)")
        labels = torch.as_tensor(data.labels)

    def rep(model):
        clear_cache()
        return represent(model, test, batch_size=250, progress=False)  # full fp32 (full_fp32)

    @torch.no_grad()
    def bpd_as_set(model, enabled):
        # the model's own pass under the given TF32 setting, outside oodkit's full_fp32
        with tf32(enabled):
            x = to_float(test).to(dev_name)
            return torch.cat([model.bpd(xb) for xb in x.split(250)]).double().cpu().numpy()

    cpu_rep, gpu_rep = rep(cpu_model), rep(gpu_model)
    ref = cpu_rep.bpd
    out["bpd_max_abs_diff_oodkit"] = float(np.max(np.abs(gpu_rep.bpd - ref)))
    if cpu_rep.class_logits is not None:  # a model with a class head: its logits come from the same pass
        diff = (gpu_rep.class_logits - cpu_rep.class_logits).abs().max()
        out["class_logits_max_abs_diff_oodkit"] = float(diff)
    for on in (False, True):
        out[f"bpd_max_abs_diff_tf32_{on}"] = float(np.max(np.abs(bpd_as_set(gpu_model, on) - ref)))
    out["bpd_mean_cpu"] = float(ref.mean())

    scores = {}
    for dev, model in (("cpu", cpu_model), ("cuda", gpu_model)):  # "cuda": the --device
        clear_cache()
        det = oodkit.CDMDetector(model, score="fused", progress=False).fit(fit)
        s_id, s_ood = det.score_samples(test), det.score_samples(ood)
        scores[dev] = np.concatenate([s_id, s_ood])
        out[f"fused_auroc_{dev}"] = float(oodkit.auroc(s_id, s_ood))
    out["fused_max_abs_diff"] = float(np.max(np.abs(scores["cuda"] - scores["cpu"])))
    out["fused_rank_agreement"] = float(np.mean(np.argsort(scores["cuda"]) == np.argsort(scores["cpu"])))

    # throughput of the one forward pass, same images, same machine
    many = train[:args.n_forward]
    for dev, model, n in (("cpu", cpu_model, args.n_forward // 4), ("cuda", gpu_model, args.n_forward)):
        def run(model=model, n=n):
            clear_cache()
            represent(model, many[:n], batch_size=512, progress=False)
        out[f"forward_img_s_{dev}"] = _rate(run, n)
    out["forward_speedup_cuda_over_cpu"] = out["forward_img_s_cuda"] / out["forward_img_s_cpu"]

    # one CDM training step (loss with the double backprop) at batch 256
    net = gpu_model.train()
    obj = _Objective(net)
    x0 = to_float(train[:256]).to(dev_name)
    # a model with a class head trains on labels (its step then includes the class loss)
    y = labels[:256].to(dev_name) if labels is not None else None
    for amp in (False, True):
        def step(amp=amp):
            with torch.autocast(torch.device(dev_name).type, dtype=torch.bfloat16, enabled=amp):
                loss, _ = obj(x0, torch.Generator().manual_seed(0), y)
            loss.backward()
            net.zero_grad(set_to_none=True)
        out[f"train_step_ms_{'bf16' if amp else 'fp32'}"] = 256 / _rate(step, 256, repeats=5) * 1000
    out["train_step_speedup_bf16"] = out["train_step_ms_fp32"] / out["train_step_ms_bf16"]

    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    for k, v in out.items():
        print(f"{k:36s} {v}")


if __name__ == "__main__":
    main()
