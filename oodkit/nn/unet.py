"""DDPM-style UNet: GroupNorm/SiLU residual blocks, self-attention at chosen
resolutions, dropout, optional time conditioning.

Two heads: a dense image head (``out_channels``; the DDPM baseline predicts eps with it)
or a classification head (``num_classes``: conv -> global average pool -> Linear), which
is what a classification diffusion model needs. All operations are twice
differentiable, since the CDM loss backpropagates through an input gradient.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UNet", "UNetConfig", "PRESETS", "unet_from_preset"]


MAX_WIDTH, MAX_CLASSES = 4096, 100_002  # a CDM's outputs are T + 2 levels


@dataclass
class UNetConfig:
    in_channels: int = 3
    image_size: int = 32
    ch: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    dropout: float = 0.1
    time_conditioning: bool = False
    num_classes: int | None = None  # classification head when set
    out_channels: int | None = None  # dense head otherwise (defaults to in_channels)
    num_heads: int = 1

    def __post_init__(self):
        # bounds far above any net here, so that a damaged or hostile config is refused before
        # its layers are allocated (num_classes = 10**9 asked for 64 GB)
        import math

        if not (isinstance(self.dropout, (int, float)) and math.isfinite(self.dropout) and 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        widths = [self.ch * m for m in self.ch_mult] if self.ch_mult else [self.ch]
        if max(widths, default=0) > MAX_WIDTH or (self.num_classes or 0) > MAX_CLASSES:
            raise ValueError(f"a net of width {max(widths)} or {self.num_classes} outputs is beyond what oodkit builds "
                             f"(at most {MAX_WIDTH} channels and {MAX_CLASSES:,} outputs)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ch_mult"] = list(self.ch_mult)
        d["attn_resolutions"] = list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown UNet config keys: {sorted(unknown)}")
        d = dict(d)
        for k in ("ch_mult", "attn_resolutions"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


# Presets fix the width and depth; channels, size and head come from the data and model.
PRESETS = {
    # trains in seconds on a CPU; for tests
    "tiny": dict(ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0),
    # about 1M parameters; benchmarks trained on two CPU cores
    "compact": dict(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(), dropout=0.0),
    # a few million parameters; CPU runs and short GPU runs
    "small": dict(ch=64, ch_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
    # the CDM paper's CIFAR-10 network (DDPM UNet), about 33M parameters
    "paper": dict(ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1),
}


def unet_from_preset(preset: str, **overrides) -> "UNet":
    """A UNet of a named size (``PRESETS``: tiny, compact, small, paper), with any
    :class:`UNetConfig` field overridden (``in_channels``, ``image_size``,
    ``num_classes`` for a CDM's T+2 outputs, ``time_conditioning`` for a DDPM)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown network preset {preset!r}; choose one of {sorted(PRESETS)}")
    return UNet(UNetConfig(**{**PRESETS[preset], **overrides}))


IMAGE_SIZES = (8, 64)  # the smallest and largest input side the nets take


def _check_size(cfg) -> int:
    """The number of resolution levels, after refusing an image size the net cannot take."""
    levels = len(cfg.ch_mult)
    lo, hi = IMAGE_SIZES
    if not lo <= cfg.image_size <= hi:
        raise ValueError(f"image_size must lie in {lo}..{hi}, got {cfg.image_size}")
    if cfg.image_size % 2 ** (levels - 1):
        raise ValueError(
            f"image_size {cfg.image_size} is not divisible by 2**{levels - 1} "
            f"(ch_mult has {levels} levels); resize the data or use fewer levels"
        )
    return levels


def _groups(c: int) -> int:
    g = min(32, max(1, c // 4))
    while c % g:
        g -= 1
    return g


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(_groups(c), c, eps=1e-6)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of integer levels t (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb_dim: int | None, dropout: float):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout) if emb_dim else None
        self.norm2, self.drop = _norm(cout), nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, emb=None):
        h = self.conv1(F.silu(self.norm1(x)))
        if self.emb is not None:
            h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.drop(F.silu(self.norm2(h))))
        return self.skip(x) + h


