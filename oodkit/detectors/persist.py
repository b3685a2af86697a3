"""Fitted detectors from files: each entry of a detector file (:mod:`.fileformat`) is
checked, its model loaded and verified, and the detector rebuilt by its own
``set_state``."""
from __future__ import annotations

from pathlib import Path

from .fileformat import (FORMAT, DetectorFileError, check_digest, check_entry, load_model_entry, read_file,
                         save_detectors)
from .registry import FAMILIES

__all__ = ["save_detectors", "load_detectors", "load_detector", "DetectorFileError", "FORMAT"]

CLASSES = {cls.__name__: cls for cls in FAMILIES.values()}


def load_detectors(path, device=None, progress: bool = False) -> dict:
    """``{name: fitted detector}`` from a detector file, ready to score; or, for the name
    of a pretrained model shipped with them (``oodkit models``), its bundled detectors."""
    from ..devices import resolve_device
    from ..pretrained import check_reference, bundled_detectors

    check_reference(path, "load_detector")
    if device is not None:
        device = resolve_device(device)
    if not Path(path).is_file():
        shipped = bundled_detectors(path)
        if shipped is None and not Path(path).expanduser().exists():
            from ..validation import did_you_mean
            from ..pretrained import list_models

            names = [m["name"] for m in list_models() if m.get("detectors")]
            raise DetectorFileError(f"detector file not found: {path}{did_you_mean(str(path), names)} (a file from "
                                    f"`oodkit fit`, or a pretrained name: {', '.join(names)})")
        path = shipped or path
    try:
        return _load_detectors(path, device, progress)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise DetectorFileError(f"{path} is not a valid detector file ({type(e).__name__}: {e})") from None


def _load_detectors(path, device, progress) -> dict:
    header, arrays = read_file(path)
    if not isinstance(header.get("detectors"), dict) or not header["detectors"]:
        raise DetectorFileError(f"{path} holds no detectors")
    if not isinstance(header.get("models"), dict):
        raise DetectorFileError(f"{path} has no valid model entry")
    models, out = {}, {}
    for name, e in header["detectors"].items():
        calibration = check_entry(path, name, e, arrays)
        cls = CLASSES.get(e.get("class"))
        if cls is None:
            raise DetectorFileError(f"{path}: unknown detector class {e.get('class')!r}")
        if not isinstance(header["models"].get(e["model"]), dict):
            raise DetectorFileError(f"{path}: detector {name!r} refers to model {e['model']!r}, which the file lacks")
        if e["model"] not in models:
            models[e["model"]] = load_model_entry(header["models"][e["model"]], arrays, Path(path).parent, device,
                                                   path)
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in e["params"].items()}
        unknown = set(params) - set(cls().get_params())
        if unknown:
            raise DetectorFileError(f"{path}: unknown parameters {sorted(unknown)} for {e['class']}")
        det = cls(model=models[e["model"]], **{**params, "device": device, "progress": progress})
        state = {"offset": float(e["offset"]), "threshold_source": e.get("threshold_source", "contamination"),
                 "calibration": calibration, "align_px": e.get("align_px"), "arithmetic": e.get("arithmetic", "fp32"),  # files from before the record: all fp32
                 "arrays": {k: arrays[f"{e['key']}/{k}"] for k in e["state"]}}
        try:
            det.set_state(state, models[e["model"]])
        except ValueError as err:  # damaged, or a state the scorer no longer has (fitted by another rule)
            msg = str(err)
            raise DetectorFileError(f"{path}: detector {name!r}{'' if msg.startswith(':') else ' '}{msg}") from None
        # last: the checks above name what is wrong more precisely when they can
        check_digest(path, name, e, arrays, header["models"][e["model"]])
        out[name] = det
    return out


def load_detector(path, name: str | None = None, device=None, progress: bool = False):
    """The fitted detector in ``path`` (``name`` picks one when the file holds several)."""
    dets = load_detectors(path, device=device, progress=progress)
    if name is None:
        if len(dets) != 1:
            raise DetectorFileError(f"{path} holds {len(dets)} detectors ({', '.join(dets)}): pass name=")
        return next(iter(dets.values()))
    if name not in dets:
        raise DetectorFileError(f"{path} holds no detector {name!r} ({', '.join(dets)})")
    return dets[name]
