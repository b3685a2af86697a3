"""Pretrained models by name: ``oodkit.load_model("cifar10")``, ``--model fashionmnist``.

A name resolves through ``weights/index.json`` to a file bundled with the package or,
for models too large to bundle, to a URL whose download is checked against its SHA-256
before it is used (and cached under ``$OODKIT_CACHE/pretrained``). Bundled models are
EMA weights in half precision (the network runs in float32 after loading; the recorded
bits/dim are measured on these rounded weights). A path that exists always wins over
a name.
"""
from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.request
import warnings
from pathlib import Path

from .atomic import atomic_path
from .checkpoint import CheckpointError, file_sha256, load_checkpoint, save_checkpoint
from .checkpoint import load_model as _load_path
from .devices import resolve_device

__all__ = ["load_model", "resolve_model", "list_models", "export_model", "bundled_detectors", "PRETRAINED_DIR",
           "download_verified"]

PRETRAINED_DIR = Path(__file__).parent / "weights"


def _index(index_path: Path | None = None) -> dict:
    """``{name: record}`` of the model index; a damaged index is a one-line CheckpointError."""
    path = Path(index_path or PRETRAINED_DIR / "index.json")
    if not path.exists():
        return {}
    try:
        index = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError, OSError) as e:
        raise CheckpointError(f"the model index {path} is damaged ({type(e).__name__}): reinstall oodkit") from None
    bad = [n for n, rec in index.items() if not isinstance(rec, dict)] if isinstance(index, dict) else ["(all)"]
    if bad:
        raise CheckpointError(f"the model index {path} is damaged (entry {bad[0]!r}): reinstall oodkit")
    unsigned = [n for n, rec in index.items() if not isinstance(rec.get("sha256"), str)
                or not isinstance(rec.get("detectors", {}), dict)]
    if unsigned:
        raise CheckpointError(f"the model index {path} is damaged (entry {unsigned[0]!r} has no sha256 or a bad "
                              "detectors record): reinstall oodkit")
    return index


def list_models(index_path=None) -> list[dict]:
    """Every registered model: ``name``, ``dataset``, ``steps``, ``test_bpd``,
    ``sha256``, where it lives, and whether it is available without a download."""
    out = []
    for name, rec in _index(index_path).items():
        local = PRETRAINED_DIR / rec["file"] if rec.get("file") else None
        out.append({"name": name, **rec, "available": "bundled" if local and local.exists() else
                    ("download" if rec.get("url") else "missing")})
    return out


def cache_root() -> Path:
    """Where oodkit caches downloads and models it trained: ``$OODKIT_CACHE``, else
    ``~/.cache/oodkit``."""
    root = Path(os.environ.get("OODKIT_CACHE") or Path.home() / ".cache" / "oodkit")  # set but empty: the default
    if root.exists() and not root.is_dir():
        raise ValueError(f"OODKIT_CACHE={root} is a file, not a folder: point it at a folder")
    return root


def _cache_dir() -> Path:
    return cache_root() / "pretrained"


