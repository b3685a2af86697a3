"""Image arrays in, model-ready tensors out.

Conventions: stored images are uint8 (N, H, W, C) as datasets ship them; model inputs
are float32 (N, C, H, W) in [-1, 1] (``x = 2k/255 - 1``). Anything else is refused
with a message that says what was expected.
"""
from __future__ import annotations

import hashlib
import io
import math
import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["as_images", "conform", "to_float", "to_uint8", "jpeg_roundtrip", "png_bits", "batches", "fingerprint"]


class ImageInputError(ValueError):
    """Images of the wrong shape, dtype, range or content."""


def _from_iterable(X) -> tuple[torch.Tensor, bool]:
    """Stack the images of a Dataset, DataLoader or iterable. Returns the batch and
    whether any item was a numpy array (whose layout is guessed, never assumed)."""
    from PIL import Image

    from .sources import pil_pixels

    # a batching DataLoader yields batches: (B, H, W) is B grey images, not one of B channels
    batched = isinstance(X, torch.utils.data.DataLoader) and X.batch_sampler is not None
    items, any_numpy = [], False
    for item in X:
        if isinstance(item, dict):
            raise ImageInputError(f"cannot read an image from a dict (keys {sorted(map(str, item))[:4]}); pass the "
                                  "images, e.g. [d['image'] for d in X]")
        pair = isinstance(item, (tuple, list))
        if pair:
            item = item[0]  # (image, label) pairs
        if isinstance(item, Image.Image):  # CMYK, YCbCr, palette, 16-bit, ...: read as the folder reader reads files
            try:
                a = pil_pixels(item)
            except ValueError as e:
                raise ImageInputError(f"cannot read a {item.mode} image: {e}") from None
            item = torch.from_numpy(a.copy())
            if item.ndim == 2:
                item = item[None]
            else:
                item = item.permute(2, 0, 1)
        elif isinstance(item, np.ndarray):
            any_numpy = True
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            what = type(item).__name__
            what = f"{'an' if what[0] in 'aeiou' else 'a'} {what}"
            raise ImageInputError(f"cannot read an image from {what}" + (
                " (the first entry of each pair is read as the image: (image, label))" if pair else ""))
        items.append(item if item.ndim == 4 or (batched and item.ndim == 3) else item[None])
    if not items:
        raise ImageInputError("got no images")
    shapes = {tuple(i.shape[1:]) for i in items}
    if len(shapes) > 1:
        raise ImageInputError(f"images differ in shape: {sorted(shapes)[:3]}; resize them to one size first")
    kinds = {i.is_floating_point() for i in items}
    if len(kinds) > 1:
        dtypes = sorted({str(i.dtype).removeprefix("torch.") for i in items})
        raise ImageInputError(f"images differ in dtype ({', '.join(dtypes)}): pass them all as uint8 pixels or all "
                              "as floats in [-1, 1]")
    return torch.cat(items), any_numpy


#: Float inputs with no negative value and more than this many values are refused as
#: probably being in [0, 1] (a smaller array only warns: a few bright pixels may be real).
HANDFUL = 64

_VALUE_RANGES = {(-1, 1): None, (0, 1): (2.0, -1.0), (0, 255): (2.0 / 255.0, -1.0)}


def _channel_rank(n: int) -> int:
    """How channel-like an axis of ``n`` entries is: 2 for grey/RGB, 1 for RGBA, 0 otherwise."""
    return 2 if n in (1, 3) else 1 if n == 4 else 0


def _layout(x: torch.Tensor, layout: str | None, is_tensor: bool, name: str) -> str:
    shape = tuple(x.shape)
    if layout is not None:
        if layout not in ("nchw", "nhwc"):
            raise ImageInputError(f'{name}: layout must be "nchw", "nhwc" or None, got {layout!r}')
        return layout
    first, last = _channel_rank(shape[1]), _channel_rank(shape[3])
    if first > last:
        return "nchw"
    if last > first:
        return "nhwc"
    if first == 0:
        return "nchw"  # neither axis holds channels: refused below with the channel error
    if is_tensor:
        return "nchw"  # torch's convention, and what as_images returns
    raise ImageInputError(
        f"{name}: shape {shape} is ambiguous: axis 1 and axis 3 could both hold the channels; "
        f'pass layout="nhwc" or layout="nchw" to as_images, or a torch tensor in (N, C, H, W), '
        f"e.g. torch.from_numpy(np.transpose(x, (0, 3, 1, 2)).copy()) for channels-last x"
    )


