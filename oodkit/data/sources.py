"""Readers for every place images come from: torchvision's on-disk formats, ``.npz``
arrays, image folders, the data that ships inside installed packages, and synthetic
sets. Each returns an :class:`ImageSet` of uint8 (N, H, W, C) images."""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["ImageSet", "DataNotFound", "read_npz", "read_folder", "FolderListing", "decode_image", "torchvision_set", "digits", "sample_patches", "letters", "synthetic"]


class DataNotFound(FileNotFoundError):
    """A data set that is not on disk (and was not, or could not be, downloaded)."""


def _integer_labels(labels, name: str) -> np.ndarray:
    """Labels as int64 (N,): integers, or numbers and texts that are whole numbers."""
    raw = np.asarray(labels)
    if raw.ndim != 1:
        raise ValueError(f"{name}: labels must be one class index per image, shape (N,), got shape {raw.shape}")
    if raw.dtype.kind in "cmMV":  # complex, dates, raw bytes: no class index among them
        raise ValueError(f"{name}: labels must be integers (class indices), got {raw.dtype}")
    if raw.dtype.kind in "biu":
        if raw.dtype.kind == "u" and raw.size and raw.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{name}: a class label must fit in 64 bits, got {raw.max()}")
        return raw.astype(np.int64)
    try:
        num = raw.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        num = np.array([_number(v) for v in raw.flat], dtype=np.float64).reshape(raw.shape)
    whole = np.isfinite(num) & (num == np.round(num))
    if not whole.all():
        bad = raw.flat[int(np.argmin(whole.ravel()))]
        raise ValueError(f"{name}: labels must be integers (class indices), got {raw.dtype} values such as {bad!r}")
    if num.size and np.abs(num).max() >= 2.0**63:  # the cast would wrap to -2**63 with a warning at most
        raise ValueError(f"{name}: a class label must fit in 64 bits, got {raw.flat[int(np.abs(num).argmax())]!r}")
    return num.astype(np.int64)


def _number(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError, OverflowError):
        return np.nan


@dataclass
class ImageSet:
    images: np.ndarray  # uint8 (N, H, W, C)
    labels: np.ndarray | None
    name: str
    paths: list[str] | None = None  # where each image came from (folder sources), in order

    def __post_init__(self):
        a = self.images
        if a.ndim == 3:
            self.images = a = a[..., None]
        if a.dtype != np.uint8 or a.ndim != 4 or a.shape[-1] not in (1, 3):
            raise ValueError(f"{self.name}: images must be uint8 (N, H, W, 1|3), got {a.dtype} {a.shape}")
        if self.labels is not None:
            self.labels = _integer_labels(self.labels, self.name)
            if len(self.labels) != len(a):
                raise ValueError(f"{self.name}: {len(a)} images but {len(self.labels)} labels")
        if self.paths is not None:
            self.paths = [str(p) for p in self.paths]
            if len(self.paths) != len(a):
                raise ValueError(f"{self.name}: {len(a)} images but {len(self.paths)} paths")

    def __len__(self):
        return len(self.images)

    @property
    def size(self) -> int:
        """The side of the square the images are cropped to (``conform`` crops first)."""
        return min(self.images.shape[1], self.images.shape[2])

    @property
    def channels(self) -> int:
        return self.images.shape[-1]

    def tensor(self):
        """The images as a uint8 torch tensor (N, C, H, W) (the arrays are channels-last)."""
        from .images import as_images

        a = self.images if self.images.ndim == 4 else self.images[..., None]
        return as_images(a, name=self.name, layout="nhwc")

    def subset(self, idx, name=None) -> "ImageSet":
        paths = None if self.paths is None else np.asarray(self.paths, dtype=object)[idx].tolist()
        return ImageSet(self.images[idx], None if self.labels is None else self.labels[idx], name or self.name, paths)


def npy_member(archive, member: str) -> tuple[tuple, np.dtype, int]:
    """``(shape, dtype, bytes stored after the header)`` of the ``.npy`` member ``member``
    of an open zip ``archive``, from its header alone (nothing else is read)."""
    with archive.open(member) as f:
        version = np.lib.format.read_magic(f)
        shape, _, dtype = (np.lib.format.read_array_header_1_0(f) if version == (1, 0)
                           else np.lib.format.read_array_header_2_0(f))
        return tuple(int(n) for n in shape), dtype, archive.getinfo(member).file_size - f.tell()


