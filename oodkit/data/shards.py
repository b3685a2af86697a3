"""Data sets read a piece at a time: how a set larger than memory is scored.

A set is planned as a list of :class:`Chunk` s, each a stable key, its place in the
set's order and a function that reads just its images. The sources that can be read in
pieces are

* ``folder:DIR``: the sorted file listing, ``size`` files at a time;
* ``npz:DIR``: a directory of ``.npz`` shards (``images`` uint8 (N, H, W[, C]), optional
  ``labels``), one chunk per shard (split further by ``size``); the counts come from the
  arrays' headers, nothing is loaded to plan;
* ``tar:PATH``: a WebDataset-style ``.tar`` shard, or a directory of them: members that
  share a key (the name up to the first dot of its base name) form one sample, of one
  image file and optionally a ``.cls`` file holding its integer label. Members are read
  from the archive in memory, never extracted to disk.

Any other spec is loaded whole by :func:`~oodkit.data.registry.load_dataset` and cut into
ranges, so that its scoring still resumes after a kill.
"""
from __future__ import annotations

import functools
import io
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .sources import IMAGE_EXTS, DataNotFound, ImageSet, decode_image, first_size, read_npz, stack_pixels

__all__ = ["Chunk", "plan_chunks", "read_npz_any", "read_tar", "concat"]


@dataclass(frozen=True)
class Chunk:
    """``count`` images of a set, from its ``start``-th on; ``key`` names it in a resume
    manifest (a shard's file name and range); ``read()`` loads just these images."""

    key: str
    start: int
    count: int
    read: Callable[[], ImageSet] = field(compare=False, repr=False)


def concat(sets: list, name: str) -> ImageSet:
    """ImageSets (same size) joined in order; grey ones repeated to RGB when any is colour."""
    if len({s.images.shape[1:3] for s in sets}) > 1:
        sizes = sorted({f"{s.images.shape[2]}x{s.images.shape[1]}" for s in sets})
        raise ValueError(f"{name}: shards differ in image size ({', '.join(sizes)}); make them one size")
    colour = any(s.channels == 3 for s in sets)
    images = np.concatenate([np.repeat(s.images, 3, -1) if colour and s.channels == 1 else s.images for s in sets])
    labelled = [s.labels is not None for s in sets]
    if any(labelled) and not all(labelled):
        raise ValueError(f"{name}: some shards have labels and some do not")
    labels = np.concatenate([s.labels for s in sets]) if all(labelled) else None
    paths = [p for s in sets for p in s.paths] if all(s.paths is not None for s in sets) else None
    return ImageSet(images, labels, name, paths)


# -- npz shards ------------------------------------------------------------------------
def _npz_files(path: Path) -> list:
    files = sorted(p for p in path.iterdir() if p.suffix == ".npz" and not p.name.startswith("."))
    if not files:
        raise DataNotFound(f"no .npz shards in {path}")
    return files


def _npz_count(path: Path) -> int:
    """Images in an ``.npz`` shard, from the ``images`` array's header (nothing loaded)."""
    try:
        with zipfile.ZipFile(path) as z, z.open("images.npy") as f:
            version = np.lib.format.read_magic(f)
            shape, _, _ = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
    except KeyError:
        raise ValueError(f"{path} has no 'images' array") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(f"cannot read {path}: not an .npz archive of images ({e})") from None
    if not shape:
        raise ValueError(f"{path}: 'images' must be (N, H, W[, C]), got a scalar")
    return int(shape[0])


def read_npz_any(path, name=None) -> ImageSet:
    """``npz:PATH``: one ``.npz`` file, or a directory of shards read whole and joined."""
    path = Path(path)
    if path.is_dir():
        return concat([read_npz(p) for p in _npz_files(path)], name or path.name)
    return read_npz(path, name)


# -- tar shards ------------------------------------------------------------------------
def _tar_files(path: Path) -> list:
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataNotFound(f"no such file or folder: {path}")
    files = sorted(p for p in path.iterdir() if p.name.endswith((".tar", ".tar.gz", ".tgz"))
                   and not p.name.startswith("."))
    if not files:
        raise DataNotFound(f"no .tar shards in {path}")
    return files


