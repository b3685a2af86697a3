"""Detectors on the contrast models: a DDPM's ELBO, the information-theoretic likelihood
(on a DDPM, or on a CDM through Theorem 3.1), DDPM reconstruction error, and a joint
diffusion model's classifier scores. Unlike the CDM scores, most of these need many
network passes per image: ``passes_per_image`` says how many."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..pretrained import load_model
from ..train_config import MAX_SEED
from ..models.cdm import pad_rows
from ..data.images import batches, fingerprint, to_float
from ..distributed import shared_batches
from ..itd import discrete_denoiser, itd_nll
from ..representation import full_fp32
from ..validation import Any, Bool, Choice, Device, Int, Pair, Real
from .base import BaseDetector, on_device
from .cdm import trained_on
from .scores import class_score
from .table import family_kinds

__all__ = ["DiffusionDetector"]

class DiffusionDetector(BaseDetector):
    """OOD scores from a DDPM, a joint diffusion model or (``itd``) a CDM.

    Args:
        model: a checkpoint path or a loaded model (required: these detectors do not
            train one).
        score: ``"elbo"`` (minus the negative ELBO, bits/dim), ``"itd"`` (``log P(x)`` of
            the 8-bit image, nats, from the discrete information-theoretic estimator), ``"recon"`` (minus the mean
            squared error of one-step reconstructions from ``recon_levels``), ``"msp"``
            (maximum softmax probability) or ``"energy"`` (logsumexp of the class logits).
        n_terms: ELBO terms (None: all T, exact; k: the prior and decoder terms exactly and
            k - 1 stratified KL terms, an unbiased estimate).
        clip_denoised: clip the ELBO's predicted x0 to [-1, 1] (the reference default).
        n_offset: at most this many training images (a seeded subsample) set ``offset_``.
        layout, value_range: as for :class:`CDMDetector`.
        n_points: log-SNR points of the ITD estimate.
        recon_levels: noise levels of the reconstruction score.

    ``score_samples``: float64 (N,), higher = more in-distribution. Every random choice
    (ELBO levels, ITD points, noise images) is fixed by ``seed`` and shared by all images,
    so a score depends on the image alone, not on its batch or the batch size.
    """

    _constraints = {
        "model": Any(), "score": Any(), "n_terms": Int(1, 100_000, none=True), "n_points": Int(1, 100_000),
        "recon_levels": Any(), "clip_denoised": Bool(), "n_offset": Int(1), "batch_size": Int(1, 1_000_000),
        "resize": Bool(), "layout": Choice(("nhwc", "nchw"), none=True), "value_range": Pair(),
        "contamination": Real(0, 0.5, True), "device": Device(), "seed": Int(0, MAX_SEED), "progress": Bool(),
    }

    def __init__(self, model=None, score="elbo", *, n_terms=None, n_points=64, recon_levels=(100, 300, 500),
                 clip_denoised=True, n_offset=256, batch_size=128, resize=False, layout=None, value_range=None,
                 contamination=0.05, device=None, seed=0, progress=False):
        self.model = model
        self.score = score
        self.n_terms = n_terms
        self.n_points = n_points
        self.recon_levels = recon_levels
        self.clip_denoised = clip_denoised
        self.n_offset = n_offset
        self.batch_size = batch_size
        self.resize = resize
        self.layout = layout
        self.value_range = value_range
        self.contamination = contamination
        self.device = device
        self.seed = seed
        self.progress = progress

    @property
    def passes_per_image(self) -> int:
        """Network evaluations this score costs per image."""
        check_is_fitted(self, "model_")
        return {"elbo": min(self.n_terms or self.model_.T, self.model_.T), "itd": self.n_points, "recon": len(self.recon_levels),
                "msp": 1, "energy": 1}[self.score]

    def _check_params(self):
        super()._check_params()
        levels = self.recon_levels
        if not (isinstance(levels, (tuple, list)) and levels and
                all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) and t >= 1 for t in levels)):
            raise ValueError(f"DiffusionDetector parameter recon_levels must be a non-empty list of levels >= 1, "
                             f"got {levels!r}")

    def prepare(self):
        """Load and check the model, enough to score (no threshold: that is :meth:`fit`'s)."""
        self._check_params()
        kinds = family_kinds("diffusion", self.score)
        if kinds is None:
            raise ValueError(f"unknown score {self.score!r}; choose one of elbo, itd, recon, msp, energy")
        if self.model is None:
            raise ValueError(f"the {self.score} detector needs a trained model: train one with "
                             "`oodkit train --model ddpm` (or joint) and pass its checkpoint")
        m = load_model(self.model, device=self.device) if isinstance(self.model, (str, Path)) else \
            on_device(self.model, self.device)
        if m.kind not in kinds:
            raise ValueError(f"the {self.score} score needs a {' or '.join(kinds)} model, "
                             f"got a {m.kind} model")
        self._bind_model(m)
        self._cache = {}
        self.n_features_in_ = int(np.prod(m.image_shape))
        self._remember_fit()
        return self

    def fit(self, X, y=None):
        self.prepare()
        self.align_px_ = None  # fit reads X as given; a Flow records the alignment it fitted under
        # the threshold from a bounded, seeded subsample: these scores cost up to T passes
        x = self._model_images(X, self.model_)
        if x.shape[0] > self.n_offset:
            keep = np.sort(np.random.default_rng(self.seed).choice(x.shape[0], self.n_offset, replace=False))
            x = x[torch.from_numpy(keep)]
        self._set_offset_unseen(self.score_images(x), trained_on(self.model_, x))
        return self

    def _calibration_scores(self, X):
        x = self._model_images(X, self.model_)
        return self.score_images(x), trained_on(self.model_, x, self.align_px_)

    _FIXED_AT_FIT = ("model", "score", "n_terms", "n_points", "recon_levels", "clip_denoised", "n_offset", "seed",
                     "contamination", "device")

    def _restore(self, arrays: dict, model) -> None:
        self._cache = {}

    def score_samples(self, X, shard: bool = True) -> np.ndarray:
        """float64 (N,), higher = more in-distribution. Under ``torchrun`` the batches are
        shared out over the processes and gathered back (the same numbers as one process);
        ``shard=False``: this process scores all of ``X`` (images of its own)."""
        check_is_fitted(self, "model_")
        return self.score_images(self._model_images(X, self.model_), shard)

    def score_images(self, x: torch.Tensor, shard: bool = True) -> np.ndarray:
        """:meth:`score_samples` of images already brought to the model's input (uint8 or
        float (N, C, H, W), aligned as the detector was fitted): what a Flow hands over."""
        check_is_fitted(self, "model_")
        self._check_unchanged()
        # the parameters are part of the key: set_params after fit must not return stale scores
        key = (fingerprint(x), repr(sorted((k, v) for k, v in self.get_params().items() if k != "model")))
        if key not in self._cache:
            self._cache = {key: self._compute(x, shard)}  # keep the latest set only
        return self._cache[key]

    @torch.no_grad()
    def _compute(self, x: torch.Tensor, shard: bool = True) -> np.ndarray:
        m = self.model_
        device = next(m.parameters()).device
        def run(xb):  # short batches padded as the CDM pass pads them: the noise is shared by the rows
            return self._score_batch(m, to_float(pad_rows(xb)).to(device))[: xb.shape[0]]

        with full_fp32():
            out = shared_batches(run, list(batches(x, self.batch_size)), shard, self.progress, self.score)
        return torch.cat(out).numpy()

    def _score_batch(self, m, xb: torch.Tensor) -> torch.Tensor:
        """Scores of one batch (on the model's device), float64 (B,) on the CPU."""
        device = xb.device
        # one quadrature per detector: the same levels, points and noise images for
        # every batch, so that a score is a function of the image alone
        g = torch.Generator().manual_seed(self.seed)
        if self.score == "elbo":
            s = -m.elbo_bpd(xb, n_terms=self.n_terms, generator=g, shared_noise=True,
                            clip_denoised=self.clip_denoised)
        elif self.score == "itd":
            s = -itd_nll(xb, discrete_denoiser(m), n_points=self.n_points, generator=g, discrete=True,
                         shared_noise=True)[0]
        elif self.score == "recon":
            errs = []
            for lev in self.recon_levels:
                t = torch.full((xb.shape[0],), min(int(lev), m.T), device=device, dtype=torch.long)
                eps = torch.randn((1, *xb.shape[1:]), generator=g).to(device).expand_as(xb)
                x_t = m.schedule.q_sample(xb, t, eps)
                a, sig = m.schedule.coefficients(t, xb)
                x0_hat = ((x_t - sig * m.eps(x_t, t)) / a).clamp(-1, 1)
                errs.append(((x0_hat - xb) ** 2).flatten(1).mean(1))
            s = -torch.stack(errs, 1).mean(1)
        else:
            s = class_score(m.classify_logits(xb), self.score)
        return s.double().cpu()