def _declared_bytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=object)) * dtype.itemsize


def load_plain_npz(path, error=ValueError, what: str = "an .npz archive", keys=None) -> dict:
    """The arrays of an ``.npz`` file (only ``keys`` when given; the others are never
    read), read with ``allow_pickle=False``: a file that is not a zip archive, is
    damaged, holds pickled objects or a member whose header declares more (or less) than
    its bytes raises ``error`` in one line (nothing in it is unpickled, nothing is
    allocated for a claim). ``what`` names the expected file in the message."""
    import zipfile
    import zlib

    from ..validation import regular_file

    path = regular_file(path, what.split(" (")[0].removeprefix("an ").removeprefix("a "), error)
    if not zipfile.is_zipfile(path):
        raise error(f"cannot read {path}: not {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            problem = _npz_problem(archive, keys)
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError) as e:
        raise error(f"cannot read {path}: damaged archive ({type(e).__name__}: {str(e).splitlines()[0][:120]})") \
            from None
    if problem:
        raise error(f"cannot read {path}: {problem}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files if keys is None or k in keys}
    except (zipfile.BadZipFile, zlib.error) as e:
        raise error(f"cannot read {path}: damaged archive ({e})") from None
    except ValueError as e:  # object arrays need pickle: refused
        if "pickle" in str(e):
            raise error(f"refusing {path}: it holds pickled objects; oodkit reads plain arrays only") from None
        raise error(f"cannot read {path}: {str(e).splitlines()[0]}") from None
    except (OSError, EOFError) as e:
        raise error(f"cannot read {path}: {what} expected ({type(e).__name__}: {e})") from None


def _npz_problem(archive, keys) -> str | None:
    """What is wrong with an open ``.npz`` archive before any array is read: a member
    given twice (numpy would read the last), or one to be read whose header declares
    other than its bytes; None when nothing is."""
    names = archive.namelist()
    if len(set(names)) < len(names):
        return f"member {next(n for n in names if names.count(n) > 1)!r} appears twice"
    for member in names:
        key = member.removesuffix(".npy")
        if keys is not None and key not in keys:
            continue
        shape, dtype, stored = npy_member(archive, member)
        if not dtype.hasobject and _declared_bytes(shape, dtype) != stored:
            return f"member {key!r} declares shape {shape} ({dtype}) but holds {stored:,} bytes: the file is damaged"
    return None


def read_npz(path, name=None) -> ImageSet:
    """Arrays file with ``images`` uint8 (N, H, W[, C]) and optionally ``labels`` (N,)."""
    path = Path(path)
    if not path.is_file():
        raise DataNotFound(f"no such file: {path}")
    z = load_plain_npz(path, keys=("images", "labels"))
    if "images" not in z:
        with zipfile.ZipFile(path) as archive:
            names = sorted(n.removesuffix(".npy") for n in archive.namelist())
        raise ValueError(f"{path} has no 'images' array (has {names})")
    images, labels = z["images"], z.get("labels")
    if images.dtype != np.uint8:
        raise ValueError(f"{path}: 'images' must be uint8 pixels, got {images.dtype}")
    return ImageSet(images, labels, name or path.stem)


IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def pil_pixels(im) -> np.ndarray:
    """A PIL image as uint8 (H, W) grey or (H, W, 3) colour; alpha is dropped. 16-bit
    images give their high byte; 32-bit integer and float images (modes I and F) are
    refused: their range is not in the file, and no reading of them is safe."""
    if im.mode.startswith("I;16") or (im.mode == "I" and im.format == "PNG"):  # older Pillow: 16-bit PNG as "I"
        return (np.clip(np.asarray(im, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
    if im.mode.startswith("I") or im.mode == "F":
        kind = "float" if im.mode == "F" else "32-bit integer"
        raise ValueError(f"{kind} pixels (PIL mode {im.mode}) have no fixed range to read as 8-bit; "
                         "save the images as 8- or 16-bit")
    if im.mode == "P":  # via RGBA, so that a transparent palette entry keeps its colour
        a = np.asarray(im.convert("RGBA"))[..., :3]
        return a[..., 0].copy() if (a == a[..., :1]).all() else a
    if im.mode in ("1", "L", "LA", "F"):
        return np.asarray(im.convert("L"))
    return np.asarray(im.convert("RGB"))


def _first_line(e: Exception) -> str:
    """An exception's message cut to its first line (PIL's can run to several)."""
    text = re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "", str(e)).strip()  # an archive member's buffer
    return text.splitlines()[0] if text else type(e).__name__


def decode_image(src, label: str, side: int, first=None) -> np.ndarray:
    """One image file (a path or a binary file object; ``label`` names it in errors)
    decoded to uint8 (H, W[, C]), centre-cropped square and brought to ``side``.
    ``first``: ``(name, (w, h))`` of the image whose size every one must have (None:
    any size is resized)."""
    from PIL import Image

    from .images import ImageInputError

    try:
        with Image.open(src) as im:
            if first is not None and im.size != first[1]:  # refuse before decoding
                (w0, h0), (w, h) = first[1], im.size
                raise ImageInputError(
                    f"images differ in size: {first[0]} is {w0}x{h0}, {label} is {w}x{h}; make all images one "
                    "size or pass resize=N (--resize N)"
                )
            im.load()
            a = pil_pixels(im)
    except ImageInputError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, struct.error, ... for bad files
        raise ImageInputError(f"cannot read image {label}: {_first_line(e)}") from e
    h, w = a.shape[:2]
    s = min(h, w)
    a = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    if s != side:
        a = np.asarray(Image.fromarray(a).resize((side, side), Image.BILINEAR))
    return a


def first_size(src, label: str, max_size: int):
    """``((label, (w, h)), side)`` of the image every other must match when no resize is
    given: its size from the header, its square side capped at ``max_size``."""
    from PIL import Image

    from .images import ImageInputError

    try:
        with Image.open(src) as im:
            return (label, im.size), min(max_size, *im.size)
    except Exception as e:
        raise ImageInputError(f"cannot read image {label}: {_first_line(e)}") from e


def stack_pixels(arrays: list) -> np.ndarray:
    """Decoded images as one uint8 (N, H, W, C) array; grey ones repeated to RGB when any
    image is in colour (grey stays one channel only if every image is grey)."""
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=-1) for a in arrays]
    return np.stack(arrays)


class _FolderImages:
    """Map-style dataset over image files: item i is file i decoded (:func:`decode_image`);
    one file open at a time."""

    def __init__(self, files, root, first, side):
        self.files, self.root, self.first, self.side = files, root, first, side

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        p = self.files[i]
        return decode_image(p, str(p), self.side, self.first)


class FolderListing:
    """An ImageFolder (``class/xxx.png``) or a flat folder of images, listed once in
    sorted path order (hidden files and other extensions skipped) and read in any range
    of that order: how ``folder:`` sets are read whole and in chunks alike. Labels come
    from class folders (none for a flat folder); every image must have the first one's
    size unless ``resize`` is given."""

    def __init__(self, path, name=None, max_size: int = 64, resize: int | None = None):
        path = Path(path)
        if not path.is_dir():
            raise DataNotFound(f"no such folder: {path}")
        entries = [p for p in path.rglob("*") if not any(part.startswith(".") for part in p.relative_to(path).parts)]
        visible = [p for p in entries if p.is_file()]
        self.files = sorted(p for p in visible if p.suffix.lower() in IMAGE_EXTS)
        skipped = sorted(p for p in visible if p.suffix.lower() not in IMAGE_EXTS)
        # rglob does not enter linked folders; broken links and pipes are no files
        unread = sorted(p for p in entries if (p.is_dir() and p.is_symlink()) or not (p.is_dir() or p.is_file()))
        import warnings

        if skipped:
            warnings.warn(f"{path}: skipped {len(skipped)} file(s) that are not images by their extension "
                          f"({', '.join(sorted(IMAGE_EXTS))}), e.g. {skipped[0].relative_to(path)}", stacklevel=3)
        if unread:
            warnings.warn(f"{path}: skipped {len(unread)} linked folder(s), broken link(s) or special file(s), e.g. "
                          f"{unread[0].relative_to(path)}: copy what they hold into the folder to score it",
                          stacklevel=3)
        for p in self.files:  # a name that cannot be written to the output's path column
            try:
                str(p).encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"{path}: the file name {ascii(str(p.relative_to(path)))} is not valid UTF-8: "
                                 "rename it") from None
        if not self.files:
            raise DataNotFound(f"no images ({', '.join(sorted(IMAGE_EXTS))}) under {path}")
        first, side = (None, resize) if resize else first_size(self.files[0], str(self.files[0]), max_size)
        self.root, self.name = path, name or path.name
        self.reader = _FolderImages(self.files, path, first, side)
        rel = [p.parent.relative_to(path).as_posix() for p in self.files]
        if "." in rel and len(set(rel)) > 1:  # a loose image would silently be a class of its own
            loose = next(p for p, r in zip(self.files, rel) if r == ".")
            raise ValueError(f"{path}: images both at its top ({loose.name}) and in class folders: move the loose "
                             "ones into a class folder, or score the class folders alone")
        classes = {c: i for i, c in enumerate(sorted(set(rel)))}
        # class folders give labels; a flat folder has none (not a column of zeros)
        self.labels = None if set(rel) == {"."} else np.array([classes[c] for c in rel])

    def __len__(self):
        return len(self.files)

    def read(self, start: int = 0, stop: int | None = None, num_workers: int = 0) -> ImageSet:
        """Images ``start:stop`` of the listing (``num_workers`` > 0: decoded in that
        many DataLoader worker processes, in order)."""
        idx = range(len(self.files))[start:stop]
        if num_workers:
            import torch.utils.data as tud

            from .images import ImageInputError

            loader = tud.DataLoader(tud.Subset(self.reader, list(idx)), batch_size=None, shuffle=False,
                                    num_workers=num_workers, collate_fn=lambda a: a)
            it, error = iter(loader), None
            try:
                arrays = list(it)
            except ImageInputError as e:  # a worker's error arrives wrapped in its traceback: keep the message
                last = [line for line in str(e).splitlines() if line.strip()][-1]
                error = last.split("ImageInputError: ", 1)[-1]
            finally:
                # the workers stop now: an iterator left to the garbage collector (tracebacks hold it in a
                # cycle) keeps them decoding the rest of the files. DataLoader has no public close.
                getattr(it, "_shutdown_workers", lambda: None)()
                del it
            if error is not None:
                raise ImageInputError(error) from None
        else:
            arrays = [self.reader[i] for i in idx]
        labels = None if self.labels is None else self.labels[idx.start:idx.stop]
        return ImageSet(stack_pixels(arrays), labels, self.name, paths=[str(self.files[i]) for i in idx])


