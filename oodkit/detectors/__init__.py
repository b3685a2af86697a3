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
    """Model kinds a registered detector can run on."""
    cls, fixed = DETECTORS[name]
    return ("cdm",) if cls is CDMDetector else SCORE_KINDS[fixed["score"]]


def make_detector(name: str, **params):
    """A detector from the registry, e.g. ``make_detector("profile", model="cdm.pt")``."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    cls, fixed = DETECTORS[name]
    if cls is DiffusionDetector:  # profile options do not apply
        params = {k: v for k, v in params.items() if k in DiffusionDetector().get_params()}
    return cls(**{**fixed, **params})
