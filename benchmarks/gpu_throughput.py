"""How fast the detection pass can run, and what each speed-up does to the answers: every
shipped model's forward pass in each arithmetic (``representation.PRECISIONS``), memory
layout and batch size, side by side in one run, with the matrix rates of the same run.

    python benchmarks/gpu_throughput.py --data-root DIR [--device cuda] [--n 4096] [--out DIR]

Per model and setting: images/s of the bare network over ``--n`` images already on the
device (median of ``--repeats`` rounds that run every setting in turn, after a warm-up), the achieved FLOP/s (FLOPs per
image counted by ``FlopCounterMode``) and its share of the same run's matrix rate in that
arithmetic, and the answers against full fp32, row-major, batch 256: bits/dim difference
(mean and largest) and Spearman's rank agreement of the log-likelihoods. Then oodkit's own
pass (``represent``: uint8 images in host memory, per-batch transfer, Eq. 10 inputs back on
the host) in today's default and in the fastest setting, against the bare network. With
``--graph`` the fastest setting is also replayed as a CUDA graph of a fixed batch size.
Writes ``throughput.{json,md,png}`` (``--replot``: only the plot, from the JSON).
"""
import argparse
import functools
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.utils.flop_counter import FlopCounterMode

from oodkit.data import as_images, load_dataset, to_float
from oodkit.models.cdm import bits_per_dim, eq10_levels, log_std_normal
from oodkit.pretrained import PRETRAINED_DIR, load_model
from oodkit.representation import channels_last_pass, precision_context, represent
from precision_check import cpu_name