def read_folder(path, name=None, max_size: int = 64, resize: int | None = None, num_workers: int = 0) -> ImageSet:
    """An ImageFolder (``class/xxx.png``) or a flat folder of images, read in sorted path
    order (kept in ``paths``); hidden files and other extensions are skipped. Every image
    must have one size: non-square ones are centre-cropped square, and downsampled to
    ``max_size`` if larger. ``resize=N`` accepts mixed sizes instead: each image is
    centre-cropped square and resized to N x N. Grayscale stays one channel only if every
    image is grayscale. ``num_workers`` > 0 decodes the files in that many DataLoader
    worker processes."""
    return FolderListing(path, name, max_size, resize).read(num_workers=num_workers)


# -- torchvision -----------------------------------------------------------------------
def _tv_hint(name: str) -> str:
    return {
        "cifar10": "cifar-10-batches-py/",
        "cifar100": "cifar-100-python/",
        "svhn": "train_32x32.mat / test_32x32.mat",
        "mnist": "MNIST/raw/*-ubyte",
        "fashionmnist": "FashionMNIST/raw/*-ubyte",
        "celeba": "celeba/img_align_celeba/ and its list files",
        "textures": "dtd/dtd/images/",
    }[name]


def _present_only(cls):
    """torchvision checks the md5 of CIFAR and SVHN files against the official release.
    That check belongs to downloading; reading files already on disk (re-encoded copies,
    subsets) only needs them to be present, and parsing validates their content."""

    class PresentOnly(cls):
        def _check_integrity(self):
            files = getattr(self, "train_list", []) + getattr(self, "test_list", [])
            if files:
                base = Path(self.root) / self.base_folder
                wanted = self.train_list if self.train else self.test_list
                return all((base / f[0]).is_file() for f in wanted)
            return (Path(self.root) / self.filename).is_file()


    PresentOnly.__name__ = cls.__name__
    return PresentOnly


