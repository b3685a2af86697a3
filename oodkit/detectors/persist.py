"""Fitted detectors as files, without pickle.

One ``.npz`` file holds one or more fitted detectors: a JSON header (format, version,
each detector's class, parameters, threshold and model reference) and plain float
arrays for the fitted statistics, read back with ``allow_pickle=False``. The model is
referenced by path (or pretrained name) and SHA-256, checked at load time, or embedded
as checkpoint bytes (loaded with ``weights_only=True``). Anything else is refused.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["save_detectors", "load_detectors", "load_detector", "DetectorFileError", "FORMAT"]

FORMAT, VERSION = "oodkit-detector", 4
READABLE = {4}
class DetectorFileError(ValueError):
    """A file that is not a sound oodkit detector file."""


def _model_entry(det, embed: bool, arrays: dict, key: str, base: Path) -> dict:
    from ..checkpoint import file_sha256, save_checkpoint

    model = det.model_
    path = getattr(model, "checkpoint_path", None)
    loaded_sha = getattr(model, "checkpoint_sha256", None)
    # by reference only when the file still holds the weights the model was loaded from
    if path and not embed and loaded_sha and Path(path).is_file() and file_sha256(path) == loaded_sha:
        ref = getattr(model, "reference", None) or (det.model if isinstance(det.model, (str, Path)) else path)
        path = Path(path).resolve()
        return {"ref": str(ref), "path": str(path), "relpath": os.path.relpath(path, base.resolve()),
                "sha256": loaded_sha}
    with tempfile.TemporaryDirectory() as tmp:  # embed the weights as checkpoint bytes
        save_checkpoint(Path(tmp) / "m.pt", model, data=getattr(model, "data_info", None))
        arrays[key] = np.frombuffer((Path(tmp) / "m.pt").read_bytes(), dtype=np.uint8)
    return {"embedded": key}


def save_detectors(path, detectors: dict, embed_model: bool = False) -> Path:
    """Write fitted detectors ``{name: detector}`` to ``path`` (.npz), atomically."""
    from ..atomic import atomic_write

    header, arrays, models = {"format": FORMAT, "version": VERSION, "detectors": {}}, {}, {}
    for i, (name, det) in enumerate(detectors.items()):
        if not hasattr(det, "offset_"):
            raise ValueError(f"detector {name!r} is not fitted: call fit first")
        mid = id(det.model_)
        if mid not in models:
            models[mid] = f"model{len(models)}"
            header.setdefault("models", {})[models[mid]] = _model_entry(
                det, embed_model, arrays, f"{models[mid]}/checkpoint", Path(path).parent)
        # the model is stored apart; device and progress belong to the machine that loads it
        params = {k: v for k, v in det.get_params().items() if k not in ("model", "device", "progress")}
        entry = {"class": type(det).__name__, "params": json.loads(json.dumps(params, default=list)),
                 "offset": det.offset_, "threshold_source": getattr(det, "threshold_source_", "contamination"),
                 "model": models[mid], "state": []}
        scorer = getattr(det, "scorer_", None)
        if scorer is not None and hasattr(scorer, "get_state"):
            for k, v in scorer.get_state().items():
                arrays[f"det{i}/{k}"] = np.asarray(v, dtype=np.float64)
                entry["state"].append(k)
        arrays[f"det{i}/__calibration__"] = np.asarray(det.calibration_scores_, dtype=np.float64)
        entry["key"] = f"det{i}"
        entry["sha256"] = _digest(entry, arrays, header["models"][models[mid]])
        header["detectors"][name] = entry
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue())


def _read(path) -> tuple[dict, dict]:
    from ..validation import regular_file

    path = regular_file(path, "detector file", DetectorFileError)

    from ..data.sources import load_plain_npz

    arrays = load_plain_npz(path, DetectorFileError, "a detector file (not an .npz archive)")
    try:
        header = json.loads(arrays.pop("__header__").tobytes().decode())
    except (KeyError, UnicodeDecodeError, ValueError, RecursionError, AttributeError, MemoryError):
        raise DetectorFileError(f"{path} is not an oodkit detector file (no valid header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DetectorFileError(f"{path} is not an oodkit detector file")
    version = header.get("version")
    if version in (1, 2, 3):
        raise DetectorFileError(f"{path} has detector format version {version}, which holds no calibration scores "
                                "(conformal thresholds and p-values need them): refit it with `oodkit fit`")
    if version not in READABLE:
        raise DetectorFileError(f"{path} has detector format version {version!r}; this oodkit reads "
                                f"{sorted(READABLE)}: refit it with `oodkit fit`")
    return header, arrays


def _digest(entry: dict, arrays: dict, model_entry: dict) -> str:
    """SHA-256 of one detector's header values, its arrays and its model's entry (and
    embedded weights): damage or an edit by hand shows. It is a checksum, not a signature:
    whoever can write the file can recompute it."""
    import hashlib

    h = hashlib.sha256(json.dumps([{k: v for k, v in entry.items() if k != "sha256"}, model_entry],
                                  sort_keys=True).encode())
    owned = [a for a in arrays if a.startswith(entry["key"] + "/")]
    if isinstance(model_entry, dict) and model_entry.get("embedded") in arrays:
        owned.append(model_entry["embedded"])
    for k in sorted(owned):
        v = np.ascontiguousarray(arrays[k])
        h.update(f"{k}|{v.dtype.str}|{v.shape}|".encode())
        h.update(v.tobytes())
    return h.hexdigest()


_ENTRY_TYPES = {"class": str, "params": dict, "model": str, "state": list, "key": str, "sha256": str}


def _check_entry(path, name: str, e, arrays: dict) -> np.ndarray:
    """The header entry of one detector and its arrays, checked before use: types,
    finiteness, a threshold that is one of its calibration scores. Returns the sorted
    calibration scores."""
    if not isinstance(e, dict):
        raise DetectorFileError(f"{path}: detector {name!r} is not a valid entry")
    for k, t in _ENTRY_TYPES.items():
        if not isinstance(e.get(k), t):
            raise DetectorFileError(f"{path}: detector {name!r} has no valid {k!r} (a {t.__name__} is needed)")
    if not all(isinstance(k, str) and f"{e['key']}/{k}" in arrays for k in e["state"]):
        raise DetectorFileError(f"{path}: detector {name!r} names state arrays the file does not hold")
    off = e.get("offset")
    if isinstance(off, bool) or not isinstance(off, (int, float)) or not np.isfinite(off):
        raise DetectorFileError(f"{path}: detector {name!r} has threshold (offset) {off!r}; a finite number is needed")
    cal = arrays.get(f"{e['key']}/__calibration__")
    if cal is None:
        raise DetectorFileError(f"{path}: detector {name!r} has no calibration scores: refit it with `oodkit fit`")
    if cal.dtype.kind != "f" or cal.ndim != 1 or len(cal) == 0 or not np.isfinite(cal).all() or (np.diff(cal) < 0).any():
        raise DetectorFileError(f"{path}: detector {name!r} has damaged calibration scores (a sorted, finite, "
                                "non-empty list is needed): refit it with `oodkit fit`")
    if not np.isin(float(off), cal):
        raise DetectorFileError(f"{path}: detector {name!r} has a threshold (offset {off!r}) that is none of its "
                                "calibration scores: the file was edited; refit it with `oodkit fit`")
    return cal.astype(np.float64)


def _check_digest(path, name: str, e: dict, arrays: dict, model_entry: dict) -> None:
    if _digest(e, arrays, model_entry) != e["sha256"]:
        raise DetectorFileError(f"{path}: detector {name!r} does not match its SHA-256: the file was edited or "
                                "damaged; refit it with `oodkit fit`")


def _load_model(entry: dict, arrays: dict, base: Path, device):
    from ..checkpoint import file_sha256
    from ..pretrained import load_model, resolve_model

    if "embedded" in entry:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "m.pt"
            p.write_bytes(arrays[entry["embedded"]].tobytes())
            m = load_model(p, device=device)
            m.checkpoint_path = None
            return m
    def candidates():
        yield Path(entry["path"])
        yield base / entry.get("relpath", entry["path"])
        try:  # last: a registered name may have to be downloaded
            yield Path(resolve_model(entry["ref"]))
        except Exception:  # a name that no longer resolves is just one candidate less
            pass

    looked, changed = [], None
    for p in candidates():
        if p in looked:
            continue
        looked.append(p)
        if p.is_file():  # each file hashed once, and the first match is loaded
            if file_sha256(p) == entry["sha256"]:
                return load_model(p, device=device)
            changed = changed or p
    if changed is not None:
        raise DetectorFileError(f"the detector's model {changed} has changed since the detector was fitted "
                                "(SHA-256 differs): refit the detector")
    raise DetectorFileError(f"the detector's model {entry['ref']} is not found (looked at "
                            f"{', '.join(str(c) for c in looked)})")


def load_detectors(path, device=None, progress: bool = False) -> dict:
    """``{name: fitted detector}`` from a detector file, ready to score."""
    try:
        return _load_detectors(path, device, progress)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise DetectorFileError(f"{path} is not a valid detector file ({type(e).__name__}: {e})") from None


def _load_detectors(path, device, progress) -> dict:
    from . import CDMDetector, DiffusionDetector

    classes = {"CDMDetector": CDMDetector, "DiffusionDetector": DiffusionDetector}
    header, arrays = _read(path)
    if not isinstance(header.get("detectors"), dict) or not header["detectors"]:
        raise DetectorFileError(f"{path} holds no detectors")
    models = {}
    out = {}
    if not isinstance(header.get("models"), dict):
        raise DetectorFileError(f"{path} has no valid model entry")
    for name, e in header["detectors"].items():
        calibration = _check_entry(path, name, e, arrays)
        cls = classes.get(e.get("class"))
        if cls is None:
            raise DetectorFileError(f"{path}: unknown detector class {e.get('class')!r}")
        if not isinstance(header["models"].get(e["model"]), dict):
            raise DetectorFileError(f"{path}: detector {name!r} refers to model {e['model']!r}, which the file lacks")
        if e["model"] not in models:
            models[e["model"]] = _load_model(header["models"][e["model"]], arrays, Path(path).parent, device)
        model = models[e["model"]]
        params = {k: tuple(v) if isinstance(v, list) else v for k, v in e["params"].items()}
        unknown = set(params) - set(cls().get_params())
        if unknown:
            raise DetectorFileError(f"{path}: unknown parameters {sorted(unknown)} for {e['class']}")
        det = cls(model=model, **{**params, "device": device, "progress": progress})
        try:
            det._check_params()
        except ValueError as err:
            raise DetectorFileError(f"{path}: detector {name!r}: {err}") from None
        det.model_ = model
        if cls is CDMDetector:
            from .registry import TABLE, head_requirement

            need = head_requirement(params["score"]) if params.get("score") in TABLE else None
            if need and not need[1](model):
                raise DetectorFileError(f"{path}: detector {name!r} ({params['score']}) needs a model with that "
                                        f"head, and the file's model has none (a {need[0]} is needed)")
            det.scorer_ = det._make_scorer(model)
            state = {k: arrays[f"{e['key']}/{k}"] for k in e["state"]}
            if hasattr(det.scorer_, "set_state"):
                try:
                    det.scorer_.set_state(state)
                except ValueError as err:  # damaged, or a state the scorer no longer has (fitted by another rule)
                    raise DetectorFileError(f"{path}: detector {name!r} ({params.get('score')}) {err}") from None
            dim = det.scorer_.feature_dim() if hasattr(det.scorer_, "feature_dim") else None
            if dim is not None and dim != getattr(model.net, "feature_channels", dim):
                raise DetectorFileError(f"{path}: detector {name!r} was fitted on {dim} features and its model gives "
                                        f"{model.net.feature_channels}: refit it with `oodkit fit`")
            det.n_features_in_ = int(np.prod(model.image_shape))
        else:
            det._cache = {}
        # last: the checks above name what is wrong more precisely when they can
        _check_digest(path, name, e, arrays, header["models"][e["model"]])
        det.offset_ = float(e["offset"])
        det.threshold_source_ = e.get("threshold_source", "contamination")
        det.calibration_scores_ = calibration
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
