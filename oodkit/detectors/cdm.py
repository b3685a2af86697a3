"""CDMDetector: every single-forward-pass CDM score behind the scikit-learn API."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted

from ..pretrained import load_model
from ..train_config import MAX_SEED
from ..data.images import as_images, conform
from ..models import has_class_head, has_rotation_head
from ..nn.unet import IMAGE_SIZES
from ..representation import PRECISIONS, Representation, arithmetic, represent
from ..training import TrainConfig, fit_model
from ..validation import Any, Bool, Choice, Device, Int, Pair, PathLike, Real
from .base import ArithmeticWarning, BaseDetector, on_device, replayable
from .scores import MAX_BANK, SCORERS, Complexity, FeatureGauss, FeatureKNN, Fused, Profile, Upright, profile_levels

__all__ = ["CDMDetector", "trained_on"]


def _training_hashes(model):
    return (getattr(model, "data_info", None) or {}).get("image_hashes")


def records_training_images(model) -> bool:
    """Whether the model recorded which images it trained on (oodkit 0.3 on), so that
    :func:`trained_on` can tell them apart."""
    return _training_hashes(model) is not None


def trained_on(model, x, align_px: int | None = None) -> np.ndarray | None:
    """(N,) bool: which images of ``x`` (at the model's size) the model recorded training
    on; None when it recorded nothing (models trained before oodkit 0.3), or when ``x``
    came through an alignment below the model's size (``align_px``): resampled pixels
    match no recorded image, whether the network saw it or not."""
    from ..data.images import image_hashes

    known = _training_hashes(model)
    if known is None or (align_px is not None and align_px < model.image_shape[-1]):
        return None
    return np.isin(image_hashes(x), np.asarray(known))


def _search_device(model):
    """Where the kNN scores search their bank: the model's GPU, where its representation
    was computed; None (scikit-learn, on the CPU) for a model on the CPU."""
    device = next(model.parameters()).device
    return None if device.type == "cpu" else device


class CDMDetector(BaseDetector):
    """Out-of-distribution detector on a classification diffusion model.

    Args:
        model: a checkpoint path, a trained :class:`~oodkit.CDM`, or None to train one
            on the data given to :meth:`fit` (with ``net``, ``steps``, ``T``,
            ``schedule``, ``image_size`` (default: the data's), ``batch_size``, ``seed``;
            saved to ``model_out`` if set).
        score: ``"fused"`` (the default; see below), ``"loglik"`` (Eq. 10), ``"posterior"`` (log p(t=0|x)), ``"expected-t"``
            (minus E[t|x]), ``"profile"`` (density of the multiscale likelihood profile),
            ``"features"`` (deep kNN on the pooled decoder output), ``"features-gauss"``
            (their Mahalanobis distance), ``"fused"`` (profile, complexity and the features'
            Mahalanobis score, or on a model with a class head their kNN distance,
            combined by Fisher's rule on ID p-values),
            ``"typicality"`` or ``"complexity"`` (likelihood + PNG bits); for a CDM trained
            with a class head, ``"msp"`` (maximum softmax probability) and ``"energy"``
            (logsumexp of its class logits), from the same pass.
        n_levels, density, n_neighbors, n_components: the profile's levels and density
            model (``"knn"`` or ``"gmm"``).
        max_bank: the most ID training rows a kNN score searches (``profile``, ``features``
            and their parts in ``fused``; default 100,000, None: all). Fitting costs
            (training images) x (bank rows), so above it the cost grows linearly; every
            training image still counts towards the threshold and the Gaussian statistics.
        resize: bring images of another size or channel count to the model's (see
            :func:`oodkit.data.conform`); otherwise such input is refused.
        layout, value_range: passed to :func:`oodkit.data.as_images` for arrays whose
            layout is ambiguous (``"nhwc"`` / ``"nchw"``) or floats not in [-1, 1]
            (``(0, 1)``, ``(0, 255)``).
        contamination: share of training data below ``offset_`` (the predict threshold).
        precision: the network's arithmetic in every pass of this detector, fitting and
            scoring alike (``"fp32"``, ``"tf32"`` or ``"bf16"``; see
            :data:`oodkit.representation.PRECISIONS`): the fitted statistics and the
            threshold hold for scores made in it. ``arithmetic_`` records what the
            fitting passes really ran in (TF32 is fp32 off CUDA).

    Inputs ``X``: uint8 pixel arrays (N, H, W[, C]) or (N, C, H, W), float (N, C, H, W)
    in [-1, 1], a torch Dataset or DataLoader. ``score_samples`` returns float64 (N,),
    higher = more in-distribution; units are nats for loglik and typicality, bits for
    complexity.
    """

    reads_representation = True
    # every parameter's type and range, checked at fit and when a detector file is read
    _constraints = {
        "model": Any(), "score": Any(),  # score: checked against the scorers with its own message
        "net": Choice(("tiny", "compact", "small", "paper")), "steps": Int(1), "T": Int(2, 100_000),
        "schedule": Choice(("uniform", "linear", "cosine")), "image_size": Int(*IMAGE_SIZES, none=True),
        "batch_size": Int(1, 1_000_000), "n_levels": Int(1, 100_000), "density": Choice(("knn", "gmm")),
        "n_neighbors": Int(1, 100_000), "n_components": Int(1, 100_000),
        "max_bank": Int(2, none=True), "resize": Bool(),
        "layout": Choice(("nhwc", "nchw"), none=True), "value_range": Pair(), "contamination": Real(0, 0.5, True),
        "device": Device(), "seed": Int(0, MAX_SEED), "progress": Bool(), "model_out": PathLike(),
        "precision": Choice(tuple(PRECISIONS)),
    }

    def __init__(self, model=None, score="fused", *, net="small", steps=2000, T=1000, schedule="uniform",
                 image_size=None, batch_size=128, n_levels=20, density="knn", n_neighbors=5, n_components=10,
                 max_bank=MAX_BANK, resize=False, layout=None, value_range=None, contamination=0.05, device=None,
                 seed=0, progress=False, model_out=None, precision="fp32"):
        self.model = model
        self.score = score
        self.net = net
        self.steps = steps
        self.T = T
        self.schedule = schedule
        self.image_size = image_size
        self.batch_size = batch_size
        self.n_levels = n_levels
        self.density = density
        self.n_neighbors = n_neighbors
        self.n_components = n_components
        self.max_bank = max_bank
        self.resize = resize
        self.layout = layout
        self.value_range = value_range
        self.contamination = contamination
        self.device = device
        self.seed = seed
        self.progress = progress
        self.model_out = model_out
        self.precision = precision

    # -- helpers ----------------------------------------------------------------------
    def _load_model(self, X):
        if self.model is None:
            x = as_images(X, layout=self.layout, value_range=self.value_range)
            if self.image_size is not None:
                x = conform(x, self.image_size, x.shape[1])
            cfg = TrainConfig(steps=self.steps, batch_size=min(64, self.batch_size), seed=self.seed)
            return fit_model(x, net=self.net, T=self.T, schedule=self.schedule, config=cfg, out=self.model_out,
                             device=self.device, progress=self.progress)
        if isinstance(self.model, (str, Path)):
            model = load_model(self.model, device=self.device)
            if not hasattr(model, "logits"):
                raise ValueError(f"{self.model} is a {getattr(model, 'kind', type(model).__name__)} model; "
                                 "CDMDetector needs a cdm (make_detector picks the detector class of a model's kind)")
            return model
        if isinstance(self.model, torch.nn.Module) and hasattr(self.model, "logits"):
            return on_device(self.model, self.device)
        raise TypeError(f"model must be a checkpoint path, a CDM or None, got {type(self.model).__name__}")

    def _make_scorer(self, model):
        self._check_score()
        levels = profile_levels(model.T, model.schedule.alpha_bar.numpy(), self.n_levels)
        if self.score == "profile":
            return Profile(levels, self.density, self.n_neighbors, self.n_components, self.seed, self.max_bank,
                           _search_device(model))
        if self.score == "features":
            return self._knn(model)
        if self.score == "fused":
            return Fused(self._fused_components(model, levels))
        return SCORERS[self.score]()

    def _knn(self, model) -> FeatureKNN:
        return FeatureKNN(self.n_neighbors, self.max_bank, self.seed, _search_device(model))

    def _fused_components(self, model, levels) -> dict:
        """What ``fused`` combines, by the one rule (benchmarks/results/fusion_variants.md):

        * plain CDM: profile + complexity + the features' Mahalanobis score, which raised the
          worst far-OOD pair over their kNN distance;
        * a class head clusters the features by class, and one Gaussian's centre lies between
          the clusters, where unseen classes land (below chance on held-out classes for every
          labelled model): profile + complexity + the kNN distance on normalised features;
        * a label-free rotation head (issue 19): profile + the features' kNN distance + the
          upright score, chosen on held-out Fashion-MNIST classes (0.9246 against 0.9077 for
          the class-head rule, every far and synthetic set >= 0.999), confirmed on held-out
          MNIST digits (the best of five fusions, 0.684 against 0.595 for the same training
          without the head), not confirmed on CIFAR-10 after two CPU fine-tunes (408 and 645
          steps: the held-out classes are easier to set upright than the ID ones);
        * a contrastive projection (SimCLR-style, the other label-free candidate) is read as a
          plain CDM: on the same split no fusion of its features reached the plain model's
          0.890 (best: profile + complexity + both feature scores, 0.874), so it has no rule
          of its own (benchmarks/README.md, the contrastive candidate).
        """
        profile = Profile(levels, "knn", self.n_neighbors, seed=self.seed, max_bank=self.max_bank,
                          search_device=_search_device(model))
        knn = self._knn(model)
        if has_rotation_head(model):
            return {"profile": profile, "features-knn": knn, "upright": Upright()}
        if has_class_head(model):
            return {"profile": profile, "complexity": Complexity(), "features-knn": knn}
        return {"profile": profile, "complexity": Complexity(), "features": FeatureGauss()}

    def representation(self, X) -> Representation:
        """One cached forward pass over ``X`` (after fit)."""
        check_is_fitted(self, "model_")
        return self._pass(self._model_images(X, self.model_))

    def _pass(self, x: torch.Tensor, desc: str = "forward") -> Representation:
        """The forward pass of converted images ``x`` in this detector's arithmetic."""
        return represent(self.model_, x, self.batch_size, self.device, progress=self.progress, desc=desc,
                         precision=self.precision)

    # -- the estimator contract ---------------------------------------------------------
    def _check_score(self):
        if self.score not in SCORERS:
            raise ValueError(f"unknown score {self.score!r}; choose one of {', '.join(sorted(SCORERS))} "
                             "(profile-gmm is score='profile', density='gmm'; make_detector takes every "
                             "detector name of oodkit.detectors.TABLE)")

    def _check_params(self):
        super()._check_params()
        self._check_score()
        if self.max_bank is not None and self.max_bank <= self.n_neighbors:
            raise ValueError(f"max_bank={self.max_bank} must exceed n_neighbors={self.n_neighbors}")

    def fit(self, X, y=None):
        """Load or train the CDM, then fit the score's statistics on ID images ``X``.

        The default threshold ``offset_`` comes from out-of-sample scores of ``X``
        (leave-one-out or cross-fitted statistics). When the model recorded the images it
        trained on and some of ``X`` are among them, only the others set the threshold: a
        network scores its own training images too well. With too few of those, a warning
        says so; :meth:`calibrate` on held-out ID images gives the guarantee."""
        self._check_params()
        X = replayable(X)  # read twice when the model is trained here
        self._bind_model(self._load_model(X))
        self.align_px_ = None  # fit reads X as given; a Flow records the alignment it fitted under
        x = self._model_images(X, self.model_)
        return self.fit_representation(self._pass(x, "forward (fit)"), seen=trained_on(self.model_, x))

    def fit_representation(self, rep: Representation, seen=None):
        """Fit on a precomputed :class:`Representation` of ID training images (one
        forward pass of this detector's model, shared by every detector on it).
        ``seen``: (N,) bool, the images the network was trained on (see :meth:`fit`)."""
        self._check_params()
        if not self._model_is_current():
            if self.model is None:
                raise ValueError("fit_representation needs a model (model=...); fit(X) trains one")
            self._bind_model(self._load_model(None))
        self.align_px_ = None  # the representation's images are as given; a Flow records its alignment after
        device_type = next(self.model_.parameters()).device.type
        wanted = arithmetic(self.precision, device_type)
        if rep.precision != wanted:  # statistics and threshold would claim an arithmetic they were not made in
            raise ValueError(f"the representation ran in {rep.precision} and this detector's precision "
                             f"{self.precision!r} runs in {wanted} on {device_type}: make the representation in "
                             f"{wanted} on the model's device, or give the detector the precision it ran in")
        if len(rep) > 1 and bool((rep.images == rep.images[:1]).all()):
            raise ValueError(f"the {len(rep)} fitting images are all the same image: ID statistics need varied "
                             "in-distribution images")
        self.scorer_ = self._make_scorer(self.model_).fit(rep)
        self.arithmetic_ = rep.precision
        self._remember_fit()
        train_scores = self.scorer_.train_score(rep) if hasattr(self.scorer_, "train_score") else self.scorer_.score(rep)
        self._set_offset_unseen(np.asarray(train_scores, dtype=np.float64), seen)
        self.n_features_in_ = int(np.prod(self.model_.image_shape))
        return self

    def _fitted_arrays(self) -> dict:
        scorer = self.scorer_
        return scorer.get_state() if hasattr(scorer, "get_state") else {}

    def _restore(self, arrays: dict, model) -> None:
        from .table import TABLE, head_requirement

        need = head_requirement(self.score) if self.score in TABLE else None
        if need and not need[1](model):
            raise ValueError(f"({self.score}) needs a model with that head, and the file's model has none "
                             f"(a {need[0]} is needed)")
        self.scorer_ = self._make_scorer(model)
        if hasattr(self.scorer_, "set_state"):
            try:
                self.scorer_.set_state(arrays)
            except ValueError as err:
                raise ValueError(f"({self.score}) {err}") from None
        dim = self.scorer_.feature_dim() if hasattr(self.scorer_, "feature_dim") else None
        if dim is not None and dim != getattr(model.net, "feature_channels", dim):
            raise ValueError(f"was fitted on {dim} features and its model gives {model.net.feature_channels}: "
                             "refit it with `oodkit fit`")

    def prepare(self):
        """Load the model and make a score that fits no ID statistics ready to use without
        :meth:`fit` (no threshold then: ``predict`` needs fit or a detector file)."""
        self._check_params()
        self._bind_model(self._load_model(None))
        scorer = self._make_scorer(self.model_)
        if hasattr(scorer, "get_state"):
            raise ValueError(f"the {self.score} score fits ID statistics: call fit with ID training images")
        self.scorer_ = scorer
        self._remember_fit()
        self.n_features_in_ = int(np.prod(self.model_.image_shape))
        return self

    def score_samples(self, X) -> np.ndarray:
        """float64 (N,), higher = more in-distribution."""
        return self.score_representation(self.representation(X))

    def _calibration_scores(self, X):
        x = self._model_images(X, self.model_)
        return (self.score_representation(self._pass(x, "forward (calibration)")),
                trained_on(self.model_, x, self.align_px_))

    _FIXED_AT_FIT = ("score", "n_levels", "density", "n_neighbors", "n_components", "seed", "max_bank", "model",
                     "device", "contamination", "precision")
    # what made the model when the detector trained its own (model=None); nothing otherwise
    _TRAINING = ("net", "steps", "T", "schedule", "image_size", "batch_size")

    def _fixed_names(self) -> tuple:
        return self._FIXED_AT_FIT + (self._TRAINING if self.model is None else ())

    def score_representation(self, rep: Representation) -> np.ndarray:
        """Score a precomputed :class:`Representation` without running the network; an
        :class:`ArithmeticWarning` when it ran in another arithmetic than the fit's."""
        check_is_fitted(self, "scorer_")
        self._check_unchanged()
        fitted_in = getattr(self, "arithmetic_", None)  # None: no statistics (prepare)
        if fitted_in is not None and rep.precision != fitted_in:
            warnings.warn(ArithmeticWarning(fitted_in, rep.precision), stacklevel=2)
        return np.asarray(self.scorer_.score(rep), dtype=np.float64)
