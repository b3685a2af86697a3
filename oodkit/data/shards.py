"""Sharded sources: sets stored as many files, each readable on its own.

* ``npz:DIR``: a directory of ``.npz`` shards (``images`` uint8 (N, H, W[, C]), optional
  ``labels``); a shard's size comes from its array header, nothing loaded;
* ``tar:PATH``: a WebDataset-style ``.tar`` shard, or a directory of them: members that
  share a key (the name up to the first dot of its base name) form one sample, of one
  image file and optionally a ``.cls`` file holding its integer label. Members are read
  from the archive in memory, never extracted to disk.

Read whole here (:func:`read_npz_any`, :func:`read_tar`) or a piece at a time through
:mod:`oodkit.data.chunks`.
"""
from __future__ import annotations

import io
import os
import tarfile
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..validation import regular_file
from .sources import IMAGE_EXTS, DataNotFound, ImageSet, decode_image, first_size, read_npz, stack_pixels

__all__ = ["read_npz_any", "read_tar", "concat", "npz_files", "npz_header", "one_labelling", "one_size", "TarShards"]


def one_size(name, shapes: list) -> None:
    """Refuse shards whose images ``(N, H, W[, C])`` differ in H x W (channels may differ:
    grey ones are repeated to RGB)."""
    if len({tuple(s[1:3]) for s in shapes}) > 1:
        sizes = sorted({f"{s[2]}x{s[1]}" for s in shapes})
        raise ValueError(f"{name}: shards differ in image size ({', '.join(sizes)}); make them one size")


def concat(sets: list, name: str) -> ImageSet:
    """ImageSets (same size) joined in order; grey ones repeated to RGB when any is colour."""
    one_size(name, [s.images.shape for s in sets])
    colour = any(s.channels == 3 for s in sets)
    images = np.concatenate([np.repeat(s.images, 3, -1) if colour and s.channels == 1 else s.images for s in sets])
    labelled = [s.labels is not None for s in sets]
    one_labelling(name, labelled)
    labels = np.concatenate([s.labels for s in sets]) if all(labelled) else None
    paths = [p for s in sets for p in s.paths] if all(s.paths is not None for s in sets) else None
    return ImageSet(images, labels, name, paths)


def one_labelling(name, labelled: list, what: str = "shards") -> None:
    """Refuse a set whose parts (shards, or samples of one shard) are labelled in part: its
    rows would not share one set of columns."""
    if any(labelled) and not all(labelled):
        raise ValueError(f"{name}: some {what} have labels and some do not")


TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")


def folder_reads(kind: str, folder: Path, path: Path) -> bool:
    """Whether a ``KIND:folder`` data set reads the file at ``path`` (existing or not):
    ``npz:`` its ``.npz`` shards, ``tar:`` its tar shards, ``folder:`` the images at any
    depth; hidden names never."""
    # normalised, not resolved: a shard that is a link to a file elsewhere is still one of the folder's
    folder, path = Path(os.path.abspath(folder)), Path(os.path.abspath(path))
    if not path.is_relative_to(folder) or path == folder:
        return False
    rel = path.relative_to(folder).parts
    if any(part.startswith(".") for part in rel):
        return False
    if kind == "folder":
        return path.suffix.lower() in IMAGE_EXTS
    return len(rel) == 1 and (path.suffix == ".npz" if kind == "npz" else path.name.endswith(TAR_SUFFIXES))


# -- npz shards ------------------------------------------------------------------------
def npz_files(path: Path) -> list:
    files = sorted(regular_file(p, "npz shard") for p in path.iterdir() if folder_reads("npz", path, p))
    if not files:
        raise DataNotFound(f"no .npz shards in {path}")
    return files


