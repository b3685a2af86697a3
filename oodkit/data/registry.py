"""Data sets by name.

A *spec* is one of:

* a registered name (``oodkit datasets`` lists them): torchvision's sets, read from
  their own files under the data root (``--download`` fetches them where a network
  exists), data that ships with installed packages, and synthetic sets;
* any name with ``ROOT/<name>_<split>.npz`` arrays (the layout of ``shared/data``),
  registered or not; these take precedence over torchvision's files;
* ``npz:PATH`` (a file, or a directory of ``.npz`` shards), ``folder:PATH`` or
  ``tar:PATH`` (WebDataset-style tar shards, a file or a directory of them): ``{split}``
  in PATH is replaced by the split; without it the one file or folder serves as the
  whole set, split 80/20 when a train/test split is needed. :mod:`.shards` reads these
  a piece at a time for sets larger than memory.
"""
from __future__ import annotations

import os
import functools
from pathlib import Path

import numpy as np

from . import sources
from .sources import DataNotFound, ImageSet
from ..validation import did_you_mean

__all__ = ["load_dataset", "list_datasets", "default_root", "REGISTRY", "ood_group", "GROUPS"]

TORCHVISION = ("cifar10", "cifar100", "svhn", "mnist", "fashionmnist", "celeba", "textures")

REGISTRY: dict[str, str] = {
    "cifar10": "CIFAR-10, 32x32 RGB, 50k/10k (torchvision)",
    "cifar100": "CIFAR-100, 32x32 RGB, 50k/10k (torchvision)",
    "svhn": "SVHN cropped digits, 32x32 RGB, 73k/26k (torchvision)",
    "mnist": "MNIST, 28x28 grey, 60k/10k (torchvision)",
    "fashionmnist": "Fashion-MNIST, 28x28 grey, 60k/10k (torchvision)",
    "celeba": "CelebA faces, centre crop 140 -> 64x64 RGB (torchvision)",
    "textures": "DTD textures, resized and cropped to 64x64 RGB (torchvision)",
    "digits": "scikit-learn's 8x8 digits, all classes, 1198/599 (ships with scikit-learn)",
    "digits-0to4": "scikit-learn's 8x8 digits 0-4 (ships with scikit-learn)",
    "digits-5to9": "scikit-learn's 8x8 digits 5-9 (ships with scikit-learn)",
    "sample-patches": "8x8 grey patches of scikit-learn's two sample photographs",
    "letters": "letters A-Z, a-z drawn in matplotlib's DejaVu fonts, 8x8 grey",
    "noise": "i.i.d. uniform pixels, shaped like the in-distribution set",
    "constant": "one grey level or colour per image, shaped like the in-distribution set",
}

# How an OOD set relates to the in-distribution set it is paired with: "near" (same kind
# of image, other classes), "far" (other kind of image), "synthetic" (noise, constant).
# Report tables average real (near + far) sets apart, so noise cannot carry a detector.
# Other classes of the ID set's own source are "near" without being listed here.
GROUPS: dict[tuple[str, str], str] = {
    ("cifar10", "cifar100"): "near",
}
SYNTHETIC = ("noise", "constant")
# registered sets that are class views of another set: they share its pixels and encoding
VIEWS: dict[str, tuple[str, tuple]] = {"digits-0to4": ("digits", tuple(range(5))),
                                       "digits-5to9": ("digits", tuple(range(5, 10)))}


def source_of(name: str) -> str:
    """The data set whose pixels ``name`` reads: ``cifar10[6-9]`` -> ``cifar10``,
    ``digits-5to9`` -> ``digits``; any other spec is its own source."""
    return selection(name)[0]


def selection(name: str) -> tuple[str, tuple | None]:
    """``(source, classes)``: which images ``name`` reads, the same for every spelling
    (``digits-5to9``, ``digits[5-9]``, ``digits[9+5-8]`` -> ``("digits", (5, 6, 7, 8, 9))``);
    classes None for all of them."""
    base, classes = parse_classes(name)
    source, view = VIEWS.get(base, (base, None))
    if view is not None:
        classes = view if classes is None else [c for c in classes if c in view]
    return source, None if classes is None else tuple(sorted(classes))


def ood_group(id_name: str, ood_name: str) -> str:
    """``"near"``, ``"far"`` or ``"synthetic"`` for an (ID, OOD) pair; other classes of
    the ID set's source (``cifar10[0-5]`` against ``cifar10[6-9]``, ``digits-0to4``
    against ``digits-5to9``) are "near"; unlisted real pairs are "far"."""
    if ood_name in SYNTHETIC:
        return "synthetic"
    if source_of(id_name) == source_of(ood_name) and id_name != ood_name:
        return "near"
    return GROUPS.get((parse_classes(id_name)[0], parse_classes(ood_name)[0]), "far")


