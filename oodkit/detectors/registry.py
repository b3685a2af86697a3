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


def check_precision(cls, name: str, precision: str) -> None:
    """A detector of a family without a ``precision`` parameter (the diffusion family runs
    its own passes, in fp32) is refused another arithmetic rather than silently run in fp32."""
    if precision != "fp32" and "precision" not in cls().get_params():
        raise ValueError(f"precision {precision} applies to the detectors that read a CDM's one pass; {name} runs "
                         "its own passes in fp32: use fp32 for it (a file of its own)")


def make_detector(name: str, **params):
    """A detector from the registry, e.g. ``make_detector("profile", model="cdm.pt")``
    (a ``@KIND`` suffix, which only chooses among a benchmark's models, is accepted).
    Parameters that another detector family takes and this one does not are dropped (one
    set of settings can make every detector of a run); a name no family takes, or a value
    for a parameter the table fixes for the detector (``score`` of ``loglik``, ``n_terms`` of
    ``elbo-k``), is a TypeError."""
    if not isinstance(name, str):
        raise TypeError(f"make_detector takes a detector name (str), got {type(name).__name__}")
    kinds = detector_kinds(name)  # unknown names and kinds fail here
    info = TABLE[name.partition("@")[0]]
    known = set().union(*(cls().get_params() for cls in FAMILIES.values()))
    unknown = sorted(set(params) - known)
    if unknown:
        raise TypeError(f"make_detector({name!r}) got unknown parameters {unknown}; detectors take {sorted(known)}")
    defining = info.params  # what makes the entry itself (table_name reads them back)
    fixed = [k for k, v in params.items() if k in defining and defining[k] != v]
    if fixed:
        raise TypeError(f"{name!r} fixes {', '.join(f'{k}={defining[k]!r}' for k in fixed)}; "
                        f"drop {', '.join(fixed)} or choose another detector")
    model = params.get("model")
    if isinstance(info.family, dict) and isinstance(model, (str, os.PathLike)):  # a path or name: its kind picks the class
        params["model"] = model = load_model(model, device=params.get("device"))
    kind = getattr(model, "kind", None) or kinds[0]
    cls = FAMILIES[info.family_for(kind)]
    accepted = cls().get_params()
    check_precision(cls, name, params.get("precision", "fp32"))
    return cls(**{**{k: v for k, v in params.items() if k in accepted}, **info.params})
