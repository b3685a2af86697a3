"""What share of fresh in-distribution images a threshold accepts, on real data.

    python benchmarks/threshold_check.py --data-root DIR [--model benchmarks/models/fashionmnist_0-4_labelled.pt]

Three thresholds per detector, each judged on test images that set no threshold:

* ``default``: ``fit`` on n training images (the network trained on them) and the
  contamination 0.05 default, conformal on out-of-sample detector scores;
* ``recorded``: the same, with the model's record of its training images (what a
  checkpoint trained by oodkit 0.3 holds; attached here for a model that predates it) and
  500 held-out images added to the fitting pool, so the threshold comes from those;
* ``calibrated``: ``calibrate(1,000 held-out test images, tpr=0.95)``.

``--precision fp32 bf16`` repeats all three in each arithmetic, every pass of a detector
(fitting, calibrating, judging) in its own (``CDMDetector(precision=...)``, what ``oodkit
fit --precision`` records), and for each arithmetic but fp32 judges the fp32-calibrated
threshold on scores made in it (the mismatch ``oodkit score`` warns of).

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
from oodkit.representation import PRECISIONS, represent


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="benchmarks/models/fashionmnist_0-4_labelled.pt")
    ap.add_argument("--data", default="fashionmnist[0-4]")
    ap.add_argument("--data-root", default=os.environ.get("OODKIT_DATA"))
    ap.add_argument("--n-fit", type=int, nargs="+", default=[1500])
    ap.add_argument("--detectors", default=None, help="comma-separated (default: the model's defaults + profile-gmm)")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--precision", nargs="+", default=["fp32"], choices=list(PRECISIONS))
    args = ap.parse_args()

    model = load_model(args.model)
    c, h, _ = model.image_shape
    train = conform(load_dataset(args.data, "train", args.data_root).tensor(), h, c)
    test = conform(load_dataset(args.data, "test", args.data_root).tensor(), h, c)
    if len(test) <= 1500:
        raise SystemExit(f"{args.data} has {len(test)} test images; this check needs more than 1,500 (1,000 to "
                         "calibrate on, 500 for the pool, the rest to judge)")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(test))
    cal, pool, fresh = order[:1000], order[1000:1500], order[1500:]  # disjoint held-out test images
    names = args.detectors.split(",") if args.detectors else model_default_detectors([model]) + ["profile-gmm"]
    record = np.sort(image_hashes(train))  # what an oodkit 0.3 checkpoint records
    # drawn in the order of --n-fit from one stream, as before --precision existed, and shared by every arithmetic
    fits = {n: np.sort(rng.choice(len(train), n, replace=False)) for n in args.n_fit}
    rows = []
    for precision in args.precision:
        for n in args.n_fit:
            x_fit = train[fits[n]]
            for name in names:
                out = {"detector": name, "n_fit": n, "n_fresh": len(fresh), "precision": precision}
                make = lambda: make_detector(name, model=model, precision=precision)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    model.data_info = {k: v for k, v in model.data_info.items() if k != "image_hashes"}
                    det = make().fit(x_fit)
                    out["default"] = float((det.predict(test[fresh]) == 1).mean())
                    det.calibrate(test[cal], tpr=0.95)
                    out["calibrated"] = float((det.predict(test[fresh]) == 1).mean())
                    model.data_info = {**model.data_info, "image_hashes": record}
                    det = make().fit(np.concatenate([x_fit.numpy(), test[pool].numpy()]))
                    out["recorded"] = float((det.predict(test[fresh]) == 1).mean())
                    if precision != "fp32":  # the mismatch `oodkit score` warns of: fp32 statistics, scores in another
                        det = make_detector(name, model=model).fit(x_fit).calibrate(test[cal], tpr=0.95)
                        rep = represent(model, test[fresh], det.batch_size, precision=precision)
                        out["calibrated_fp32"] = float((det.score_representation(rep) >= det.offset_).mean())
                rows.append(out)
                print(json.dumps(out), flush=True)
    se = np.sqrt(0.95 * 0.05 / len(fresh))
    print(f"\nShare of {len(fresh)} fresh {args.data} test images accepted (target 0.95; binomial SE {se:.4f}); "
          f"model {args.model}\n")
    print("| precision | detector | n fit | default (network saw the fitting images) | recorded (500 unseen in the "
          "pool) | calibrated (1,000 held out) | calibrated in fp32, scored in this precision |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        mixed = f"{r['calibrated_fp32']:.4f}" if "calibrated_fp32" in r else "-"
        print(f"| {r['precision']} | {r['detector']} | {r['n_fit']} | {r['default']:.4f} | {r['recorded']:.4f} | "
              f"{r['calibrated']:.4f} | {mixed} |")
    if args.json:
        args.json.write_text(json.dumps({"model": args.model, "data": args.data, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