def _check_3d(shape: tuple, name: str) -> None:
    n, h, w = shape
    if n == 3 and h == w > 4:  # also one (C, H, W) RGB image; a leading 1 reads the same either way
        what, grey = "(C, H, W)", "x[:, None]"
    elif w in (1, 3, 4) and n == h > 4:  # also one (H, W, C) image
        what, grey = "(H, W, C)", "x[:, :, :, None]"
    else:
        return
    raise ImageInputError(
        f"{name}: shape {shape} is ambiguous: {n} grey {h}x{w} images (3-D input is read as (N, H, W)) "
        f"or one {what} image? pass x[None] for one image, or {grey} for a batch of grey images"
    )


def as_images(X, name: str = "X", *, layout: str | None = None, value_range: tuple | None = None) -> torch.Tensor:
    """Validate and standardise a batch of images.

    Accepts arrays/tensors of uint8 pixels (or integers 0..255) or floats in [-1, 1]
    shaped (N, H, W) (grey), (N, C, H, W) or (N, H, W, C) with C in 1, 3 or 4 (alpha is
    dropped); a torch ``Dataset`` or ``DataLoader`` or any iterable of images or
    (image, label) pairs (PIL images, arrays or tensors).

    Layout rules (nothing is guessed where two readings are possible):

    * 2-D input is one image without a batch axis and is refused: pass ``x[None]``.
    * 3-D input is (N, H, W) grey images, except shapes that also read as a single
      square image and are refused as ambiguous: (3, H, H) (one RGB (C, H, W) image?)
      and (H, H, C) with C in 1, 3, 4 (one (H, W, C) image?), for H > 4. Fix:
      ``x[None]`` for one image, ``x[:, None]`` for a grey batch. (1, H, W) is one grey
      image either way; (4, H, W) stays 4 grey images.
    * 4-D input: the channel axis is axis 1 or axis 3, whichever alone holds 1 or 3
      entries (else whichever alone holds 4). When both hold a channel count, e.g.
      (N, 3, 3, 3) or (N, 1, 4, 1), a torch tensor is read as (N, C, H, W) (torch's
      convention; so ``as_images`` is idempotent), and a numpy array is refused as
      ambiguous. ``layout="nchw"`` or ``"nhwc"`` states the layout and skips the guess.

    Value rules: floats must be finite and in [-1, 1] (``x = 2k/255 - 1``). A float
    input with no negative value at all and more than ``HANDFUL`` values is refused:
    it is almost surely [0, 1] data (``ToTensor``'s range), which read as [-1, 1] would
    be off by ~log 2 per pixel; convert with ``x * 2 - 1`` or declare the range with
    ``value_range``: ``(-1, 1)`` (accepts data that merely happen to be non-negative),
    ``(0, 1)`` or ``(0, 255)`` (both converted to [-1, 1]). Values outside the declared
    range, NaN and inf are refused. Every refusal is a one-line :class:`ImageInputError`.
    An image whose floats all lie on the 256 levels of 8-bit pixels (within
    :func:`level_tolerance` of its dtype: ``x / 127.5 - 1`` and ``x * (2/255) - 1`` differ
    by a float32 step, float16 and bfloat16 copies by more) is read as those pixels, so
    images converted from 8-bit data score exactly as the pixels do, in any batch; every
    bfloat16 image is read as 8-bit pixels (it keeps no finer detail near +-1).

    Returns uint8 (N, C, H, W) (every image on the levels) or float32 (N, C, H, W) in
    [-1, 1], C in 1 or 3.
    """
    value_range = _checked_range(value_range, name)
    x, is_tensor = _tensor(X, name)
    return _pixels(_nchw(x, layout, is_tensor, name), value_range, name)


def _checked_range(value_range, name: str):
    if value_range is None:
        return None
    given = value_range
    try:
        ok = isinstance(given, (tuple, list)) and len(given) == 2
        value_range = tuple(float(v) for v in given) if ok else None
    except (TypeError, ValueError):
        value_range = None
    if value_range not in _VALUE_RANGES:
        raise ImageInputError(
            f"{name}: value_range must be None, (-1, 1), (0, 1) or (0, 255), got {given!r}"
        )
    return value_range