def _strides(shape, order) -> tuple:
    """Dense strides of ``shape`` with its dimensions laid out in ``order`` (outermost first)."""
    out, acc = [0] * len(shape), 1
    for d in reversed(order):
        out[d], acc = acc, acc * shape[d]
    return tuple(out)


def _in_layout(x: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
    """``x`` with exactly the strides of the layout the network runs in: row-major (N, C, H,
    W), or channels-last (N, H, W, C). Convolution kernels pick their algorithm by stride,
    and torch calls a tensor with a size-1 channel "contiguous" in both layouts whatever
    that channel's stride, so the same pixels in another layout would give numbers 1e-6
    apart; the strides are therefore compared, not torch's contiguity flags."""
    want = _strides(x.shape, (0, 2, 3, 1) if channels_last else tuple(range(x.ndim)))
    if x.stride() == want:
        return x
    # an explicit copy: .contiguous() and clone() keep a size-1 dimension's odd stride
    return torch.empty_strided(x.shape, want, dtype=x.dtype, device=x.device).copy_(x)


class Attention(nn.Module):
    """Spatial self-attention written with plain matmuls and softmax: fused attention
    kernels do not all support the double backward the CDM loss needs."""

    def __init__(self, c: int, heads: int = 1):
        super().__init__()
        if c % heads:
            raise ValueError(f"{c} channels do not split into {heads} heads")
        self.heads = heads
        self.norm, self.qkv, self.proj = _norm(c), nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x, emb=None):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3 * self.heads, c // self.heads, h * w).chunk(3, dim=1)
        att = torch.softmax(torch.einsum("bhcn,bhcm->bhnm", q, k) / math.sqrt(c // self.heads), dim=-1)
        out = torch.einsum("bhnm,bhcm->bhcn", att, v).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """UNet on square images of side 8..64.

    ``forward(x)`` (or ``forward(x, t)`` with time conditioning): ``x`` (B, C, H, W) ->
    (B, num_classes) with a classification head, else (B, out_channels, H, W).
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        cfg = config if config is not None else UNetConfig(**kwargs)
        if config is not None and kwargs:
            raise TypeError("pass either a UNetConfig or keyword arguments, not both")
        levels = _check_size(cfg)
        self.config = cfg
        ch = cfg.ch
        emb_dim = 4 * ch if cfg.time_conditioning else None
        if emb_dim:
            self.time_embed = nn.Sequential(nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(cfg.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        skips, c, res = [ch], ch, cfg.image_size
        for i, mult in enumerate(cfg.ch_mult):
            for _ in range(cfg.num_res_blocks):
                blocks = [ResBlock(c, ch * mult, emb_dim, cfg.dropout)]
                c = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(Attention(c, cfg.num_heads))
                self.down.append(nn.ModuleList(blocks))
                skips.append(c)
            if i != levels - 1:
                self.down.append(nn.ModuleList([Downsample(c)]))
                skips.append(c)
                res //= 2

        self.mid = nn.ModuleList(
            [ResBlock(c, c, emb_dim, cfg.dropout), Attention(c, cfg.num_heads), ResBlock(c, c, emb_dim, cfg.dropout)]
        )

        self.up = nn.ModuleList()
        for i, mult in reversed(list(enumerate(cfg.ch_mult))):
            for _ in range(cfg.num_res_blocks + 1):
                blocks = [ResBlock(c + skips.pop(), ch * mult, emb_dim, cfg.dropout)]
                c = ch * mult
                if res in cfg.attn_resolutions:
                    blocks.append(Attention(c, cfg.num_heads))
                self.up.append(nn.ModuleList(blocks))
            if i != 0:
                self.up.append(nn.ModuleList([Upsample(c)]))
                res *= 2

        self.norm_out = _norm(c)
        if cfg.num_classes is not None:
            self.head_conv = nn.Conv2d(c, c, 3, padding=1)
            self.head = nn.Linear(c, cfg.num_classes)
        else:
            self.head = nn.Conv2d(c, cfg.out_channels or cfg.in_channels, 3, padding=1)
        # Zero-initialised outputs: a CDM starts from the uniform posterior, a DDPM from eps=0.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    _channels_last = False

    @contextmanager
    def channels_last(self, enabled: bool = True):
        """Run the network in the channels-last layout inside (weights and inputs), and give
        the weights back their row-major layout after: same values, other kernels (1.36-1.39x
        the fp32 throughput of the CIFAR-10 net on the CPU, 1e-5 apart in the raw
        outputs; benchmarks/README.md, *Memory layout*). ``enabled=False`` changes nothing."""
        if not enabled or self._channels_last:
            yield self
            return
        self._relayout(True)
        self._channels_last = True
        try:
            yield self
        finally:
            self._channels_last = False
            self._relayout(False)

    def _relayout(self, channels_last: bool) -> None:
        # the convolution weights' strides only: same device, dtype and values
        for p in self.parameters():
            if p.ndim == 4:
                p.data = _in_layout(p.data, channels_last)

    @property
    def feature_channels(self) -> int:
        """Width of the features ``forward(..., return_features=True)`` returns: the
        decoder's output channels."""
        return self.config.ch * self.config.ch_mult[0]

    @property
    def encoder_channels(self) -> int:
        """Width of :meth:`encoder_features`: every skip activation and the bottleneck."""
        cfg, total, c = self.config, self.config.ch, self.config.ch
        for i, mult in enumerate(cfg.ch_mult):
            total += cfg.num_res_blocks * cfg.ch * mult
            c = cfg.ch * mult
            if i != len(cfg.ch_mult) - 1:
                total += c
        return total + c

    def _encode(self, x, t):
        cfg = self.config
        if x.ndim != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected input (B, {cfg.in_channels}, H, W), got {tuple(x.shape)}")
        emb = None
        if t is not None and not cfg.time_conditioning:  # it would be ignored: eps could not depend on the level
            raise ValueError("this UNet is not time-conditioned: call it as net(x), or build it with "
                             "time_conditioning=True")
        if cfg.time_conditioning:
            if t is None:
                raise ValueError("this UNet is time-conditioned: call it as net(x, t)")
            t = torch.as_tensor(t, device=x.device).expand(x.shape[0])
            emb = self.time_embed(timestep_embedding(t, cfg.ch))
        h = self.conv_in(_in_layout(x, self._channels_last))
        hs = [h]
        for blocks in self.down:
            for m in blocks:
                h = m(h, emb)
            hs.append(h)
        for m in self.mid:
            h = m(h, emb)
        return h, hs, emb

    def encoder_features(self, x: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        """Global average pools of the encoder's activations (every skip and the
        bottleneck), concatenated: (B, encoder_channels). The joint diffusion model's
        classifier reads these."""
        h, hs, _ = self._encode(x, t)
        return torch.cat([a.mean(dim=(2, 3)) for a in hs] + [h.mean(dim=(2, 3))], dim=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, return_features: bool = False):
        """``return_features`` (classification head only): also return the decoder's
        output averaged over space, (B, C): what the classification head (norm, conv,
        pool, linear) reads, from the same pass, in float32. Not the head conv's pooled
        output: that layer is trained to read the noise level alone, and what tells data
        sets apart survives better before it (benchmarks/results/feature_layers.md)."""
        cfg = self.config
        h, hs, emb = self._encode(x, t)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            for m in blocks:
                h = m(h, emb)
        feats = h.float().mean(dim=(2, 3)) if return_features else None  # fp32 under autocast too
        h = F.silu(self.norm_out(h))
        if cfg.num_classes is None:
            return self.head(h)
        h = self.head_conv(h).mean(dim=(2, 3))
        # The class logits feed log-likelihood differences of thousands of nats: keep the
        # last layer in float32 even under autocast.
        with torch.autocast(device_type=x.device.type, enabled=False):
            if h.dtype in (torch.float16, torch.bfloat16):
                h = h.float()
            out = self.head(h.to(self.head.weight.dtype))
        return (out, feats) if return_features else out
