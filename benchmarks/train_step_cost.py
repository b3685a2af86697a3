"""Cost of one CDM training step (forward, input gradient, double backprop), measured side
by side in one run: fp32 eager, bf16 autocast and torch.compile (inductor), against a
plain forward-backward of the same UNet, and against the FLOP floor: the step's counted
FLOPs over the machine's 2048x2048 matmul rate, measured in the same run.

    OMP_NUM_THREADS=1 python benchmarks/train_step_cost.py [--net compact] [--size 32] \
        [--batch 32] [--repeats 5] [--threads 1] [--no-compile]

Prints medians per step and per image, images/s, the ratio to the fp32 eager CDM step,
GFLOP/s achieved and its share of the matmul rate (fp32, or bf16 for the bf16 row).
Variants alternate within each repeat, so that machine noise hits them alike. FLOPs are
those of PyTorch's flop counter (matmuls, convolutions, attention; not norms or
activations), so "share of the floor" is an upper bound on how close a step gets.
"""
import argparse
import os
import shutil
import statistics
import tempfile
import time

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from oodkit import NoiseSchedule
from oodkit.checkpoint import build_model
from oodkit.nn.unet import PRESETS, UNetConfig
from oodkit.training import bf16_supported


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, reps=1):
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def matmul_gflops(dtype, device, n=2048, reps=5):
    """Best-of-``reps`` GFLOP/s of an n x n matmul in ``dtype``: the floor's rate."""
    a, b = (torch.randn(n, n, device=device).to(dtype) for _ in range(2))
    torch.mm(a, b)
    return 2 * n**3 / min(timed(lambda: torch.mm(a, b), device) for _ in range(reps)) / 1e9


class _RegistryCount(TorchDispatchMode):
    """FlopCounterMode's formulas without its module tracker, whose backward hooks
    refuse ``torch.autograd.grad`` (and so Theorem 3.1 and the CDM's double backprop)."""

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.overloadpacket in flop_registry:
            self.total += flop_registry[func.overloadpacket](*args, **(kwargs or {}), out_val=out)
        return out


def count_flops(fn):
    """``(FLOPs of fn(), how counted)``: FlopCounterMode, else its formulas in a bare
    dispatch mode, with FlopCounterMode's error as the note."""
    try:
        with FlopCounterMode(display=False) as fc:
            fn()
        return fc.get_total_flops(), "FlopCounterMode"
    except RuntimeError as e:
        note = f"FlopCounterMode failed ({type(e).__name__}: {str(e).splitlines()[0][:130]}); same formulas, no module tracker"
    with _RegistryCount() as rc:
        fn()
    return rc.total, note