def npz_header(path: Path) -> tuple[tuple, bool]:
    """The shape of an ``.npz`` shard's ``images`` array and whether it holds ``labels``,
    from the archive's listing and the array's header (nothing loaded)."""
    from .sources import npy_member

    try:
        with zipfile.ZipFile(path) as z:
            shape, dtype, stored = npy_member(z, "images.npy")
            labelled = "labels.npy" in z.namelist()
    except KeyError:
        raise ValueError(f"{path} has no 'images' array") from None
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(f"cannot read {path}: not an .npz archive of images ({e})") from None
    if not shape:
        raise ValueError(f"{path}: 'images' must be (N, H, W[, C]), got a scalar")
    if int(np.prod(shape, dtype=object)) * dtype.itemsize != stored:  # a header is a claim: the bytes are the images
        raise ValueError(f"{path}: its 'images' header declares shape {shape} but the array holds {stored:,} bytes: "
                         "the file is damaged; write it again with numpy.savez")
    return shape, labelled


def read_npz_any(path, name=None) -> ImageSet:
    """``npz:PATH``: one ``.npz`` file, or a directory of shards read whole and joined."""
    path = Path(path)
    if path.is_dir():
        return concat([read_npz(p) for p in npz_files(path)], name or path.name)
    return read_npz(path, name)


# -- tar shards ------------------------------------------------------------------------
def _tar_files(path: Path) -> list:
    if not path.exists():
        raise DataNotFound(f"no such file or folder: {path}")
    if not path.is_dir():
        return [regular_file(path, "tar shard")]  # a pipe would be waited on forever
    files = sorted(regular_file(p, "tar shard") for p in path.iterdir() if folder_reads("tar", path, p))
    if not files:
        raise DataNotFound(f"no .tar shards in {path}")
    return files