# torch's samplers that draw, shuffle or share out (a DistributedSampler keeps one process's share)
_REORDERING = (torch.utils.data.RandomSampler, torch.utils.data.SubsetRandomSampler,
               torch.utils.data.WeightedRandomSampler, torch.utils.data.DistributedSampler)


def _tensor(X, name: str):
    """``X`` as a CPU tensor, and whether it came as torch (which decides ambiguous layouts)."""
    if isinstance(X, np.generic) or (isinstance(X, np.ndarray) and X.ndim == 0):
        raise ImageInputError(f"{name}: got one number ({X!r}), not images (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if isinstance(X, (list, tuple)) and X and isinstance(X[0], (list, tuple, int, float)):
        nested = _nested_array(X)  # pixel values as nested Python lists
        if nested is not None:
            X = nested
    if isinstance(X, np.ndarray):
        if X.dtype.kind not in "biuf":
            raise ImageInputError(f"{name}: unsupported image dtype {X.dtype}; pass uint8 pixels or floats in [-1, 1]")
        if X.dtype.kind == "f" and X.dtype.itemsize > 8:  # long double: torch has no such type
            X = X.astype(np.float64)
        return torch.from_numpy(np.ascontiguousarray(X)), False
    if isinstance(X, torch.Tensor):
        if X.is_meta or X.layout != torch.strided:
            what = "a meta tensor" if X.is_meta else f"a {str(X.layout).removeprefix('torch.')} tensor"
            raise ImageInputError(f"{name}: {what} holds no image data as oodkit reads it; pass a dense tensor "
                                  "(x.to_dense()) or array")
        return X.detach().cpu(), True
    if type(X).__module__.startswith("PIL."):
        raise ImageInputError(f"{name}: got one PIL image; pass a list of images ([image]) or an array")
    if type(X).__name__ in ("DataFrame", "Series"):  # iterating one gives column names, not images
        raise ImageInputError(f"{name}: a pandas {type(X).__name__} is not a batch of images; pass an array "
                              "(N, H, W), (N, C, H, W) or (N, H, W, C)")
    sampler = getattr(getattr(X, "batch_sampler", None), "sampler", getattr(X, "sampler", None))
    if isinstance(sampler, _REORDERING):
        raise ImageInputError(f"{name}: a shuffled DataLoader (its sampler is a {type(sampler).__name__}) gives scores "
                              "in an order no one can match to its images; pass shuffle=False and no sampler, or the "
                              "Dataset itself (under torchrun oodkit shares out the images)")
    if isinstance(X, torch.utils.data.DataLoader) and X.drop_last and X.batch_size:
        left = len(X.dataset) % X.batch_size if hasattr(X.dataset, "__len__") else 0
        if left:
            raise ImageInputError(f"{name}: a DataLoader with drop_last=True leaves out its last {left} images; "
                                  "pass drop_last=False")
    if hasattr(X, "__iter__") or hasattr(X, "__getitem__"):
        x, any_numpy = _from_iterable(X)
        return x, not any_numpy
    raise ImageInputError(f"{name}: expected an array, tensor, Dataset or DataLoader of images, got {type(X).__name__}")


def _nested_array(X):
    """Nested Python lists of pixel values as an array (None when they are not one)."""
    try:
        a = np.asarray(X)
    except (ValueError, TypeError):  # ragged, or (image, label) pairs
        return None
    return a if a.dtype.kind in "biuf" and a.ndim >= 2 else None


def _nchw(x: torch.Tensor, layout, is_tensor: bool, name: str) -> torch.Tensor:
    """(N, C, H, W) with C in 1 or 3, by the layout rules of :func:`as_images`."""
    if x.ndim == 2:
        n, d = x.shape
        side = math.isqrt(d)
        flat = (f", or {n} flattened images: x.reshape({n}, {side}, {side})" if side > 1 and side * side == d else
                f", or {n} flattened images: reshape them to (N, H, W) or (N, H, W, C)")
        raise ImageInputError(
            f"{name}: got shape {tuple(x.shape)}: one image without a batch axis (pass x[None]){flat} "
            "(images are (N, H, W), (N, C, H, W) or (N, H, W, C))"
        )
    if x.ndim == 3:
        if layout is not None:
            raise ImageInputError(f"{name}: layout={layout!r} needs 4-D images, got shape {tuple(x.shape)}")
        _check_3d(tuple(x.shape), name)
        x = x[:, None]
    if x.ndim != 4:
        raise ImageInputError(f"{name}: expected images (N, C, H, W) or (N, H, W, C), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ImageInputError(f"{name}: got no images (shape {tuple(x.shape)})")
    if x.numel() == 0:
        raise ImageInputError(f"{name}: images of shape {tuple(x.shape)} have an empty axis")
    given = tuple(x.shape)
    if _layout(x, layout, is_tensor, name) == "nhwc":
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3, 4):
        how = {"nhwc": ", read with layout='nhwc' (axis 3 as the channels)",
               "nchw": ", read with layout='nchw' (axis 1 as the channels)"}.get(layout, "")
        raise ImageInputError(f"{name}: images must have 1, 3 or 4 channels, got shape {given}{how}")
    return x[:, :3] if x.shape[1] == 4 else x  # alpha dropped


def _pixels(x: torch.Tensor, value_range, name: str) -> torch.Tensor:
    """uint8 pixels, or float32 in [-1, 1], by the value rules of :func:`as_images`."""
    if x.is_floating_point():
        # checked in the input's own precision: float64 beyond float32's range is not "inf"
        tolerance = level_tolerance(x.dtype)
        return on_levels(_floats(x if x.dtype == torch.float64 else x.float(), value_range, name), tolerance)
    if value_range not in (None, (0.0, 255.0)):
        raise ImageInputError(
            f"{name}: {x.dtype} images are pixels 0..255; value_range={value_range} applies to float images only"
        )
    if x.dtype == torch.uint8:
        return x.contiguous()
    wide_unsigned = tuple(getattr(torch, t) for t in ("uint16", "uint32", "uint64") if hasattr(torch, t))
    if x.dtype in wide_unsigned:  # their min/max kernels are missing: compare in int64 (uint64 wraps negative)
        x = x.to(torch.int64)
    if x.dtype in (torch.int16, torch.int32, torch.int64):
        if x.min() < 0 or x.max() > 255:
            raise ImageInputError(f"{name}: integer images must hold 8-bit pixels 0..255")
        return x.to(torch.uint8).contiguous()
    raise ImageInputError(f"{name}: unsupported image dtype {x.dtype}; pass uint8 pixels or floats in [-1, 1]")


# How far a float may sit from an 8-bit level and still be that pixel, by the precision the
# floats came in: conversions of one pixel (x / 127.5 - 1, x * (2/255) - 1, x / 255 * 2 - 1)
# differ by a few 1e-8 in float32, and rounding to float16 / bfloat16 moves a level by up to
# 4.9e-4 / 3.9e-3, while the levels are 2/255 = 0.0078 apart. bfloat16 keeps 8 significant
# bits, so its tolerance is half that spacing (0.0 lies exactly there): every bfloat16 image is
# read as 8-bit pixels.
LEVEL_TOLERANCE = 1e-5
_LEVEL_TOLERANCES = {torch.float16: 1e-3, torch.bfloat16: 1.001 / 255.0}  # bfloat16: half a spacing, ties included


def level_tolerance(dtype: torch.dtype) -> float:
    """How far (in [-1, 1] units) a float of ``dtype`` may sit from an 8-bit level and
    still be read as that pixel."""
    return _LEVEL_TOLERANCES.get(dtype, LEVEL_TOLERANCE)


def on_levels(x: torch.Tensor, tolerance: float = LEVEL_TOLERANCE, chunk: int = 1 << 22) -> torch.Tensor:
    """Float images (N, C, H, W) in [-1, 1] with every image whose values all lie on the
    256 levels ``2k/255 - 1`` (within ``tolerance``: images converted from 8-bit pixels, by
    whichever formula) read as those pixels, so that they score exactly as the pixels do,
    whatever else is in the batch. uint8 pixels when every image is; else float32, the
    images on the levels at their exact values and the others as given."""
    rows = max(1, chunk // max(1, x[0].numel()))
    snapped = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for i in range(0, x.shape[0], rows):  # a few temporaries of one chunk, not of the whole set
        part = x[i : i + rows].double().flatten(1)
        k = ((part + 1) * 127.5).round()
        snapped[i : i + rows] = ((k * (2.0 / 255.0) - 1) - part).abs().amax(1) <= tolerance
    if snapped.all():
        return to_uint8(x).contiguous()
    out = x.float().contiguous()
    if snapped.any():
        out = out.clone() if out.data_ptr() == x.data_ptr() else out
        out[snapped] = to_float(to_uint8(x[snapped]))
    return out


def check_float_images(x: torch.Tensor, name: str = "x", pixels: bool = True) -> torch.Tensor:
    """``x`` itself (not a copy) after the value rules :func:`as_images` applies to
    float images: not empty, finite and, with ``pixels`` (images scaled to [-1, 1]), in
    range and not [0, 1] data. For float (B, C, H, W) tensors handed straight to a model."""
    if x.numel() == 0:
        raise ImageInputError(f"{name}: got no images (shape {tuple(x.shape)})")
    with torch.no_grad():
        x64 = x.detach() if x.dtype == torch.float64 else x.detach().float()
        if pixels:
            _check_floats(x64, None, name)
        else:
            _value_bounds(x64, name)
    return x


def _floats(x: torch.Tensor, value_range: tuple | None, name: str) -> torch.Tensor:
    _check_floats(x, value_range, name)
    if value_range is not None:
        scale = _VALUE_RANGES[value_range]
        if scale is not None:
            x = x * scale[0] + scale[1]
    return x.clamp(-1, 1)


def _value_bounds(x: torch.Tensor, name: str) -> tuple[float, float]:
    """The lowest and highest value of finite ``x``; NaN or inf is a one-line ImageInputError."""
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
        raise ImageInputError(f"{name}: images contain NaN or inf (first at indices {bad})")
    lo, hi = (v.item() for v in torch.aminmax(x))
    return lo, hi


def _check_range(x: torch.Tensor, name: str, declare: str = "declare value_range=(0, 255)") -> tuple[float, float]:
    """Finite and in [-1, 1] (a float32 step of slack), or a one-line ImageInputError; the
    lowest and highest value."""
    lo, hi = _value_bounds(x, name)
    if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
        raise ImageInputError(
            f"{name}: float images must be scaled to [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; "
            f"pass uint8 pixels, rescale with x = 2 * x01 - 1, or {declare}"
        )
    return lo, hi


def _check_floats(x: torch.Tensor, value_range: tuple | None, name: str) -> None:
    """The value rules of :func:`as_images` for float images (nothing is copied)."""
    if value_range is None:
        lo, hi = _check_range(x, name)
        if lo >= 0.0:
            msg = (
                f"{name}: float images hold no negative value (range [{lo:.3g}, {hi:.3g}]): oodkit takes uint8 "
                "pixels or floats in [-1, 1]; if the data are in [0, 1] (ToTensor's range) convert with x * 2 - 1, "
                "or pass value_range=(0, 1) (or value_range=(-1, 1) if they really are [-1, 1] data)"
            )
            if x.numel() > HANDFUL:
                raise ImageInputError(msg)
            warnings.warn(
                f"{name}: float images lie in [{lo:.3g}, {hi:.3g}]; oodkit expects [-1, 1], not [0, 1] "
                "(ToTensor's range): convert with x * 2 - 1, or declare value_range=(0, 1) or (-1, 1)",
                stacklevel=5,
            )
        return
    lo, hi = _value_bounds(x, name)
    a, b = value_range
    tol = 1e-4 * (b - a)
    if lo < a - tol or hi > b + tol:
        raise ImageInputError(
            f"{name}: float images have values in [{lo:.4g}, {hi:.4g}], outside the declared "
            f"value_range [{a:g}, {b:g}]"
        )


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    u8 = x.dtype == torch.uint8
    y = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y.round().clamp(0, 255).to(torch.uint8) if u8 else y.clamp(-1, 1)


def _to_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if c == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        y = (x.float() * w).sum(1, keepdim=True)
        return y.round().clamp(0, 255).to(torch.uint8) if x.dtype == torch.uint8 else y
    raise ImageInputError(f"cannot convert {c}-channel images to {channels} channels")


def conform(x, size: int, channels: int, ref_size: int | None = None, chunk: int = 4096) -> torch.Tensor:
    """Bring images (N, C, H, W) to a model's ``channels`` (1 or 3) and square ``size``.

    Grayscale becomes RGB by repeating the channel (RGB becomes grayscale by luma).
    Non-square images are centre-cropped. When ``ref_size`` (the smaller side of an OOD
    pair) is below the images' own size they are first downsampled to it, so that both
    sides of a pair carry the same detail before the common resize: resizing only one
    side inflates AUROC (DiffPath, Table 7). uint8 pixels stay uint8, float32 in [-1, 1]
    stays float32; anything else (integer pixels, arrays, other layouts) is read by
    :func:`as_images` first, which refuses floats outside [-1, 1] (declare their range
    there: ``as_images(x, value_range=(0, 255))``).
    """
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ImageInputError(f"conform: size must be a whole number of pixels >= 1, got {size!r}")
    if channels not in (1, 3) or isinstance(channels, bool):
        raise ImageInputError(f"conform: channels must be 1 or 3, got {channels!r}")
    if not (isinstance(x, torch.Tensor) and x.ndim == 4 and x.dtype in (torch.uint8, torch.float32)):
        x = as_images(x)
    elif x.shape[0] == 0:
        raise ImageInputError(f"conform: got no images (shape {tuple(x.shape)})")
    elif x.is_floating_point():
        _check_range(x, "conform", "read them with as_images(x, value_range=(0, 255)) first")
    h, w = x.shape[-2:]
    if h != w:
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        x = x[..., top : top + s, left : left + s]
    out = []
    for i in range(0, x.shape[0], chunk):
        y = _to_channels(x[i : i + chunk], channels)
        if ref_size is not None and ref_size < y.shape[-1]:
            y = _resize(y, ref_size)
        out.append(_resize(y, size))
    return torch.cat(out)


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]; float input passes through."""
    if x.dtype == torch.uint8:
        return x.float() * (2.0 / 255.0) - 1.0
    return x.float()


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [-1, 1] -> uint8 pixels; uint8 passes through."""
    if x.dtype == torch.uint8:
        return x
    return ((x.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


def fingerprint(x: torch.Tensor) -> str:
    """Content hash of an image tensor (shape, dtype and bytes): the key of score caches."""
    h = hashlib.sha1(str((tuple(x.shape), str(x.dtype))).encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def image_hashes(x: torch.Tensor) -> np.ndarray:
    """One 64-bit content hash per image (N,) int64, of its 8-bit pixels (floats in
    [-1, 1] are rounded to them first): how a model records which images it trained on,
    and how a detector finds them among the images it is fitted on."""
    px = to_uint8(torch.as_tensor(x)).contiguous().numpy().reshape(len(x), -1)
    return np.array([int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little", signed=True)
                     for row in px], dtype=np.int64)


def batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i : i + batch_size]


def _pil(img_chw: np.ndarray):
    from PIL import Image

    if img_chw.shape[0] == 1:
        return Image.fromarray(img_chw[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(img_chw.transpose(1, 2, 0)), mode="RGB")


def png_bits(x: torch.Tensor) -> np.ndarray:
    """Length in bits of each image (N, C, H, W) compressed losslessly as PNG (level 9):
    the input-complexity estimate of Serra et al. (2020). float64 (N,)."""
    u8 = to_uint8(x).numpy()
    out = np.empty(len(u8), dtype=np.float64)
    for i, img in enumerate(u8):
        buf = io.BytesIO()
        _pil(img).save(buf, format="PNG", optimize=True, compress_level=9)
        out[i] = 8.0 * buf.tell()
    return out


def jpeg_roundtrip(images_nhwc: np.ndarray, quality: int = 75) -> np.ndarray:
    """Pass uint8 images (N, H, W, C) through JPEG at ``quality``, as the local CIFAR-10
    copy was, so that both sides of a pair carry the same compression artefacts."""
    from PIL import Image

    out = np.empty_like(images_nhwc)
    for i, img in enumerate(images_nhwc):
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        buf = io.BytesIO()
        pil.save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        dec = np.asarray(Image.open(buf).convert("L" if img.shape[-1] == 1 else "RGB"))
        out[i] = dec[..., None] if img.shape[-1] == 1 else dec
    return out
