"""Which activation the feature scores read: the AUROC (OOD positive) of one Gaussian
(Mahalanobis, Ledoit-Wolf) fitted on ID training images to the spatially averaged output
of every block of the noise classifier's UNet, on the features as they are ("raw") and
L2-normalised ("l2"). One forward pass per image set with a hook on each block; the same
subsamples and alignment as `oodkit bench` with the same flags. Fitted on ID data only.

    python benchmarks/feature_layers.py SPEC MODEL [--jpeg-ood 75] [--max-train N] [--max-test N]
        [--data-root DATA] [--json OUT]

Prints a markdown table (one row per block, one column pair per OOD set) and, with
--json, adds {model: {"spec", "model", "auroc": {ood set: {block: {"raw": AUROC, "l2":
AUROC}}}}} to that file (other models' entries kept).
"""
from types import SimpleNamespace

import numpy as np
import torch

import study_args
from oodkit.bench import aligned_groups
from oodkit.data.images import batches, to_float
from oodkit.detectors.scores import FeatureGauss, _l2
from oodkit.metrics import auroc
from oodkit.representation import full_fp32


def blocks(net) -> dict:
    """Name -> module whose output is a block's output, in the order of the forward pass;
    `up.<last>` is the decoder's output, the features oodkit's representation keeps."""
    out = {"conv_in": net.conv_in}
    out.update({f"down.{i}": b[-1] for i, b in enumerate(net.down)})
    out["mid"] = net.mid[-1]
    out.update({f"up.{i}": b[-1] for i, b in enumerate(net.up)})
    out["head_conv"] = net.head_conv
    return out


def pooled_activations(model, x: torch.Tensor, batch_size=500) -> dict:
    """Block name -> (N, C) float64, each block's output averaged over space."""
    acts, handles = {}, []
    for name, m in blocks(model.net).items():
        handles.append(m.register_forward_hook(
            lambda mod, inp, out, name=name: acts.setdefault(name, []).append(out.mean(dim=(2, 3)).double())))
    try:
        model.eval()
        with torch.no_grad(), full_fp32():
            for xb in batches(x, batch_size):
                model.logits(to_float(xb))
    finally:
        for hd in handles:
            hd.remove()
    return {k: torch.cat(v).numpy() for k, v in acts.items()}


def main():
    a = study_args.parser(__doc__.split("\n\n")[0]).parse_args()
    sets, model = study_args.sets_and_model(a)
    c, h, _ = model.image_shape
    res = {}
    for _, _, x_train, x_id, x_oods in aligned_groups(sets, h, c):
        train, test = pooled_activations(model, x_train), pooled_activations(model, x_id)
        oods = {o: pooled_activations(model, x) for o, x in x_oods.items()}
        for name in train:
            for kind, f in (("raw", lambda z: z), ("l2", _l2)):
                g = FeatureGauss().fit(SimpleNamespace(features=torch.from_numpy(f(train[name]))))
                s_id = g.score(SimpleNamespace(features=torch.from_numpy(f(test[name]))))
                for o, acts in oods.items():
                    s = g.score(SimpleNamespace(features=torch.from_numpy(f(acts[name]))))
                    res.setdefault(o, {}).setdefault(name, {})[kind] = round(auroc(s_id, s), 4)
    names = list(blocks(model.net))
    widths = {n: train[n].shape[1] for n in names}
    print(f"{a.spec} on {a.model}: AUROC raw / l2\n")
    print("| block | width | " + " | ".join(res) + " |")
    print("|---|---|" + "---|" * len(res))
    for n in names:
        print(f"| {n} | {widths[n]} | " + " | ".join(f"{res[o][n]['raw']:.4f} / {res[o][n]['l2']:.4f}" for o in res)
              + " |")
    if a.json:  # one file for several runs, keyed by model
        study_args.add_run(a.json, a.model, {"spec": a.spec, "model": a.model, "auroc": res})

if __name__ == "__main__":
    main()
