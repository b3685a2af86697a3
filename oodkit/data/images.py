"""Image arrays in, model-ready tensors out.

Conventions: stored images are uint8 (N, H, W, C) as datasets ship them; model inputs
are float32 (N, C, H, W) in [-1, 1] (``x = 2k/255 - 1``). Anything else is refused
with a message that says what was expected.
"""
from __future__ import annotations

import hashlib
import io
import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["as_images", "conform", "to_float", "to_uint8", "jpeg_roundtrip", "png_bits", "batches", "fingerprint"]


class ImageInputError(ValueError):
    """Images of the wrong shape, dtype, range or content."""


def _from_iterable(X) -> torch.Tensor:
    from PIL import Image

    items = []
    for item in X:
        if isinstance(item, (tuple, list)):
            item = item[0]  # (image, label) pairs
        if isinstance(item, Image.Image):
            a = np.asarray(item)
            item = torch.from_numpy(a.copy())
            if item.ndim == 2:
                item = item[None]
            else:
                item = item.permute(2, 0, 1)
        elif isinstance(item, np.ndarray):
            item = torch.from_numpy(item)
        if not isinstance(item, torch.Tensor):
            raise ImageInputError(f"cannot read an image from a {type(item).__name__}")
        items.append(item if item.ndim == 4 else item[None])
    if not items:
        raise ImageInputError("got no images")
    shapes = {tuple(i.shape[1:]) for i in items}
    if len(shapes) > 1:
        raise ImageInputError(f"images differ in shape: {sorted(shapes)[:3]}; resize them to one size first")
    return torch.cat(items)


def as_images(X, name: str = "X") -> torch.Tensor:
    """Validate and standardise a batch of images.

    Accepts uint8 arrays/tensors (N, H, W), (N, H, W, C) or (N, C, H, W) (channels-last is
    recognised when the last axis has 1, 3 or 4 entries and the second does not); float
    arrays/tensors (N, C, H, W) scaled to [-1, 1]; a torch ``Dataset`` or ``DataLoader``
    or any iterable of images or (image, label) pairs (PIL images, uint8 or float tensors).

    Returns uint8 (N, C, H, W) or float32 (N, C, H, W) in [-1, 1].
    """
    if isinstance(X, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(X))
    elif isinstance(X, torch.Tensor):
        x = X.detach().cpu()
    elif hasattr(X, "__iter__") or hasattr(X, "__getitem__"):
        x = _from_iterable(X)
    else:
        raise ImageInputError(f"{name}: expected an array, tensor, Dataset or DataLoader of images, got {type(X).__name__}")

    if x.ndim == 3:
        x = x[:, None]
    if x.ndim != 4:
        raise ImageInputError(f"{name}: expected images (N, C, H, W) or (N, H, W, C), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ImageInputError(f"{name}: got no images (shape {tuple(x.shape)})")
    if x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = x.permute(0, 3, 1, 2)
    if x.shape[1] not in (1, 3, 4):
        raise ImageInputError(f"{name}: images must have 1, 3 or 4 channels, got shape {tuple(x.shape)}")
    if x.shape[1] == 4:  # drop alpha
        x = x[:, :3]
    if x.dtype == torch.uint8:
        return x.contiguous()
    if x.is_floating_point():
        x = x.float()
        if not torch.isfinite(x).all():
            bad = (~torch.isfinite(x)).flatten(1).any(1).nonzero().flatten()[:5].tolist()
            raise ImageInputError(f"{name}: images contain NaN or inf (first at indices {bad})")
        lo, hi = x.min().item(), x.max().item()
        if lo < -1.0 - 1e-4 or hi > 1.0 + 1e-4:
            raise ImageInputError(
                f"{name}: float images must be scaled to [-1, 1], got values in [{lo:.4g}, {hi:.4g}]; "
                "pass uint8 pixels or rescale with x = 2 * x01 - 1"
            )
        if lo >= 0.0 and hi > 0.5:
            warnings.warn(
                f"{name}: float images lie in [{lo:.3g}, {hi:.3g}]; oodkit expects [-1, 1], "
                "not [0, 1] (ToTensor's range): rescale with x = 2 * x01 - 1",
                stacklevel=3,
            )
        return x.clamp(-1, 1).contiguous()
    if x.dtype in (torch.int16, torch.int32, torch.int64, torch.uint16 if hasattr(torch, "uint16") else torch.int16):
        if x.min() < 0 or x.max() > 255:
            raise ImageInputError(f"{name}: integer images must hold 8-bit pixels 0..255")
        return x.to(torch.uint8).contiguous()
    raise ImageInputError(f"{name}: unsupported image dtype {x.dtype}; pass uint8 pixels or floats in [-1, 1]")


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


def conform(x: torch.Tensor, size: int, channels: int, ref_size: int | None = None, chunk: int = 4096) -> torch.Tensor:
    """Bring images (N, C, H, W) to a model's ``channels`` and square ``size``.

    Grayscale becomes RGB by repeating the channel (RGB becomes grayscale by luma).
    Non-square images are centre-cropped. When ``ref_size`` (the smaller side of an OOD
    pair) is below the images' own size they are first downsampled to it, so that both
    sides of a pair carry the same detail before the common resize: resizing only one
    side inflates AUROC (DiffPath, Table 7). Keeps the dtype (uint8 or float).
    """
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
