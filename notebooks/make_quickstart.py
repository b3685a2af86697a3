"""Writes quickstart.ipynb beside this file (run it after editing the cells below)."""
from pathlib import Path

import nbformat as nbf

cells = [
    ("md", """# oodkit quickstart

Train a small classification diffusion model (CDM) on scikit-learn's bundled digits,
then ask of new images: *is this like my training data?* Everything here runs on a
CPU in a couple of minutes and downloads nothing.

A CDM is a classifier of noise levels. One forward pass gives the exact log-likelihood
of an image (Eq. 10 of Yadin et al., 2024) and its likelihood at every noise level,
which oodkit turns into out-of-distribution (OOD) scores."""),
    ("code", """import warnings
warnings.filterwarnings("ignore", message="IProgress not found")  # no ipywidgets: plain progress bars
import numpy as np
import matplotlib.pyplot as plt
import oodkit
from oodkit.data import load_dataset, as_images
from oodkit.detectors import make_detector
from oodkit.metrics import ood_metrics

train = load_dataset("digits-0to4", "train")      # in-distribution: digits 0-4
test = load_dataset("digits-0to4", "test")
ood = {name: load_dataset(name, "test", like=test) for name in ["digits-5to9", "letters", "noise"]}
print(train.images.shape, train.images.dtype)       # uint8 (N, H, W, C)"""),
    ("md", "## Train a CDM\n`fit_model` trains and returns the model with its EMA weights; `out=` would also write a checkpoint that `oodkit.load_model` reads back."),
    ("code", """x_train = as_images(train.images)                  # uint8 (N, C, H, W)
cfg = oodkit.TrainConfig(steps=150, batch_size=64, lr=1e-3, warmup=20)
model = oodkit.fit_model(x_train, net="tiny", T=1000, config=cfg, progress=False)
x = test.images[:8].transpose(0, 3, 1, 2) / 127.5 - 1.0   # float in [-1, 1]
import torch
print("bits/dim:", model.bpd(torch.tensor(x, dtype=torch.float32)).numpy().round(2))"""),
    ("md", "## Detectors, scikit-learn style\nHigher `score_samples` = more in-distribution. Every CDM detector reads the same forward pass; `fused` (the default) combines the likelihood profile, input complexity and the Mahalanobis score of the features its classification head reads (the pooled decoder output) by Fisher's rule on p-values against the training images."),
    ("code", """rows = []
for name in ["loglik", "profile", "features", "fused"]:
    det = make_detector(name, model=model, progress=False).fit(train.images)
    s_id = det.score_samples(test.images)
    for ood_name, ds in ood.items():
        m = ood_metrics(s_id, det.score_samples(ds.images))
        rows.append((name, ood_name, round(m["auroc"], 3), round(m["fpr95_ood_accepted"], 3)))
for r in rows:
    print("{:<9} {:<12} AUROC {:<6} FPR@95 (OOD accepted) {}".format(*r))"""),
    ("code", """det = oodkit.CDMDetector(model=model, progress=False).fit(train.images)   # score="fused"
scores = {"digits 0-4 (ID)": det.score_samples(test.images)}
scores.update({name: det.score_samples(ds.images) for name, ds in ood.items()})
# noise lands thousands of units below the ID images: a symmetric-log axis shows both
bins = -np.logspace(0, np.log10(1 - min(s.min() for s in scores.values())), 50)[::-1] + 1
for name, s in scores.items():
    plt.hist(s, bins=bins, histtype="stepfilled" if "ID" in name else "step", alpha=0.5 if "ID" in name else 1,
             label=name)
plt.xscale("symlog"); plt.ylabel("images per bin"); plt.axvline(det.offset_, color="k", ls=":", label="threshold")
plt.xlabel("fused score: sum of log p-values (higher = more in-distribution)"); plt.legend(); plt.show()"""),
    ("md", "## Fit once, calibrate, save, reuse\n`calibrate` sets the threshold so that a chosen share of held-out ID images is accepted; `save` writes a pickle-free file that `oodkit.load_detector` (or `oodkit score --detector FILE`) reads back without touching the training set."),
    ("code", """import tempfile, pathlib
half = len(test) // 2
val, rest = test.images[:half], test.images[half:]  # held-out ID: one half sets the threshold
det.calibrate(val, tpr=0.95)
path = pathlib.Path(tempfile.mkdtemp()) / "digits-detector.npz"
det.save(path, embed_model=True)
again = oodkit.load_detector(path, progress=False)
print("same scores after loading:", np.array_equal(again.score_samples(ood["letters"].images),
                                                   det.score_samples(ood["letters"].images)))
print("accepted: other ID half", (again.predict(rest) == 1).mean().round(3),
      "| letters", (again.predict(ood["letters"].images) == 1).mean().round(3),
      "| noise", (again.predict(ood["noise"].images) == 1).mean().round(3))"""),
    ("md", "## The whole benchmark in one call\nThe same as `oodkit bench digits`: tables, CSV / Markdown / JSON, per-sample scores, ROC curves and histograms."),
    ("code", """from oodkit.bench import run_bench
import tempfile
out = tempfile.mkdtemp()
df = run_bench("digits-0to4-vs-letters,noise", detectors=["loglik", "fused"], net="tiny", steps=40,
               output_dir=out, progress=False, bootstrap=200, echo=lambda m: None)
df[["detector", "ood", "group", "auroc", "auroc_lo", "auroc_hi", "fpr95_ood_accepted"]].round(3)"""),
]

nb = nbf.v4.new_notebook()
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
if __name__ == "__main__":
    import os
    import sys
    import tempfile

    # executed here so that the committed notebook reads with its outputs on a code host
    if "--no-execute" not in sys.argv:
        import nbclient

        os.environ["OODKIT_CACHE"] = tempfile.mkdtemp()
        nbclient.NotebookClient(nb, timeout=900, kernel_name="python3").execute()
    nbf.write(nb, Path(__file__).with_name("quickstart.ipynb"))