def _samples(path: Path) -> list:
    """The samples of one tar shard in archive order: ``(key, image member, cls member
    or None)``, members as ``TarInfo``. Links, a member named twice, a label without an
    image and a member too large for a sample are refused."""
    try:
        with tarfile.open(path) as t:
            every = t.getmembers()
            members = [m for m in every if m.isfile()]
            # tarfile ends its listing quietly at a cut: a whole archive ends in zero blocks
            t.fileobj.seek(t.offset)
            end = t.fileobj.read(tarfile.BLOCKSIZE)
    except EOFError:  # a compressed archive cut short
        raise ValueError(f"{path} is truncated: its compressed stream ends early; copy it again") from None
    except (tarfile.TarError, OSError, zlib.error) as e:
        last = [line for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
        raise ValueError(f"cannot read {path}: not a tar archive ({last[-1].strip(' -')})") from None
    if len(end) < tarfile.BLOCKSIZE or end.strip(b"\0"):
        after = f"after member {members[-1].name!r}" if members else "at its start"
        raise ValueError(f"{path} is truncated: it stops {after} without the end-of-archive blocks; copy it again")
    groups: dict = {}
    skipped = []
    for m in every:
        base, part = m.name.rsplit("/", 1)[-1], _sample_part(m.name)
        if base.startswith(".") or not part:
            skipped += [m.name] if m.isfile() and not base.startswith(".") else []
            continue
        try:
            m.name.encode("utf-8")
        except UnicodeEncodeError:  # the output's path column could not hold it
            raise ValueError(f"{path}: member name {ascii(m.name)} is not valid UTF-8: rename it") from None
        if not m.isfile():  # a link would make a row score another member's image
            raise ValueError(f"{path}: member {m.name!r} is a {'link' if m.issym() or m.islnk() else 'special file'}; "
                             "samples must be regular files (tar them with --dereference)")
        if m.size > MAX_MEMBER_BYTES[part]:
            raise ValueError(f"{path}: member {m.name!r} holds {m.size:,} bytes, more than a sample's "
                             f"{MAX_MEMBER_BYTES[part]:,}")
        key = m.name[: len(m.name) - len(base)] + base.split(".", 1)[0]
        groups.setdefault(key, []).append(m)
    out = []
    for key, ms in groups.items():
        names = [m.name for m in ms]
        if len(set(names)) < len(names):  # reading by name would give the last one
            raise ValueError(f"{path}: member {next(n for n in names if names.count(n) > 1)!r} appears twice")
        images = [m for m in ms if _sample_part(m.name) == "image"]
        if len(images) > 1:
            raise ValueError(f"{path}: sample {key!r} has {len(images)} images ({', '.join(m.name for m in images)}); "
                             "one per key")
        cls = [m for m in ms if _sample_part(m.name) == "cls"]
        if not images:
            raise ValueError(f"{path}: sample {key!r} has a label ({cls[0].name}) and no image")
        out.append((key, images[0], cls[0] if cls else None))
    if not out:
        raise DataNotFound(f"no images ({', '.join(sorted(IMAGE_EXTS))}) in {path}")
    if skipped:  # as folder: says of the files it skips
        import warnings

        warnings.warn(f"{path}: skipped {len(skipped)} member(s) that are neither images "
                      f"({', '.join(sorted(IMAGE_EXTS))}) nor .cls labels, e.g. {skipped[0]}", stacklevel=3)
    return out


# the members of a sample, by suffix, and the most bytes one may hold (a compressed shard
# could otherwise expand a small file into gigabytes before an image decoder sees it)
MAX_MEMBER_BYTES = {"image": 64 * 2**20, "cls": 64}


def _sample_part(name: str) -> str | None:
    """``"image"``, ``"cls"`` or None (a member a sample does not read) for a member name."""
    if Path(name).suffix.lower() in IMAGE_EXTS:
        return "image"
    return "cls" if name.endswith(".cls") else None


def _label(raw: bytes, where: str) -> int:
    try:  # its range is the ImageSet's to check, as for every other source of labels
        return int(raw.decode().strip())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{where}: a .cls member must hold one integer, got {raw[:20]!r}") from None


def _read_tar_range(path: Path, samples: list, side: int, first, name: str) -> ImageSet:
    arrays, labels = [], []
    with tarfile.open(path) as t:
        for key, image, cls in samples:  # members as listed: by name, tarfile would search the whole archive
            label = f"{path.name}/{image.name}"
            arrays.append(decode_image(io.BytesIO(t.extractfile(image).read()), label, side, first))
            if cls is not None:
                labels.append(_label(t.extractfile(cls).read(), f"{path.name}/{cls.name}"))
    return ImageSet(stack_pixels(arrays), np.array(labels) if labels else None, name,
                    paths=[f"{path}/{key}" for key, _, _ in samples])


class TarShards:
    """Every shard's sample list, and the image size all must share (from the first
    image, unless ``resize``)."""

    def __init__(self, path, resize: int | None, max_size: int = 64):
        path = Path(path)
        self.name = path.name.split(".", 1)[0]
        self.shards = [(p, _samples(p)) for p in _tar_files(path)]
        for p, samples in self.shards:  # checked before any is read: chunks of one set share their columns
            one_labelling(p, [cls is not None for _, _, cls in samples], "samples")
        one_labelling(self.name, [samples[0][2] is not None for _, samples in self.shards if samples])
        self.first, self.side = None, resize
        if resize is None:
            p, samples = self.shards[0]
            with tarfile.open(p) as t:
                data = t.extractfile(samples[0][1]).read()
            self.first, self.side = first_size(io.BytesIO(data), f"{p.name}/{samples[0][1].name}", max_size)

    def read(self, i: int, start: int = 0, stop: int | None = None) -> ImageSet:
        p, samples = self.shards[i]
        return _read_tar_range(p, samples[start:stop], self.side, self.first, self.name)


def read_tar(path, name=None, resize: int | None = None) -> ImageSet:
    """``tar:PATH``: a WebDataset-style tar shard, or a directory of them, read whole."""
    plan = TarShards(path, resize)
    return concat([plan.read(i) for i in range(len(plan.shards))], name or plan.name)