MAX_CLASS = 100_000  # no image data set oodkit reads has more labels


PATH_KINDS = ("npz", "folder", "tar")  # specs that name files: KIND:PATH


def path_kind(spec: str) -> str | None:
    """``"npz"``, ``"folder"`` or ``"tar"`` for a ``KIND:PATH`` spec; None for a named set."""
    kind, sep, _ = spec.partition(":")
    return kind if sep and kind in PATH_KINDS else None


def expand_spec(spec: str) -> str:
    """A ``KIND:PATH`` spec with ``~`` in its path made the home folder (a shell leaves a
    ``~`` after ``:`` alone); other specs unchanged."""
    kind = path_kind(spec)
    return f"{kind}:{os.path.expanduser(spec.split(':', 1)[1])}" if kind else spec


def parse_classes(spec: str) -> tuple[str, list | None]:
    """``"cifar10[0-5]"`` -> ("cifar10", [0..5]); ``"mnist[1+3+5]"`` -> ("mnist", [1, 3, 5]);
    a plain name or a ``KIND:PATH`` spec -> (spec, None). Ranges are inclusive; ``+``
    joins (a comma would split a benchmark's OOD list)."""
    if not spec.endswith("]") or "[" not in spec or path_kind(spec):
        return spec, None
    base, _, body = spec[:-1].partition("[")
    classes = []
    try:
        for part in body.split("+"):
            lo, sep, hi = part.partition("-")
            lo, hi = int(lo), int(hi) if sep else int(lo)
            if not 0 <= lo <= hi < MAX_CLASS:  # a class label, not a billion-entry list
                raise ValueError(f"{spec}: classes are labels 0..{MAX_CLASS - 1}, low to high (got {part})")
            classes += list(range(lo, hi + 1))
    except ValueError as e:
        if str(e).startswith(spec):
            raise

        raise ValueError(f"{spec}: write classes as NAME[0-5] or NAME[1+3+5]") from None
    if not base or not classes:
        raise ValueError(f"{spec}: write classes as NAME[0-5] or NAME[1+3+5]")
    return base, sorted(set(classes))


PACKAGED = {
    "digits": lambda split: sources.digits(split),
    **{view: (lambda split, view=view: sources.digits(split, classes=VIEWS[view][1], name=view)) for view in VIEWS},
    "sample-patches": lambda split: sources.sample_patches(split),
    "letters": lambda split: sources.letters(split),
}

SYNTHETIC_N = 1000


def data_root(root=None) -> Path:
    """``root`` (``~`` expanded), else :func:`default_root`."""
    return Path(root).expanduser() if root is not None else default_root()


def default_root() -> Path:
    """``$OODKIT_DATA`` if set, else ``./data``."""
    return Path(os.environ.get("OODKIT_DATA") or "data").expanduser()  # set but empty: the default, not the working folder


def _holdout(ds: ImageSet, split: str) -> ImageSet:
    idx = np.random.default_rng(0).permutation(len(ds))
    cut = int(round(0.8 * len(ds)))
    return ds.subset(np.sort(idx[:cut] if split == "train" else idx[cut:]))


