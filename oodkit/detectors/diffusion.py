"""Detectors on the contrast models: a DDPM's ELBO, the information-theoretic likelihood
(on a DDPM, or on a CDM through Theorem 3.1), DDPM reconstruction error, and a joint
diffusion model's classifier scores. Unlike the CDM scores, most of these need many
network passes per image: ``passes_per_image`` says how many."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from tqdm.auto import tqdm

from ..checkpoint import load_model
from ..data.images import ImageInputError, as_images, batches, conform, fingerprint, to_float
from ..itd import discrete_denoiser, itd_nll
from .base import BaseDetector

__all__ = ["DiffusionDetector", "SCORE_KINDS"]

# which model kinds can produce each score, in order of preference when a benchmark has several:
# a DDPM's likelihood is the baseline, the CDM's Theorem 3.1 ITD the variant (ask for itd@cdm)
SCORE_KINDS = {
    "elbo": ("ddpm", "joint"),
    "itd": ("ddpm", "joint", "cdm"),
    "recon": ("ddpm", "joint"),
    "msp": ("joint",),
    "energy": ("joint",),
}


class DiffusionDetector(BaseDetector):
    """OOD scores from a DDPM, a joint diffusion model or (``itd``) a CDM.

    Args:
        model: a checkpoint path or a loaded model (required: these detectors do not
            train one).
        score: ``"elbo"`` (minus the negative ELBO, bits/dim), ``"itd"`` (``log p(x)``
            from the information-theoretic estimator, nats), ``"recon"`` (minus the mean
            squared error of one-step reconstructions from ``recon_levels``), ``"msp"``
            (maximum softmax probability) or ``"energy"`` (logsumexp of the class logits).
        n_terms: ELBO terms (None: all T, exact; k: unbiased k-term estimate).
        n_points: log-SNR points of the ITD estimate.
        recon_levels: noise levels of the reconstruction score.

    ``score_samples``: float64 (N,), higher = more in-distribution.
    """

    def __init__(self, model=None, score="elbo", *, n_terms=None, n_points=64, recon_levels=(100, 300, 500),
                 batch_size=128, resize=False, contamination=0.05, device=None, seed=0, progress=True):
        self.model = model
        self.score = score
        self.n_terms = n_terms
        self.n_points = n_points
        self.recon_levels = recon_levels
        self.batch_size = batch_size
        self.resize = resize
        self.contamination = contamination
        self.device = device
        self.seed = seed
        self.progress = progress

    @property
    def passes_per_image(self) -> int:
        """Network evaluations this score costs per image."""
        check_is_fitted(self, "model_")
        return {"elbo": self.n_terms or self.model_.T, "itd": self.n_points, "recon": len(self.recon_levels),
                "msp": 1, "energy": 1}[self.score]

    def _images(self, X):
        x = as_images(X)
        c, h, w = self.model_.image_shape
        if tuple(x.shape[1:]) != (c, h, w):
            if not self.resize:
                raise ImageInputError(f"images are {tuple(x.shape[1:])} (C, H, W) but the model takes {(c, h, w)}; "
                                      "pass resize=True or align them with oodkit.data.conform")
            x = conform(x, h, c)
        return x

    def fit(self, X, y=None):
        if self.score not in SCORE_KINDS:
            raise ValueError(f"unknown score {self.score!r}; choose one of {sorted(SCORE_KINDS)}")
        if self.model is None:
            raise ValueError(f"the {self.score} detector needs a trained model: train one with "
                             "`oodkit train --model ddpm` (or joint) and pass its checkpoint")
        m = load_model(self.model, device=self.device) if isinstance(self.model, (str, Path)) else self.model.eval()
        if m.kind not in SCORE_KINDS[self.score]:
            raise ValueError(f"the {self.score} score needs a {' or '.join(SCORE_KINDS[self.score])} model, "
                             f"got a {m.kind} model")
        self.model_ = m
        self._cache = {}
        self._set_offset(self.score_samples(X))
        return self

    def score_samples(self, X) -> np.ndarray:
        check_is_fitted(self, "model_")
        x = self._images(X)
        key = fingerprint(x)
        if key not in self._cache:
            self._cache = {key: self._compute(x)}  # keep the latest set only
        return self._cache[key]

    @torch.no_grad()
    def _compute(self, x: torch.Tensor) -> np.ndarray:
        m = self.model_
        device = next(m.parameters()).device
        out = []
        gen = torch.Generator().manual_seed(self.seed)  # the same noise for every set scored
        for xb in tqdm(list(batches(x, self.batch_size)), desc=self.score, disable=not self.progress, leave=False):
            xb = to_float(xb).to(device)
            g = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
            if self.score == "elbo":
                s = -m.elbo_bpd(xb, n_terms=self.n_terms, generator=g)
            elif self.score == "itd":
                s = -itd_nll(xb, discrete_denoiser(m), n_points=self.n_points, generator=g)[0]
            elif self.score == "recon":
                errs = []
                for lev in self.recon_levels:
                    t = torch.full((xb.shape[0],), min(int(lev), m.T), device=device, dtype=torch.long)
                    eps = torch.randn(xb.shape, generator=g).to(device)
                    x_t = m.schedule.q_sample(xb, t, eps)
                    a, sig = m.schedule.coefficients(t, xb)
                    x0_hat = ((x_t - sig * m.eps(x_t, t)) / a).clamp(-1, 1)
                    errs.append(((x0_hat - xb) ** 2).flatten(1).mean(1))
                s = -torch.stack(errs, 1).mean(1)
            else:
                logits = m.classify_logits(xb).double()
                s = torch.softmax(logits, 1).max(1).values if self.score == "msp" else torch.logsumexp(logits, 1)
            out.append(s.double().cpu())
        return torch.cat(out).numpy()
