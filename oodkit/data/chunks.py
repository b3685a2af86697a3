"""A data set cut in chunks: how a set larger than memory is scored.

A set is planned as a list of :class:`Chunk` s, each a stable key, its place in the
set's order and a function that reads just its images. The sources read a piece at a
time are ``folder:DIR`` (the sorted file listing, ``size`` files at a time) and the
sharded ones of :mod:`oodkit.data.shards` (``npz:DIR``, ``tar:PATH``: a shard per chunk,
cut further by ``size``). Any other spec is loaded whole by
:func:`~oodkit.data.registry.load_dataset` and cut into ranges, so that its scoring still
resumes after a kill.
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .registry import expand_spec, load_dataset
from .shards import TarShards, npz_files, npz_header, one_labelling, one_size
from .sources import FolderListing, ImageSet, read_npz

__all__ = ["Chunk", "plan_chunks"]


@dataclass(frozen=True)
class Chunk:
    """``count`` images of a set, from its ``start``-th on; ``key`` names it in a resume
    manifest (a shard's file name and range); ``read()`` loads just these images."""

    key: str
    start: int
    count: int
    read: Callable[[], ImageSet] = field(compare=False, repr=False)


def file_stamp(paths) -> str:
    """A short digest of the files' names, sizes and modification times (nothing read)."""
    h = hashlib.sha1()
    for p in paths:
        st = Path(p).stat()
        h.update(f"{Path(p).name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    return h.hexdigest()[:16]


def content_stamp(ds) -> str:
    """A short digest of an ImageSet's pixels and labels."""
    h = hashlib.sha1(str(ds.images.shape).encode())
    h.update(np.ascontiguousarray(ds.images).data)
    if ds.labels is not None:
        h.update(np.ascontiguousarray(ds.labels, dtype=np.int64).data)
    return h.hexdigest()[:16]


def _ranges(key: str, start: int, n: int, size: int | None, read_range, stamp=None) -> list:
    """A piece of ``n`` images cut into chunks of at most ``size`` (None: one chunk);
    ``stamp(a, b)``: the stamp of images a..b of the piece (None: the key holds one)."""
    size = size or max(n, 1)
    return [Chunk(f"{key}[{a}:{min(a + size, n)}]" + (f"@{stamp(a, min(a + size, n))}" if stamp else ""),
                  start + a, min(size, n - a), functools.partial(read_range, a, min(a + size, n)))
            for a in range(0, n, size)]


def _shards(paths_counts: list, size: int | None, read_shard) -> list:
    """Chunks of shard files ``[(path, count)]`` in order; ``read_shard(i)`` loads shard i
    whole and is cached for one shard, so a shard cut in several chunks is read once."""
    cached = functools.lru_cache(maxsize=1)(read_shard)
    chunks, start = [], 0
    for i, (path, n) in enumerate(paths_counts):
        key = f"{path.name}@{file_stamp([path])}"
        chunks += _ranges(key, start, n, size, lambda a, b, i=i: cached(i).subset(np.arange(a, b)))
        start += n
    return chunks


def plan_chunks(spec: str, split: str = "test", root=None, download: bool = False, resize: int | None = None,
                num_workers: int = 0, size: int | None = None) -> list:
    """The chunks of data set ``spec`` (``split``), in the set's order: see the module
    docstring for what is read in pieces. ``size``: at most this many images per chunk
    (None: a shard or a folder per chunk, and a set loaded whole in one chunk)."""
    if size is not None and size < 1:
        raise ValueError(f"chunk size must be a positive number of images, got {size}")
    spec = expand_spec(spec)
    kind, _, raw = spec.partition(":")
    path = Path(raw.format(split=split)) if raw and "{split}" in raw else Path(raw)
    if kind == "folder" and raw and path.is_dir():
        listing = FolderListing(path, resize=resize)
        return _ranges(path.name, 0, len(listing), size, lambda a, b: listing.read(a, b, num_workers=num_workers),
                       stamp=lambda a, b: file_stamp(listing.files[a:b]))
    if kind == "npz" and raw and path.is_dir():
        files = npz_files(path)
        shapes, labelled = zip(*(npz_header(p) for p in files))  # headers only: refused before any shard is read
        one_size(path.name, shapes)
        one_labelling(path.name, labelled)
        return _shards([(p, s[0]) for p, s in zip(files, shapes)], size, lambda i: read_npz(files[i], path.name))
    if kind == "tar" and raw:
        plan = TarShards(path, resize)
        return _shards([(p, len(s)) for p, s in plan.shards], size, plan.read)
    ds = load_dataset(spec, split, root, download, resize=resize, num_workers=num_workers)
    return _ranges(f"{ds.name}@{content_stamp(ds)}", 0, len(ds), size, lambda a, b: ds.subset(np.arange(a, b)))

