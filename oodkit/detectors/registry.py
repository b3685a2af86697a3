"""From the detector table to detectors: :func:`make_detector` builds one by name, for a
model, from :data:`~oodkit.detectors.table.TABLE` and the two detector families."""
from __future__ import annotations

import os

from ..pretrained import load_model
from .cdm import CDMDetector
from .diffusion import DiffusionDetector
from .table import TABLE, detector_kinds

__all__ = ["FAMILIES", "DETECTORS", "detector_class", "make_detector"]

# family name (the table's ``family``) -> detector class
FAMILIES = {"cdm": CDMDetector, "diffusion": DiffusionDetector}


def detector_class(name: str, kind: str | None = None) -> type:
    """The class that runs detector ``name`` on a ``kind`` model."""
    return FAMILIES[TABLE[name.partition("@")[0]].family_for(kind)]


# name -> (class, fixed parameters), the shape older code and tests use
DETECTORS = {name: (detector_class(name), d.params) for name, d in TABLE.items()}


def make_detector(name: str, **params):
    """A detector from the registry, e.g. ``make_detector("profile", model="cdm.pt")``
    (a ``@KIND`` suffix, which only chooses among a benchmark's models, is accepted).
    Parameters the detector's class does not take are dropped."""
    kinds = detector_kinds(name)  # unknown names and kinds fail here
    info = TABLE[name.partition("@")[0]]
    model = params.get("model")
    if isinstance(info.family, dict) and isinstance(model, (str, os.PathLike)):  # a path or name: its kind picks the class
        params["model"] = model = load_model(model, device=params.get("device"))
    kind = getattr(model, "kind", None) or kinds[0]
    cls = FAMILIES[info.family_for(kind)]
    accepted = cls().get_params()
    return cls(**{**{k: v for k, v in params.items() if k in accepted}, **info.params})
