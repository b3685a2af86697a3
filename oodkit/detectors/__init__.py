"""Detectors, scikit-learn style, and the registry the benchmark runner uses."""
from .base import BaseDetector
from .cdm import CDMDetector
from .diffusion import SCORE_KINDS, DiffusionDetector

__all__ = ["BaseDetector", "CDMDetector", "DiffusionDetector", "DETECTORS", "make_detector", "detector_kinds"]

# name -> (class, fixed parameters). CDM detectors first: one forward pass serves them all.
DETECTORS = {
    "loglik": (CDMDetector, {"score": "loglik"}),
    "posterior": (CDMDetector, {"score": "posterior"}),
    "expected-t": (CDMDetector, {"score": "expected-t"}),
    "typicality": (CDMDetector, {"score": "typicality"}),
    "complexity": (CDMDetector, {"score": "complexity"}),
    "profile": (CDMDetector, {"score": "profile", "density": "knn"}),
    "profile-gmm": (CDMDetector, {"score": "profile", "density": "gmm"}),
    "elbo": (DiffusionDetector, {"score": "elbo"}),
    "elbo-k": (DiffusionDetector, {"score": "elbo", "n_terms": 50}),
    "itd": (DiffusionDetector, {"score": "itd"}),
    "recon": (DiffusionDetector, {"score": "recon"}),
    "msp": (DiffusionDetector, {"score": "msp"}),
    "energy": (DiffusionDetector, {"score": "energy"}),
}


def detector_kinds(name: str) -> tuple:
    """Model kinds a registered detector can run on, preferred first. ``NAME@KIND``
    (e.g. ``itd@cdm``) names a detector pinned to one kind of model."""
    base, _, kind = name.partition("@")
    if base not in DETECTORS:
        raise ValueError(f"unknown detector {base!r}; choose from {', '.join(DETECTORS)}")
    cls, fixed = DETECTORS[base]
    kinds = ("cdm",) if cls is CDMDetector else SCORE_KINDS[fixed["score"]]
    if kind and kind not in kinds:
        raise ValueError(f"detector {base} runs on a {' or '.join(kinds)} model, not {kind!r}")
    return (kind,) if kind else kinds


def make_detector(name: str, **params):
    """A detector from the registry, e.g. ``make_detector("profile", model="cdm.pt")``
    (a ``@KIND`` suffix, which only chooses among a benchmark's models, is accepted)."""
    detector_kinds(name)  # unknown names and kinds fail here
    cls, fixed = DETECTORS[name.partition("@")[0]]
    if cls is DiffusionDetector:  # profile options do not apply
        params = {k: v for k, v in params.items() if k in DiffusionDetector().get_params()}
    return cls(**{**fixed, **params})
