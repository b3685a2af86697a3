"""Ship each pretrained model with its fitted default detectors, so that
``oodkit score --model NAME --data X`` and ``oodkit.load_detector(NAME)`` cost only the
passes over X.

    python benchmarks/export_detectors.py --data-root DIR [--names fashionmnist,mnist] [--n-fit 5000]

For each name: the model's default detectors are fitted through the one flow
(``oodkit.pipeline.Flow``) on a seeded subsample of ``--n-fit`` images of the model's
training split (the kNN banks grow with n: 5,000 keeps a file near 3 MB; the effect on
AUROC is measured in ``benchmarks/bundled_cost.py``), written to
``oodkit/weights/<file>.detectors.npz`` and recorded with its SHA-256 in
``weights/index.json``. The thresholds are conformal on out-of-sample scores of those
images, which the network trained on: optimistic, and each detector says so
(``threshold_guarantee() == "trained-on"``; see the README's *Thresholds*).
"""
import argparse
import json
import os
import time
import warnings

import numpy as np

from oodkit.data import load_dataset
from oodkit import save_detectors
from oodkit.detectors import model_default_detectors
from oodkit.detectors.base import OptimisticThresholdWarning
from oodkit.pipeline import Flow, align
from oodkit.pretrained import PRETRAINED_DIR, load_model
from oodkit.checkpoint import file_sha256


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--names", default=None, help="comma-separated pretrained names (default: all)")
    ap.add_argument("--n-fit", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    index_path = PRETRAINED_DIR / "index.json"
    index = json.loads(index_path.read_text())
    for name in (args.names.split(",") if args.names else list(index)):
        rec, t0 = index[name], time.time()
        model = load_model(name)
        model.reference = name  # the file names the model as a user would, not by this machine's path
        ds = load_dataset(rec["dataset"], "train", args.data_root)
        keep = np.sort(np.random.default_rng(args.seed).choice(len(ds), min(args.n_fit, len(ds)), replace=False))
        x = align(ds.subset(keep).tensor(), model)
        # the CLI's default batch: the shipped statistics are the floats `oodkit fit` gave on the exporting
        # machine (another CPU's kernels move them slightly: up to 8e-4 on digits-0to4's profile scores)
        with warnings.catch_warnings():  # the optimism is recorded in each detector, and stated above
            warnings.simplefilter("ignore", OptimisticThresholdWarning)
            dets = Flow(batch_size=256, seed=args.seed, progress=True).fit(
                {n: model for n in model_default_detectors([model])}, x, seen=np.ones(len(keep), dtype=bool))
        out = PRETRAINED_DIR / (rec["file"].removesuffix(".pt") + ".detectors.npz")
        save_detectors(out, dets)
        rec["detectors"] = {"file": out.name, "sha256": file_sha256(out), "n_fit": len(keep), "seed": args.seed,
                            "names": list(dets), "size_mb": round(out.stat().st_size / 2**20, 2)}
        index_path.write_text(json.dumps(index, indent=1) + "\n")
        print(f"{name}: {', '.join(dets)} on {len(keep)} {rec['dataset']} training images -> {out.name} "
              f"({rec['detectors']['size_mb']} MB, {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
