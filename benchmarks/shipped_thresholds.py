"""What share of fresh in-distribution test images the thresholds shipped with each
pretrained model accept (each promises 0.95, but was set on images its network trained on,
so nothing guarantees it; ``threshold_guarantee() == "trained-on"``).

    python benchmarks/shipped_thresholds.py --data-root DIR [--n 3000]

Prints one line per model: the share of ``--n`` seeded test images (all of them for
``digits-0to4``, 300) that each shipped detector accepts.
"""
import argparse
import os
import time
import warnings

import numpy as np

from oodkit.data import load_dataset
from oodkit.detectors.persist import load_detectors
from oodkit.pipeline import Flow, align


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--names", default="digits-0to4,fashionmnist,mnist,cifar10")
    ap.add_argument("--n", type=int, default=3000)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    for name in args.names.split(","):
        t0 = time.time()
        dets = load_detectors(name)
        model = next(iter(dets.values())).model_
        ds = load_dataset(name, "test", args.data_root)
        n = min(args.n, len(ds))
        keep = np.sort(np.random.default_rng(0).choice(len(ds), n, replace=False))
        scores = Flow(batch_size=256).score(dets, align(ds.subset(keep).tensor(), model))
        accepted = {k: float(np.mean(s >= dets[k].offset_)) for k, s in scores.items()}
        print(f"{name} ({n} test images, {time.time() - t0:.0f} s): "
              + ", ".join(f"{k} {v:.3f}" for k, v in accepted.items()), flush=True)


if __name__ == "__main__":
    main()