# the "python version" layout: folder, batch files per split, label key
_CIFAR = {"cifar10": ("cifar-10-batches-py", {"train": [f"data_batch_{i}" for i in range(1, 6)],
                                              "test": ["test_batch"]}, "labels"),
          "cifar100": ("cifar-100-python", {"train": ["train"], "test": ["test"]}, "fine_labels")}


def read_cifar(name: str, split: str, root, download: bool = False) -> ImageSet:
    """CIFAR-10 / CIFAR-100 from their "python version" batch files under ``root``, read
    by :func:`~oodkit.data.safe_pickle.load_plain_pickle` (no code in a crafted batch runs;
    torchvision's reader calls ``pickle.load``). ``download`` fetches the official archive
    with torchvision's md5-checked downloader first."""
    from .safe_pickle import load_plain_pickle

    folder, files, label_key = _CIFAR[name]
    if split not in files:
        raise DataNotFound(f"{name} has no {split!r} split (train, test)")
    base = Path(root) / folder
    if download and not all((base / f).is_file() for f in files[split]):
        import torchvision.datasets as tvd
        from torchvision.datasets.utils import download_and_extract_archive

        cls = tvd.CIFAR10 if name == "cifar10" else tvd.CIFAR100
        download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
    missing = [f for f in files[split] if not (base / f).is_file()]
    if missing:
        raise DataNotFound(f"Dataset not found or corrupted: {base / missing[0]} is missing")
    data, labels = [], []
    for f in files[split]:
        batch = load_plain_pickle(base / f)
        try:
            pixels, targets = batch["data"], batch[label_key]
            # the release's layout: a uint8 array and a flat list of ints (nothing else is walked)
            if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
                raise TypeError(f"data is a {type(pixels).__name__}, not a uint8 array")
            if not isinstance(targets, (list, np.ndarray)) or not all(isinstance(v, (int, np.integer))
                                                                      for v in targets):
                raise TypeError("labels are not a flat list of integers")
            x = pixels.reshape(-1, 3, 32, 32)
            y = np.asarray(targets, dtype=np.int64).reshape(-1)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{base / f} is not a {name} batch ({type(e).__name__}: {e})") from None
        if len(x) != len(y):
            raise ValueError(f"{base / f} is not a {name} batch: {len(x)} images but {len(y)} labels")
        data.append(x.transpose(0, 2, 3, 1))
        labels.append(y)
    return ImageSet(np.ascontiguousarray(np.concatenate(data)), np.concatenate(labels), name)


