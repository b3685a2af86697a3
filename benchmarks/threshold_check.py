"""What share of fresh in-distribution images a threshold accepts, on real data.

    python benchmarks/threshold_check.py --data-root DIR [--model benchmarks/models/fashionmnist_0-4_labelled.pt]

Three thresholds per detector, each judged on test images that set no threshold:

* ``default``: ``fit`` on n training images (the network trained on them) and the
  contamination 0.05 default, conformal on out-of-sample detector scores;
* ``recorded``: the same, with the model's record of its training images (what a
  checkpoint trained by oodkit 0.3 holds; attached here for a model that predates it) and
  500 held-out images added to the fitting pool, so the threshold comes from those;
* ``calibrated``: ``calibrate(1,000 held-out test images, tpr=0.95)``.

Writes a Markdown table (stdout) and a JSON record (``--json``).
"""
from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

import numpy as np

from oodkit.data import conform, load_dataset
from oodkit.data.images import image_hashes
from oodkit.detectors import make_detector, model_default_detectors
from oodkit.pretrained import load_model


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="benchmarks/models/fashionmnist_0-4_labelled.pt")
    ap.add_argument("--data", default="fashionmnist[0-4]")
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--n-fit", type=int, nargs="+", default=[1500])
    ap.add_argument("--detectors", default=None, help="comma-separated (default: the model's defaults + profile-gmm)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    model = load_model(args.model)
    c, h, _ = model.image_shape
    train = conform(load_dataset(args.data, "train", args.data_root).tensor(), h, c)
    test = conform(load_dataset(args.data, "test", args.data_root).tensor(), h, c)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(test))
    cal, pool, fresh = order[:1000], order[1000:1500], order[1500:]  # disjoint held-out test images
    names = args.detectors.split(",") if args.detectors else model_default_detectors([model]) + ["profile-gmm"]
    record = np.sort(image_hashes(train))  # what an oodkit 0.3 checkpoint records
    rows = []
    for n in args.n_fit:
        fit_idx = np.sort(rng.choice(len(train), n, replace=False))
        x_fit = train[fit_idx]
        for name in names:
            out = {"detector": name, "n_fit": n, "n_fresh": len(fresh)}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model.data_info = {k: v for k, v in model.data_info.items() if k != "image_hashes"}
                det = make_detector(name, model=model).fit(x_fit)
                out["default"] = float((det.predict(test[fresh]) == 1).mean())
                det.calibrate(test[cal], tpr=0.95)
                out["calibrated"] = float((det.predict(test[fresh]) == 1).mean())
                model.data_info = {**model.data_info, "image_hashes": record}
                det = make_detector(name, model=model).fit(np.concatenate([x_fit.numpy(), test[pool].numpy()]))
                out["recorded"] = float((det.predict(test[fresh]) == 1).mean())
            rows.append(out)
            print(json.dumps(out), flush=True)
    se = np.sqrt(0.95 * 0.05 / len(fresh))
    print(f"\nShare of {len(fresh)} fresh {args.data} test images accepted (target 0.95; binomial SE {se:.4f}); "
          f"model {args.model}\n")
    print("| detector | n fit | default (network saw the fitting images) | recorded (500 unseen in the pool) | "
          "calibrated (1,000 held out) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['detector']} | {r['n_fit']} | {r['default']:.4f} | {r['recorded']:.4f} | {r['calibrated']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "data": args.data, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
