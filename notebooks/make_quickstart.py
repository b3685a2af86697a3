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
    ("code", """import numpy as np
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
    ("md", "## Detectors, scikit-learn style\nHigher `score_samples` = more in-distribution. All CDM detectors share one cached forward pass."),
    ("code", """rows = []
for name in ["loglik", "posterior", "typicality", "profile"]:
    det = make_detector(name, model=model, progress=False).fit(train.images)
    s_id = det.score_samples(test.images)
    for ood_name, ds in ood.items():
        m = ood_metrics(s_id, det.score_samples(ds.images))
        rows.append((name, ood_name, round(m["auroc"], 3), round(m["fpr95_ood_accepted"], 3)))
for r in rows:
    print("{:<11} {:<12} AUROC {:<6} FPR@95 (OOD accepted) {}".format(*r))"""),
    ("code", """det = make_detector("loglik", model=model, progress=False).fit(train.images)
plt.hist(det.score_samples(test.images), bins=40, alpha=0.5, density=True, label="digits 0-4 (ID)")
for ood_name, ds in ood.items():
    plt.hist(det.score_samples(ds.images), bins=40, histtype="step", density=True, label=ood_name)
plt.xlabel("log-likelihood (nats)"); plt.legend(); plt.show()
print("predict:", det.predict(ood["noise"].images[:5]), det.predict(test.images[:5]))"""),
    ("md", "## The whole benchmark in one call\nThe same as `oodkit bench digits`: tables, CSV / Markdown / JSON, per-sample scores, ROC curves and histograms."),
    ("code", """from oodkit.bench import run_bench
import tempfile
out = tempfile.mkdtemp()
df = run_bench("digits-0to4-vs-letters,noise", detectors=["loglik", "profile"], net="tiny", steps=40,
               output_dir=out, progress=False)
df[["detector", "ood", "auroc", "fpr95_ood_accepted"]]"""),
]

nb = nbf.v4.new_notebook()
nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in cells]
nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
nbf.write(nb, Path(__file__).with_name("quickstart.ipynb"))