def torchvision_set(name: str, split: str, root, download: bool = False) -> ImageSet:
    """Read one of torchvision's data sets from its own on-disk files under ``root``
    (``download`` fetches and md5-checks them first)."""
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    train = split == "train"
    root = str(root)

    def reader(cls):
        return cls if download else _present_only(cls)

    try:
        return _torchvision_set(name, split, root, download, tvd, T, train, reader)
    except OSError as e:  # a download that could not reach its server (URLError, timeouts)
        if not download or isinstance(e, (FileNotFoundError, PermissionError)):
            raise
        raise DataNotFound(f"{name} ({split}): the download failed ({getattr(e, 'reason', e)})") from None


def _torchvision_set(name, split, root, download, tvd, T, train, reader) -> ImageSet:
    if name in ("cifar10", "cifar100"):
        return read_cifar(name, split, root, download)
    try:
        if name == "svhn":
            ds = reader(tvd.SVHN)(root, split=split, download=download)
            return ImageSet(np.ascontiguousarray(ds.data.transpose(0, 2, 3, 1)), np.asarray(ds.labels), name)
        if name in ("mnist", "fashionmnist"):
            cls = tvd.MNIST if name == "mnist" else tvd.FashionMNIST
            ds = cls(root, train=train, download=download)
            return ImageSet(ds.data.numpy(), ds.targets.numpy(), name)
        if name == "celeba":
            tf = T.Compose([T.CenterCrop(140), T.Resize(64)])
            ds = tvd.CelebA(root, split="valid" if split == "val" else split, download=download, transform=tf)
        elif name == "textures":
            tf = T.Compose([T.Resize(64), T.CenterCrop(64)])
            ds = tvd.DTD(root, split=split, download=download, transform=tf)
        else:
            raise KeyError(name)
    except RuntimeError as e:  # torchvision's "Dataset not found or corrupted"
        raise DataNotFound(str(e).splitlines()[0]) from None
    images = np.stack([np.asarray(ds[i][0].convert("RGB")) for i in range(len(ds))])
    return ImageSet(images, None, name)


