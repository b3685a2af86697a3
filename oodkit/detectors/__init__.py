"""Detectors, scikit-learn style, and the registry the benchmark runner uses."""
from .base import BaseDetector
from .cdm import CDMDetector
from .scores import SCORERS

__all__ = ["BaseDetector", "CDMDetector", "DETECTORS", "make_detector"]

# name -> (class, fixed parameters)
DETECTORS = {
    "loglik": (CDMDetector, {"score": "loglik"}),
    "posterior": (CDMDetector, {"score": "posterior"}),
    "expected-t": (CDMDetector, {"score": "expected-t"}),
    "typicality": (CDMDetector, {"score": "typicality"}),
    "complexity": (CDMDetector, {"score": "complexity"}),
    "profile": (CDMDetector, {"score": "profile", "density": "knn"}),
    "profile-gmm": (CDMDetector, {"score": "profile", "density": "gmm"}),
}


def make_detector(name: str, **params):
    """A detector from the registry, e.g. ``make_detector("profile", model="cdm.pt")``."""
    if name not in DETECTORS:
        raise ValueError(f"unknown detector {name!r}; choose from {', '.join(DETECTORS)}")
    cls, fixed = DETECTORS[name]
    return cls(**{**fixed, **params})
