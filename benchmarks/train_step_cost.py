"""Cost of one CDM training step (forward, input gradient, double backprop) against a
plain forward-backward of the same UNet, measured side by side in one run.

    python benchmarks/train_step_cost.py [--net compact] [--size 32] [--batch 32] [--repeats 5]

Prints the median seconds of each and their ratio; steps alternate so that machine
noise hits both alike.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from oodkit import CDM, NoiseSchedule, unet_from_preset


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="compact")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    torch.manual_seed(0)
    s = NoiseSchedule.uniform(1000)
    net = unet_from_preset(a.net, in_channels=a.channels, image_size=a.size, num_classes=s.num_classes)
    torch.nn.init.normal_(net.head.weight, std=0.01)
    model = CDM(net, s).to(a.device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x = torch.rand(a.batch, a.channels, a.size, a.size, device=a.device) * 2 - 1
    t = torch.randint(0, s.num_classes, (a.batch,), device=a.device)

    def plain():  # what a same-sized classifier costs: forward + backward of CE
        loss = F.cross_entropy(model.logits(s.q_sample(x, t, torch.randn_like(x))), t)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def cdm():
        loss, _ = model.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def timed(fn):
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    plain(), cdm()  # warm-up
    tp, tc = [], []
    for _ in range(a.repeats):
        tp.append(timed(plain))
        tc.append(timed(cdm))
    mp, mc = statistics.median(tp), statistics.median(tc)
    n = sum(q.numel() for q in net.parameters())
    print(f"net={a.net} ({n / 1e6:.2f}M params) input={a.channels}x{a.size}x{a.size} batch={a.batch} "
          f"device={a.device} threads={torch.get_num_threads()}")
    print(f"plain forward-backward: {mp:.3f} s/step   CDM step (double backprop): {mc:.3f} s/step   "
          f"ratio {mc / mp:.2f}x")


if __name__ == "__main__":
    main()