def download_verified(url: str, sha256: str, dest: Path, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and keep it only if its SHA-256 is ``sha256``; a
    mismatch leaves nothing behind and raises :class:`CheckpointError`."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    try:
        with atomic_path(dest) as tmp, open(tmp, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                h.update(chunk)
                f.write(chunk)
            if h.hexdigest() != sha256:  # raised inside: the temporary file goes, dest stays as it was
                raise CheckpointError(f"download of {url} has SHA-256 {h.hexdigest()[:16]}..., expected "
                                      f"{sha256[:16]}...: refused (corrupt or tampered)")
    except (OSError, http.client.HTTPException) as e:
        raise CheckpointError(f"cannot download {url}: {e}") from None
    return dest


def resolve_model(ref, index_path=None) -> Path:
    """A checkpoint path for ``ref``: an existing path as is, else a registered name
    (bundled, or downloaded and verified once). Anything else is returned unchanged,
    so that loading it reports "not found" with the registered names."""
    path = Path(ref).expanduser()
    rec = _index(index_path).get(str(ref))
    if path.is_file() or rec is None:  # a file wins; a folder of the same name does not hide a model
        if rec is not None and path.parent == Path("."):
            warnings.warn(f"./{path} is a file here and {ref!r} also names a pretrained model: the file is used "
                          f"(write ./{path} to say so, or move it to use the pretrained one)", stacklevel=2)
        return path
    if rec.get("file") and (PRETRAINED_DIR / rec["file"]).exists():
        local = PRETRAINED_DIR / rec["file"]
        if file_sha256(local) != rec["sha256"]:
            raise CheckpointError(f"bundled model {ref!r} ({local}) does not match its recorded SHA-256: "
                                  "the installation is damaged; reinstall oodkit")
        return local
    if rec.get("url"):
        dest = _cache_dir() / f"{ref}-{rec['sha256'][:12]}.pt"
        if dest.exists() and file_sha256(dest) == rec["sha256"]:
            return dest
        return download_verified(rec["url"], rec["sha256"], dest)
    raise CheckpointError(f"pretrained model {ref!r} is registered but neither bundled nor downloadable")


def pretrained_name(path, index_path=None) -> str | None:
    """The registered name of the pretrained model whose checkpoint ``path`` holds byte for
    byte (a copy of a shipped model), or None."""
    path = Path(path).expanduser()
    if not path.is_file():
        return None
    sha = file_sha256(path)
    return next((name for name, rec in _index(index_path).items() if rec.get("sha256") == sha), None)


def bundled_detectors(ref, index_path=None) -> Path | None:
    """The detector file shipped with pretrained model ``ref``: its default detectors fitted
    on a seeded subsample of its training images (``benchmarks/export_detectors.py``),
    checked against its recorded SHA-256. None for a path, an unknown name or a model
    shipped without one."""
    rec = _index(index_path).get(str(ref))
    if rec is None or Path(ref).expanduser().is_file() or not rec.get("detectors"):
        return None
    path = PRETRAINED_DIR / rec["detectors"]["file"]
    if not path.is_file():
        return None
    if file_sha256(path) != rec["detectors"]["sha256"]:
        raise CheckpointError(f"the detectors bundled with {str(ref)!r} ({path}) do not match their recorded SHA-256: "
                              "the installation is damaged; reinstall oodkit")
    return path


def check_reference(ref, caller: str) -> None:
    if not isinstance(ref, (str, os.PathLike)):
        raise TypeError(f"{caller}: pass a pretrained name (oodkit models) or a file's path, got {type(ref).__name__}")
    if not str(ref).strip():
        raise CheckpointError("got an empty model name: pass a pretrained name (oodkit models) or a file's path")


def load_model(ref, ema: bool = True, device=None, index_path=None):
    """Load a model by checkpoint path or pretrained name (see :func:`list_models`), in
    eval mode on ``device`` (CPU by default)."""
    check_reference(ref, "load_model")
    if device is not None:
        device = resolve_device(device)
    path = resolve_model(ref, index_path)
    if not path.exists():
        names = ", ".join(_index(index_path)) or "none installed"
        raise CheckpointError(f"checkpoint not found: {ref} (pretrained names: {names})")
    return _load_path(path, ema=ema, device=device)


def export_model(checkpoint, out, **record) -> dict:
    """Write the EMA weights of ``checkpoint`` in half precision to ``out`` as a plain
    oodkit checkpoint (no optimizer state) and return its index record (with ``sha256``
    and ``steps``; ``record`` adds fields such as ``test_bpd``)."""
    ckpt = load_checkpoint(checkpoint)
    model = _load_path(checkpoint).half()  # its EMA weights, rounded once; loading casts them back to float32
    step = (ckpt.get("train_state") or {}).get("step")
    save_checkpoint(out, model, train_state={"step": step}, data=ckpt.get("data"))
    return {"kind": ckpt["kind"], "steps": step, "sha256": file_sha256(out), **record}