def fresh_inductor_cache():
    """Cold compile times: a private inductor cache, removed at exit."""
    import atexit

    d = tempfile.mkdtemp(prefix="inductor-bench-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = d
    atexit.register(shutil.rmtree, d, True)


def error_line(e):
    return f"not supported ({type(e).__name__}: {str(e).strip().splitlines()[0][:100]})"


def cdm_model(net, size, channels, T=1000):
    s = NoiseSchedule.uniform(T)
    cfg = UNetConfig(**PRESETS[net], in_channels=channels, image_size=size, num_classes=s.num_classes)
    return build_model("cdm", cfg.to_dict(), s)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="compact")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads (pinned; default 1)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile attempt")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    fresh_inductor_cache()
    import torch._inductor.config as inductor_config

    inductor_config.compile_threads = a.threads
    dev = a.device
    torch.manual_seed(0)
    model = cdm_model(a.net, a.size, a.channels).to(dev)
    s, net = model.schedule, model.net
    torch.nn.init.normal_(net.head.weight, std=0.01)  # a zero head would make the input gradient trivial
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(a.batch, a.channels, a.size, a.size, device=dev) * 2 - 1
    t = torch.randint(0, s.num_classes, (a.batch,), device=dev)
    gen = torch.Generator().manual_seed(0)

    def plain():  # what a same-sized classifier costs: forward + backward of CE
        loss = F.cross_entropy(model.logits(s.q_sample(x, t, torch.randn_like(x))), t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def cdm_step(m, bf16=False):
        def step():
            with torch.autocast(torch.device(dev).type, dtype=torch.bfloat16, enabled=bf16):
                loss, _ = m.loss(x, generator=gen)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    rate = {"fp32": matmul_gflops(torch.float32, dev), "bf16": matmul_gflops(torch.bfloat16, dev)}
    fwd, how_fwd = count_flops(lambda: model.logits(x).sum())
    plain_flops, _ = count_flops(plain)
    step_flops, how_step = count_flops(cdm_step(model))

    variants = {"plain fwd-bwd, fp32 eager": (plain, plain_flops, "fp32"),
                "CDM step, fp32 eager": (cdm_step(model), step_flops, "fp32"),
                "CDM step, bf16 autocast": (cdm_step(model, bf16=True), step_flops, "bf16")}
    compile_note = "skipped (--no-compile)"
    if not a.no_compile:
        compiled = type(model)(torch.compile(net), s)  # same weights, compiled network
        t0 = time.perf_counter()
        try:
            cdm_step(compiled)()
            compile_note = f"compiled in {time.perf_counter() - t0:.1f} s (first step)"
            variants["CDM step, torch.compile"] = (cdm_step(compiled), step_flops, "fp32")
        except Exception as e:  # double backward through an aot_autograd graph
            compile_note = f"{error_line(e)}, after {time.perf_counter() - t0:.1f} s of compiling"

    for fn, _, _ in variants.values():  # warm-up
        fn()
    times = {k: [] for k in variants}
    for _ in range(a.repeats):
        for k, (fn, _, _) in variants.items():
            times[k].append(timed(fn, dev))
    med = {k: statistics.median(v) for k, v in times.items()}
    ref = med["CDM step, fp32 eager"]

    n = sum(q.numel() for q in net.parameters())
    print(f"net={a.net} ({n / 1e6:.2f}M params) input={a.channels}x{a.size}x{a.size} batch={a.batch} "
          f"device={dev} threads={torch.get_num_threads()} (pinned) repeats={a.repeats} torch={torch.__version__}")
    print(f"matmul 2048x2048 in this run: fp32 {rate['fp32']:.1f} GFLOP/s, bf16 {rate['bf16']:.1f} GFLOP/s; "
          f"bf16_supported({dev}) = {bf16_supported(dev)}"
          + ("" if bf16_supported(dev) else " (bf16 emulated: expected slower than fp32, ~2.3x measured before)"))
    print(f"FLOPs per image: forward {fwd / a.batch / 1e9:.3f} G ({how_fwd}); plain fwd-bwd "
          f"{plain_flops / a.batch / 1e9:.3f} G; CDM step {step_flops / a.batch / 1e9:.3f} G "
          f"= {step_flops / fwd:.2f}x forward ({how_step})")
    print("\n| step | s / step | ms / image | images / s | time vs CDM fp32 eager | GFLOP/s | share of matmul rate |")
    print("|---|---|---|---|---|---|---|")
    for k, (_, flops, dt) in variants.items():
        g = flops / med[k] / 1e9
        print(f"| {k} | {med[k]:.3f} | {med[k] / a.batch * 1e3:.1f} | {a.batch / med[k]:.1f} | "
              f"{med[k] / ref:.2f}x | {g:.1f} | {g / rate[dt]:.0%} of {dt} |")
    if "CDM step, torch.compile" not in variants:
        print(f"| CDM step, torch.compile | {compile_note} | | | | | |")
    else:
        print(f"\ntorch.compile: {compile_note}")
    floor = step_flops / rate["fp32"] / 1e9
    print(f"\nCDM step / plain fwd-bwd: {ref / med['plain fwd-bwd, fp32 eager']:.2f}x; "
          f"fp32 floor of the CDM step {floor:.3f} s ({floor / a.batch * 1e3:.1f} ms/image)")


if __name__ == "__main__":
    main()
