"""The detector file format, without pickle (reading it back into detectors is
:mod:`oodkit.detectors.persist`; this module knows no detector class).

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
import zipfile
from pathlib import Path

import numpy as np

__all__ = ["save_detectors", "read_file", "check_entry", "check_digest", "load_model_entry",
           "DetectorFileError", "FORMAT", "VERSION"]

FORMAT, VERSION = "oodkit-detector", 4
READABLE = {4}
class DetectorFileError(ValueError):
    """A file that is not a sound oodkit detector file."""


def _model_entry(det, embed: bool, arrays: dict, key: str, base: Path) -> dict:
    from ..checkpoint import file_sha256, save_checkpoint, weights_digest
    from ..pretrained import PRETRAINED_DIR

    model = det.model_
    path = getattr(model, "checkpoint_path", None)
    loaded_sha = getattr(model, "checkpoint_sha256", None)
    # by reference only when the file still holds the weights the model was loaded from, and
    # the model still holds them too (not trained further or edited in memory since)
    unchanged = getattr(model, "loaded_weights", None) == weights_digest(model)
    if path and not embed and loaded_sha and unchanged and Path(path).is_file() and file_sha256(path) == loaded_sha:
        ref = getattr(model, "reference", None) or (det.model if isinstance(det.model, (str, Path)) else path)
        path = Path(path).resolve()
        rel = os.path.relpath(path, base.resolve())
        # a file shipped beside its model names no folder of the machine that made it
        where = rel if os.path.dirname(rel) == "" and PRETRAINED_DIR.resolve() == base.resolve() else str(path)
        return {"ref": str(ref), "path": where, "relpath": rel, "sha256": loaded_sha}
    with tempfile.TemporaryDirectory() as tmp:  # embed the weights as checkpoint bytes
        save_checkpoint(Path(tmp) / "m.pt", model, data=getattr(model, "data_info", None))
        arrays[key] = np.frombuffer((Path(tmp) / "m.pt").read_bytes(), dtype=np.uint8)
    return {"embedded": key}


def check_detector_name(path) -> None:
    """Refuse a detector file name that hides what it is (it is an .npz archive)."""
    if Path(path).suffix.lower() != ".npz" and not Path(path).is_dir():  # a folder is refused as one
        raise ValueError(f"{path}: a detector file is an .npz archive; name it {Path(path).stem}.npz")


def save_detectors(path, detectors: dict, embed_model: bool = False) -> Path:
    """Write fitted detectors ``{name: detector}`` to ``path`` (.npz), atomically. Each
    detector hands over what it learned through ``get_state()``."""
    from ..atomic import atomic_write

    if not isinstance(detectors, dict):
        raise TypeError(f"save_detectors(path, {{name: detector}}): the detectors come second, as a dict; got "
                        f"{type(detectors).__name__}")
    if not detectors:
        raise ValueError("no detectors to save: a detector file holds at least one")
    check_detector_name(path)
    header, arrays, models = {"format": FORMAT, "version": VERSION, "detectors": {}}, {}, {}
    for i, (name, det) in enumerate(detectors.items()):
        if not hasattr(det, "offset_"):
            raise ValueError(f"detector {name!r} is not fitted: call fit first")
        mid = id(det.model_)
        if mid not in models:
            models[mid] = f"model{len(models)}"
            header.setdefault("models", {})[models[mid]] = _model_entry(
                det, embed_model, arrays, f"{models[mid]}/checkpoint", Path(path).parent)
        state = det.get_state()
        # the model is stored apart; device and progress belong to the machine that loads it
        params = {k: v for k, v in det.get_params().items() if k not in ("model", "device", "progress")}
        entry = {"class": type(det).__name__, "params": json.loads(json.dumps(params, default=list)),
                 "offset": state["offset"], "threshold_source": state["threshold_source"],
                 "model": models[mid], "state": list(state["arrays"])}
        if state.get("align_px") is not None:
            entry["align_px"] = int(state["align_px"])
        entry["arithmetic"] = state["arithmetic"]
        for k, v in state["arrays"].items():
            arrays[f"det{i}/{k}"] = np.asarray(v, dtype=np.float64)
        arrays[f"det{i}/__calibration__"] = np.asarray(state["calibration"], dtype=np.float64)
        entry["key"] = f"det{i}"
        entry["sha256"] = _digest(entry, arrays, header["models"][models[mid]])
        header["detectors"][name] = entry
    arrays["__header__"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, buf.getvalue())


def read_file(path) -> tuple[dict, dict]:
    from ..validation import regular_file

    path = regular_file(path, "detector file", DetectorFileError)

    from ..data.sources import load_plain_npz

    what = "a detector file (not an .npz archive)"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(n.endswith("/data.pkl") for n in archive.namelist()):  # torch.save's archive
                raise DetectorFileError(f"{path} is a model checkpoint, not a detector file: pass it with --model "
                                        "(oodkit.load_model)")
    try:
        header = json.loads(load_plain_npz(path, DetectorFileError, what, keys=("__header__",))["__header__"]
                            .tobytes().decode())
    except (KeyError, UnicodeDecodeError, ValueError, RecursionError, AttributeError, MemoryError) as e:
        if isinstance(e, DetectorFileError):
            raise
        raise DetectorFileError(f"{path} is not an oodkit detector file (no valid header)") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise DetectorFileError(f"{path} is not an oodkit detector file")
    version = header.get("version")
    if isinstance(version, bool):  # True == 1: not a version
        version = repr(version)
    if version in (1, 2, 3):
        raise DetectorFileError(f"{path} has detector format version {version}, which holds no calibration scores "
                                "(conformal thresholds and p-values need them): refit it with `oodkit fit`")
    if version not in READABLE:
        raise DetectorFileError(f"{path} has detector format version {version!r}; this oodkit reads "
                                f"{sorted(READABLE)}: refit it with `oodkit fit`")
    named, complete = _named_members(header)
    with zipfile.ZipFile(path) as archive:
        others = sorted(n.removesuffix(".npy") for n in archive.namelist() if n.removesuffix(".npy") not in named)
    if others and complete:  # never read, whatever their size (a malformed entry is named by the checks after)
        raise DetectorFileError(f"{path} holds members its header does not name ({', '.join(map(repr, others[:3]))}"
                                f"{', ...' if len(others) > 3 else ''}): not a file oodkit wrote; refit it with "
                                "`oodkit fit`")
    arrays = load_plain_npz(path, DetectorFileError, what, keys=named - {"__header__"})
    return header, arrays


def _named_members(header: dict) -> tuple[set, bool]:
    """The archive members a header refers to (the header, each detector's state arrays and
    calibration scores, embedded models), and whether every entry was well-formed enough
    to name its own (a malformed one names none and is refused by the checks after)."""
    named, complete = {"__header__"}, True
    dets, models = header.get("detectors"), header.get("models")
    for e in dets.values() if isinstance(dets, dict) else ():
        ok = isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("state"), list)
        complete = complete and ok
        if ok:
            named.add(f"{e['key']}/__calibration__")
            named.update(f"{e['key']}/{k}" for k in e["state"] if isinstance(k, str))
    for m in models.values() if isinstance(models, dict) else ():
        if isinstance(m, dict) and isinstance(m.get("embedded"), str):
            named.add(m["embedded"])
    return named, complete and isinstance(dets, dict) and isinstance(models, dict)


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


def check_entry(path, name: str, e, arrays: dict) -> np.ndarray:
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
    align = e.get("align_px")
    if align is not None and (isinstance(align, bool) or not isinstance(align, int) or not 1 <= align <= 4096):
        raise DetectorFileError(f"{path}: detector {name!r} has align_px {align!r}; an image size is needed")
    from ..representation import PRECISIONS

    if "arithmetic" in e and e["arithmetic"] not in PRECISIONS:
        raise DetectorFileError(f"{path}: detector {name!r} has arithmetic {e.get('arithmetic')!r}; one of "
                                f"{', '.join(PRECISIONS)} is needed")
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


def check_digest(path, name: str, e: dict, arrays: dict, model_entry: dict) -> None:
    if _digest(e, arrays, model_entry) != e["sha256"]:
        raise DetectorFileError(f"{path}: detector {name!r} does not match its SHA-256: the file was edited or "
                                "damaged; refit it with `oodkit fit`")


def load_model_entry(entry: dict, arrays: dict, base: Path, device, path=None):
    """The model a detector file's model ``entry`` names: embedded in the file, or a
    checkpoint found by path or name and checked against its SHA-256."""
    from ..checkpoint import CheckpointError, file_sha256
    from ..pretrained import load_model, resolve_model

    if "embedded" in entry:
        with tempfile.TemporaryDirectory() as tmp:
            p = Path(tmp) / "m.pt"
            p.write_bytes(arrays[entry["embedded"]].tobytes())
            try:
                m = load_model(p, device=device)
            except CheckpointError as e:  # named as the user knows it, not by the temporary file
                raise DetectorFileError(str(e).replace(str(p), f"{path or 'the detector file'}: the embedded model "
                                                                f"{entry['embedded']}")) from None
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
                            f"{', '.join(str(c) for c in looked)}): put it back there, or fit with "
                            "`oodkit fit --embed-model` to carry it in the file")