def load_dataset(
    spec: str,
    split: str = "test",
    root=None,
    download: bool = False,
    like: ImageSet | str | None = None,
    holdout: bool = False,
    resize: int | None = None,
    num_workers: int = 0,
) -> ImageSet:
    """Load ``split`` ("train" or "test") of the data set named by ``spec`` as uint8
    (N, H, W, C). ``like`` (a set, or a set's name) gives synthetic sets their size and
    channels (default 32x32 RGB). ``holdout``: split a single-file generic spec 80/20 into train / test.
    ``resize``: bring every image of a ``folder:`` set to this square size (a folder of
    mixed sizes is refused without it); ``num_workers``: DataLoader workers decoding it."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = expand_spec(spec)
    base, classes = parse_classes(spec)
    if classes is not None:  # NAME[0-5]: a held-out-class split of a labelled set
        ds = load_dataset(base, split, root, download, like, holdout, resize, num_workers)
        if ds.labels is None:
            raise ValueError(f"{spec}: {base} has no labels to select classes by")
        missing = sorted(set(classes) - set(np.unique(ds.labels).tolist()))
        if missing:
            raise ValueError(f"{spec}: {base} ({split}) has no class {missing[0]}")
        return ds.subset(np.flatnonzero(np.isin(ds.labels, classes)), name=spec)
    root = data_root(root)
    from . import shards

    folder = functools.partial(sources.read_folder, resize=resize, num_workers=num_workers)
    tar = functools.partial(shards.read_tar, resize=resize)
    for prefix, reader in (("npz:", shards.read_npz_any), ("folder:", folder), ("tar:", tar)):
        if spec.startswith(prefix):
            return _from_path(spec[len(prefix):], prefix, reader, split, holdout)
    if spec in sources_synthetic():
        if isinstance(like, str):
            like = load_dataset(like, split, root, download)
        size, channels = (like.size, like.channels) if like is not None else (32, 3)
        return sources.synthetic(spec, split, SYNTHETIC_N, size, channels)
    if spec in PACKAGED:
        return PACKAGED[spec](split)
    return _from_root(spec, split, root, download)


def _from_path(raw: str, prefix: str, reader, split: str, holdout: bool) -> ImageSet:
    """``npz:PATH`` / ``folder:PATH``: ``{split}`` in the path names one file per split;
    otherwise ``holdout`` splits the one set 80/20."""
    if not raw:
        raise ValueError(f"{prefix} needs a path, as in {prefix}PATH")
    if "{split}" in raw:
        return reader(raw.format(split=split), name=Path(raw).stem.replace("{split}", split))
    ds = reader(raw)
    return _holdout(ds, split) if holdout else ds


def _from_root(spec: str, split: str, root: Path, download: bool) -> ImageSet:
    """A named set under the data root: ``<name>_<split>.npz``, else torchvision's files."""
    if "/" in spec or os.sep in spec:  # a name is looked up under the root, never a path beside it
        raise DataNotFound(f"unknown data set {spec!r}: a data set name has no path separator; " + _path_hint(spec))
    npz = root / f"{spec}_{split}.npz"
    if npz.is_file():
        return sources.read_npz(npz, name=spec)
    if spec in TORCHVISION:
        try:
            return sources.torchvision_set(spec, split, root, download=download)
        except DataNotFound:
            how = (
                "the download failed (is there a network?)" if download
                else "pass --download (download=True) where a network exists"
            )
            raise DataNotFound(
                f"{spec} ({split}) not found: looked for {npz} and torchvision's files "
                f"({sources._tv_hint(spec)}) under {root} (the data root: --data-root, else $OODKIT_DATA, else "
                f"./data); {how}, or save its images there as "
                f"{npz.name} with numpy.savez (images: uint8 (N, H, W, C), labels: int (N,))"
            ) from None
    raise DataNotFound(f"unknown data set {spec!r}{did_you_mean(spec, REGISTRY)}: not registered (see `oodkit "
                       f"datasets`) and no {npz}; " + _path_hint(spec))


def _path_hint(spec: str) -> str:
    """What to write for a name that is a file or folder here: its path kind prefixed."""
    from .shards import TAR_SUFFIXES

    path = Path(spec).expanduser()
    if path.is_file() and path.suffix.lower() == ".npz":
        return f"to read the file {spec}, write npz:{spec}"
    if path.is_file() and spec.lower().endswith(TAR_SUFFIXES):
        return f"to read the tar shard {spec}, write tar:{spec}"
    if path.is_dir():
        return f"to read the folder {spec}, write folder:{spec} (images), npz:{spec} or tar:{spec} (shards)"
    return "use a registered name, npz:PATH, tar:PATH or folder:PATH"


def sources_synthetic():
    return ("noise", "constant")


def list_datasets(root=None) -> list[dict]:
    """Every registered name and every ``<name>_<split>.npz`` under ``root``, with the
    splits found locally ("built-in" for data that needs no files)."""
    root = data_root(root)
    rows = []
    npz_names: dict[str, list] = {}
    if root.is_dir():
        for p in sorted(root.glob("*_*.npz")):
            name, _, split = p.stem.rpartition("_")
            npz_names.setdefault(name, []).append(split)
    for name, desc in REGISTRY.items():
        if name in PACKAGED or name in sources_synthetic():
            local = "built-in"
        elif name in npz_names:
            local = "npz: " + ",".join(npz_names[name])
        else:
            local = "torchvision files" if _torchvision_present(name, root) else "-"
        rows.append({"name": name, "description": desc, "available": local})
    for name, splits in npz_names.items():
        if name not in REGISTRY:
            rows.append({"name": name, "description": f"arrays under {root}", "available": "npz: " + ",".join(splits)})
    return rows


def _torchvision_present(name: str, root: Path) -> bool:
    marker = {
        "cifar10": "cifar-10-batches-py",
        "cifar100": "cifar-100-python",
        "svhn": "test_32x32.mat",
        "mnist": "MNIST/raw",
        "fashionmnist": "FashionMNIST/raw",
        "celeba": "celeba",
        "textures": "dtd",
    }[name]
    return (root / marker).exists()