# -- data that ships with installed packages ------------------------------------------
DIGITS_TEST_FRACTION = 1 / 3


def digits(split: str, classes=None, name="digits") -> ImageSet:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 17 grey levels scaled
    to 0..255); a fixed stratified third is the test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    idx_train, idx_test = train_test_split(
        np.arange(len(images)), test_size=DIGITS_TEST_FRACTION, random_state=0, stratify=d.target
    )
    idx = idx_train if split == "train" else idx_test
    if classes is not None:
        idx = idx[np.isin(d.target[idx], list(classes))]
    return ImageSet(images[idx], d.target[idx], name)


def sample_patches(split: str, n: int = 600, size: int = 8) -> ImageSet:
    """Grey patches of the two photographs that ship with scikit-learn (a Chinese temple,
    a flower), downsampled 8x first so that a patch holds structure rather than flat
    colour: real natural-image content for the embedded benchmark."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(0 if split == "train" else 1)
    patches = []
    for img in load_sample_images().images:
        pil = Image.fromarray(img).convert("L")
        pil = pil.resize((pil.width // 8, pil.height // 8), Image.BILINEAR)
        a = np.asarray(pil)
        for _ in range(n // 2):
            i, j = rng.integers(0, a.shape[0] - size), rng.integers(0, a.shape[1] - size)
            patches.append(a[i : i + size, j : j + size])
    return ImageSet(np.stack(patches), None, "sample-patches")


def letters(split: str, size: int = 8) -> ImageSet:
    """Letters A-Z and a-z drawn in matplotlib's bundled DejaVu fonts, light on dark like
    the digits, with small random shifts and scales: real glyphs, not digits."""
    import matplotlib
    from PIL import Image, ImageDraw, ImageFont

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = sorted(font_dir.glob("DejaVuSans*.ttf"))[:4] or sorted(font_dir.glob("*.ttf"))[:4]
    rng = np.random.default_rng(2 if split == "train" else 3)
    chars = [chr(c) for c in range(ord("A"), ord("Z") + 1)] + [chr(c) for c in range(ord("a"), ord("z") + 1)]
    out = []
    big = 32
    for font_path in fonts:
        for ch in chars:
            for _ in range(3):
                font = ImageFont.truetype(str(font_path), int(rng.integers(20, 28)))
                canvas = Image.new("L", (big, big), 0)
                draw = ImageDraw.Draw(canvas)
                l, t, r, b = draw.textbbox((0, 0), ch, font=font)
                x = (big - (r - l)) // 2 - l + int(rng.integers(-2, 3))
                y = (big - (b - t)) // 2 - t + int(rng.integers(-2, 3))
                draw.text((x, y), ch, fill=255, font=font)
                out.append(np.asarray(canvas.resize((size, size), Image.BILINEAR)))
    return ImageSet(np.stack(out), None, "letters")


def synthetic(kind: str, split: str, n: int, size: int, channels: int) -> ImageSet:
    """``noise``: i.i.d. uniform pixels; ``constant``: one random grey level (or colour)
    per image. Seeded per split, so a split is the same every time."""
    rng = np.random.default_rng({"train": 10, "test": 11}.get(split, 12) + (0 if kind == "noise" else 100))
    if kind == "noise":
        images = rng.integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)
    elif kind == "constant":
        levels = rng.integers(0, 256, size=(n, 1, 1, channels), dtype=np.uint8)
        images = np.broadcast_to(levels, (n, size, size, channels)).copy()
    else:
        raise KeyError(kind)
    return ImageSet(images, None, kind)