# (precision, channels-last, batch): the GPU's default pass (the CPU's runs channels-last)
REFERENCE = ("fp32", False, 256)


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def _median_seconds(fns: dict, device, repeats) -> dict:
    """Median seconds of each of ``fns`` over ``repeats`` rounds that run them in turn, so
    that the machine's load hits them alike; one warm-up each first (kernels, allocator,
    cuDNN plans)."""
    for fn in fns.values():
        fn()
    times = {key: [] for key in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            times[key].append(_seconds(fn, device))
    return {key: statistics.median(t) for key, t in times.items()}


def matmul_rates(device, repeats: int) -> dict:
    """TFLOP/s of a square matrix product in each arithmetic, measured in this run."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    out = {}
    for precision in ("fp32", "tf32", "bf16"):
        if precision == "tf32" and device.type != "cuda":
            continue
        with precision_context(precision, device.type):
            sec = _median_seconds({precision: lambda: a @ b}, device, repeats)[precision]
        out[precision] = 2 * n**3 / sec / 1e12
    return out


def flops_per_image(model, x) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.logits(x[:2])
    return counter.get_total_flops() / 2


def bare_pass(model, x, precision, channels_last, batch_size):
    """log p(x) in nats (N,) of the network over ``x`` (on the device) in one setting."""
    out = []
    with torch.no_grad(), precision_context(precision, x.device.type), model.net.channels_last(channels_last):
        for i in range(0, len(x), batch_size):
            out.append(model.log_prob(x[i:i + batch_size]))
    return torch.cat(out)


def graph_pass(model, x, precision, channels_last, batch_size, repeats):
    """(seconds, log p(x), images) with the network replayed as a CUDA graph of one batch
    size, over the whole batches of ``x`` (a short last batch is left out)."""
    device = x.device
    n = len(x) - len(x) % batch_size
    if n == 0:
        raise ValueError(f"fewer images ({len(x)}) than one batch of {batch_size}")
    static_in = x[:batch_size].clone()
    with torch.no_grad(), precision_context(precision, device.type), model.net.channels_last(channels_last):
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                model.logits(static_in)
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_out = model.logits(static_in)
        outs = []

        def run():
            outs.clear()
            for i in range(0, n, batch_size):
                static_in.copy_(x[i:i + batch_size])
                graph.replay()
                outs.append(eq10_levels(static_out, log_std_normal(static_in), [0])[:, 0])

        sec = _median_seconds({"graph": run}, device, repeats)["graph"]
    return sec, torch.cat(outs), n


def _agreement(lp, ref, d):
    lp, ref = lp.cpu().numpy(), ref[:len(lp)].cpu().numpy()
    diff = np.abs(bits_per_dim(lp, d) - bits_per_dim(ref, d))
    return {"bpd_mean_diff": float(diff.mean()), "bpd_max_diff": float(diff.max()),
            "spearman_loglik": float(spearmanr(lp, ref)[0])}


def check_model(name, rec, args, device, rates):
    model = load_model(name, device=str(device)).eval()
    images = as_images(load_dataset(rec["dataset"], "test", args.data_root).images)
    reps = -(-args.n // len(images))
    host = images.repeat(reps, 1, 1, 1)[:args.n]  # uint8, as oodkit reads it
    x = to_float(host.to(device))
    d = x[0].numel()
    fpi = flops_per_image(model, x)
    ref = bare_pass(model, x, *REFERENCE)
    rows = []

    def row(setting, sec, lp, n=len(x), **extra):
        precision = setting["precision"]
        r = {"model": name, **setting, "images": n, "img_s": n / sec, "tflop_s": n * fpi / sec / 1e12,
             "share_of_matmul": n * fpi / sec / 1e12 / rates[precision] if precision in rates else None,
             **_agreement(lp, ref, d), **extra}
        rows.append(r)
        print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in r.items()}, flush=True)
        return r

    settings = [(p, cl, bs) for p in args.precisions for cl in args.layouts for bs in args.batch_sizes]
    seconds = _median_seconds({s: functools.partial(bare_pass, model, x, *s) for s in settings}, device, args.repeats)
    for s in settings:
        row({"path": "network", "precision": s[0], "channels_last": s[1], "batch": s[2]}, seconds[s],
            bare_pass(model, x, *s))
    base = next(r for r in rows if (r["precision"], r["channels_last"], r["batch"]) == REFERENCE)
    best = max(rows, key=lambda r: r["img_s"])
    for r in rows:
        r["speed_vs_reference"] = r["img_s"] / base["img_s"]
    # oodkit's own pass from host memory, in the reference and the fastest settings, against
    # the bare network in the layout it runs (on a CPU the one representation.network_layout picks)
    for r in (base, best):
        p, bs = r["precision"], r["batch"]
        cl = channels_last_pass(device, p) if device.type == "cpu" else r["channels_last"]
        bare = next((q for q in rows if q["path"] == "network" and (q["precision"], q["channels_last"], q["batch"])
                     == (p, cl, bs)), None)
        if bare is None:
            raise SystemExit(f"oodkit's pass runs {p} {'channels-last' if cl else 'row-major'} here: measure that "
                             "layout too (--layouts row,cl)")

        def real():
            with model.net.channels_last(cl):
                return represent(model, host, batch_size=bs, cache=None, precision=p)

        sec = _median_seconds({"real": real}, device, args.repeats)["real"]
        lp = torch.as_tensor(real().loglik)
        row({"path": "represent", "precision": p, "channels_last": cl, "batch": bs}, sec, lp,
            speed_vs_reference=None, vs_bare_network=(len(x) / sec) / bare["img_s"])
    if args.graph and device.type == "cuda":
        p, cl, bs = best["precision"], best["channels_last"], best["batch"]
        try:
            sec, lp, n = graph_pass(model, x, p, cl, bs, args.repeats)
            row({"path": "cuda-graph", "precision": p, "channels_last": cl, "batch": bs}, sec, lp, n=n,
                speed_vs_reference=(n / sec) / base["img_s"])
        except Exception as err:  # recorded, not fatal: the other rows stand
            rows.append({"model": name, "path": "cuda-graph", "error": f"{type(err).__name__}: {err}"[:300]})
            print(rows[-1], flush=True)
    return [dict(r, flops_per_image=fpi) for r in rows]


def plot(doc: dict, path: Path) -> None:
    """Images/s of each setting against the reference, per model (log scale): the grid at a
    glance. ``doc``: the contents of throughput.json."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in doc["rows"] if "error" not in r]
    models = list(dict.fromkeys(r["model"] for r in rows))
    label = lambda r: (f"{r['path']} {r['precision']} {'NHWC' if r['channels_last'] else 'NCHW'} b{r['batch']}")
    settings = list(dict.fromkeys(label(r) for r in rows))
    ref = {r["model"]: r["img_s"] for r in rows if (r["path"], r["precision"], r["channels_last"], r["batch"])
           == ("network", *REFERENCE)}
    fig, ax = plt.subplots(figsize=(max(8, 1.4 * len(models) * len(settings) / 4), 4.5))
    width = 0.8 / len(settings)
    cmap = plt.get_cmap("tab20")
    for j, setting in enumerate(settings):
        xs, ys = [], []
        for i, m in enumerate(models):
            hit = [r for r in rows if r["model"] == m and label(r) == setting]
            if hit:
                xs.append(i + (j - (len(settings) - 1) / 2) * width)
                ys.append(hit[0]["img_s"] / ref[m])
        ax.bar(xs, ys, width, label=setting, color=cmap(j % 20))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%gx"))
    ax.set_xticks(range(len(models)), models)
    ax.set_ylabel(f"images/s against the network in {REFERENCE[0]}, NCHW, batch {REFERENCE[2]}")
    meta = doc["meta"]
    ax.set_title(f"Detection-pass throughput, {meta['device_name']}, {meta['threads']} threads")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(rows, meta) -> str:
    rates = ", ".join(f"{k} {v:.3g}" for k, v in meta["matmul_tflop_s"].items())
    out = [f"# Detection-pass throughput ({meta['device_name']}, {meta['threads']} threads, torch {meta['torch']}, "
           f"{meta['n']} images per model, median of {meta['repeats']})", "",
           f"Matrix product in this run, TFLOP/s: {rates}.", "",
           "| model | path | precision | channels-last | batch | img/s | x reference | TFLOP/s | share of matmul "
           "| bits/dim diff mean / max | Spearman |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['model']} | {r['path']} | {r['error']} |")
            continue
        x_ref = f"{r['speed_vs_reference']:.2f}x" if r.get("speed_vs_reference") else (
            f"{r['vs_bare_network']:.2f}x of bare" if r.get("vs_bare_network") else "")
        share = f"{100 * r['share_of_matmul']:.1f}%" if r.get("share_of_matmul") else ""
        out.append(f"| {r['model']} | {r['path']} | {r['precision']} | {r['channels_last']} | {r['batch']} "
                   f"| {r['img_s']:.0f} | {x_ref} | {r['tflop_s']:.2f} | {share} "
                   f"| {r['bpd_mean_diff']:.1e} / {r['bpd_max_diff']:.1e} | {r['spearman_loglik']:.6f} |")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--names", default=None, help="comma-separated shipped models, in the order run (default: all)")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--batch-sizes", default="256,1024")
    ap.add_argument("--precisions", default="fp32,tf32,bf16")
    ap.add_argument("--layouts", default="row,cl", help="row (row-major), cl (channels-last)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--graph", action="store_true", help="also replay the fastest setting as a CUDA graph")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "throughput")
    ap.add_argument("--replot", action="store_true", help="only redraw OUT/throughput.png from OUT/throughput.json")
    args = ap.parse_args()
    if args.replot:
        return plot(json.loads((args.out / "throughput.json").read_text()), args.out / "throughput.png")
    device = torch.device(args.device)
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    args.precisions = [p for p in args.precisions.split(",") if device.type == "cuda" or p != "tf32"]
    args.layouts = [{"row": False, "cl": True}[s] for s in args.layouts.split(",")]
    if "fp32" not in args.precisions or False not in args.layouts or 256 not in args.batch_sizes:
        ap.error("the reference setting (fp32, row-major, batch 256) must be among those measured")
    rates = matmul_rates(device, args.repeats)
    print("matmul TFLOP/s:", {k: round(v, 2) for k, v in rates.items()}, flush=True)
    index = json.loads((PRETRAINED_DIR / "index.json").read_text())
    names = args.names.split(",") if args.names else list(index)
    meta = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
            cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "n": args.n, "repeats": args.repeats, "matmul_tflop_s": rates, "reference": REFERENCE}
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in names:  # written after each model: a run stopped early keeps what it measured
        rows += check_model(name, index[name], args, device, rates)
        (args.out / "throughput.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
        (args.out / "throughput.md").write_text(_markdown(rows, meta))
    plot({"meta": meta, "rows": rows}, args.out / "throughput.png")
    print(_markdown(rows, meta))


if __name__ == "__main__":
    main()