def _samples(path: Path) -> list:
    """The samples of one tar shard in archive order: ``(key, image member, cls member
    or None)``."""
    try:
        with tarfile.open(path) as t:
            members = [m for m in t.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError) as e:
        last = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        raise ValueError(f"cannot read {path}: not a tar archive ({last[-1].strip(' -')})") from None
    groups: dict = {}
    for m in members:
        base = m.name.rsplit("/", 1)[-1]
        if base.startswith("."):
            continue
        key = m.name[: len(m.name) - len(base)] + base.split(".", 1)[0]
        groups.setdefault(key, []).append(m)
    out = []
    for key, ms in groups.items():
        images = [m for m in ms if Path(m.name).suffix.lower() in IMAGE_EXTS]
        if len(images) > 1:
            raise ValueError(f"{path}: sample {key!r} has {len(images)} images ({', '.join(m.name for m in images)}); "
                             "one per key")
        cls = next((m for m in ms if m.name.endswith(".cls")), None)
        if images:
            out.append((key, images[0].name, None if cls is None else cls.name))
    if not out:
        raise DataNotFound(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {path}")
    return out


def _label(raw: bytes, where: str) -> int:
    try:
        return int(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{where}: a .cls member must hold one integer, got {raw[:20]!r}") from None


def _read_tar_range(path: Path, samples: list, side: int, first, name: str) -> ImageSet:
    arrays, labels = [], []
    with tarfile.open(path) as t:
        for key, image, cls in samples:
            label = f"{path.name}/{image}"
            arrays.append(decode_image(io.BytesIO(t.extractfile(image).read()), label, side, first))
            if cls is not None:
                labels.append(_label(t.extractfile(cls).read(), f"{path.name}/{cls}"))
    if labels and len(labels) != len(samples):
        raise ValueError(f"{path}: some samples have a .cls label and some do not")
    return ImageSet(stack_pixels(arrays), np.array(labels) if labels else None, name,
                    paths=[f"{path}/{key}" for key, _, _ in samples])


class _TarPlan:
    """Every shard's sample list, and the image size all must share (from the first
    image, unless ``resize``)."""

    def __init__(self, path, resize: int | None, max_size: int = 64):
        path = Path(path)
        self.name = path.name.split(".", 1)[0]
        self.shards = [(p, _samples(p)) for p in _tar_files(path)]
        self.first, self.side = None, resize
        if resize is None:
            p, samples = self.shards[0]
            with tarfile.open(p) as t:
                data = t.extractfile(samples[0][1]).read()
            self.first, self.side = first_size(io.BytesIO(data), f"{p.name}/{samples[0][1]}", max_size)

    def read(self, i: int, start: int = 0, stop: int | None = None) -> ImageSet:
        p, samples = self.shards[i]
        return _read_tar_range(p, samples[start:stop], self.side, self.first, self.name)


def read_tar(path, name=None, resize: int | None = None) -> ImageSet:
    """``tar:PATH``: a WebDataset-style tar shard, or a directory of them, read whole."""
    plan = _TarPlan(path, resize)
    return concat([plan.read(i) for i in range(len(plan.shards))], name or plan.name)


# -- plans -----------------------------------------------------------------------------
def _ranges(key: str, start: int, n: int, size: int | None, read_range) -> list:
    """A piece of ``n`` images cut into chunks of at most ``size`` (None: one chunk)."""
    size = size or max(n, 1)
    return [Chunk(f"{key}[{a}:{min(a + size, n)}]", start + a, min(size, n - a),
                  functools.partial(read_range, a, min(a + size, n)))
            for a in range(0, n, size)]


def _shards(keys_counts: list, size: int | None, read_shard) -> list:
    """Chunks of shards ``[(key, count)]`` in order; ``read_shard(i)`` loads shard i whole
    and is cached for one shard, so a shard cut in several chunks is read once."""
    cached = functools.lru_cache(maxsize=1)(read_shard)
    chunks, start = [], 0
    for i, (key, n) in enumerate(keys_counts):
        chunks += _ranges(key, start, n, size, lambda a, b, i=i: cached(i).subset(np.arange(a, b)))
        start += n
    return chunks


def plan_chunks(spec: str, split: str = "test", root=None, download: bool = False, resize: int | None = None,
                num_workers: int = 0, size: int | None = None) -> list:
    """The chunks of data set ``spec`` (``split``), in the set's order: see the module
    docstring for what is read in pieces. ``size``: at most this many images per chunk
    (None: a shard or a folder per chunk, and a set loaded whole in one chunk)."""
    from .registry import load_dataset

    if size is not None and size < 1:
        raise ValueError(f"chunk size must be a positive number of images, got {size}")
    kind, _, raw = spec.partition(":")
    path = Path(raw.format(split=split)) if raw and "{split}" in raw else Path(raw)
    if kind == "folder" and raw and path.is_dir():
        listing = _folder_listing(path, resize)
        return _ranges(path.name, 0, len(listing), size,
                       lambda a, b: listing.read(a, b, num_workers=num_workers))
    if kind == "npz" and raw and path.is_dir():
        files = _npz_files(path)
        return _shards([(p.name, _npz_count(p)) for p in files], size, lambda i: read_npz(files[i], path.name))
    if kind == "tar" and raw:
        plan = _TarPlan(path, resize)
        return _shards([(p.name, len(s)) for p, s in plan.shards], size, plan.read)
    ds = load_dataset(spec, split, root, download, resize=resize, num_workers=num_workers)
    return _ranges(ds.name, 0, len(ds), size, lambda a, b: ds.subset(np.arange(a, b)))


def _folder_listing(path: Path, resize):
    from .sources import FolderListing

    return FolderListing(path, resize=resize)
