"""What one forward pass of a CDM gives for a set of images, computed once and cached.

Every CDM score (likelihood, posterior, profile, typicality, complexity) is a function
of the logits ``f(x)`` (N, T+2), ``log N(x; 0, I)`` and, for complexity, the images'
compressed length: :class:`Representation` holds these, and detectors derive their
scores from it without touching the network again.
"""
from __future__ import annotations

import weakref
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from .data.images import batches, fingerprint, png_bits, to_float
from .distributed import shared_batches
from .models import has_class_head, has_rotation_head
from .models.cdm import bits_per_dim, eq10_levels, log_std_normal

__all__ = ["Representation", "FeatureCache", "SHARED", "PRECISIONS", "represent", "clear_cache"]


@dataclass
class Representation:
    """Per-image outputs of one forward pass.

    Attributes:
        logits: (N, T+2) float32, ``f(x)`` (``log p(t|x)`` up to a per-row constant).
        log_gauss: (N,) float64, ``log N(x; 0, I)`` in nats.
        dim: d = C*H*W of the model input.
        images: the model-size inputs (uint8 or float (N, C, H, W)), for complexity.
        features: (N, C) float32, the decoder's output averaged over space (what the
            classification head reads)
            (None for nets that cannot return them), from the same pass.
        class_logits: (N, K) float32, a labelled CDM's class head applied to
            ``features`` (None without a class head): no further network pass.
        rotation_logits: (N, 4) float32, a CDM's rotation head applied to ``features``
            of the upright images (None without one): no further network pass.
        precision: the arithmetic the network ran in (:func:`arithmetic`: TF32 off CUDA
            is fp32).
    """

    logits: torch.Tensor
    log_gauss: np.ndarray
    dim: int
    images: torch.Tensor
    features: torch.Tensor | None = None
    class_logits: torch.Tensor | None = None
    rotation_logits: torch.Tensor | None = None
    precision: str = "fp32"
    _png_bits: np.ndarray | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.logits.shape[0]

    @property
    def loglik(self) -> np.ndarray:
        """Eq. 10: ``log p(x)`` in nats, float64 (N,)."""
        return self.levels([0])[:, 0]

    @property
    def bpd(self) -> np.ndarray:
        return bits_per_dim(self.loglik, self.dim)

    def levels(self, t: np.ndarray | list | None = None) -> np.ndarray:
        """``log p_t(x)`` in nats for levels ``t`` (all by default): float64 (N, len(t))."""
        return eq10_levels(self.logits, self.log_gauss, None if t is None else np.asarray(t)).numpy()

    def log_posterior(self) -> np.ndarray:
        """``log p(t | x)``, float64 (N, T+2)."""
        return torch.log_softmax(self.logits.double(), dim=1).numpy()

    @property
    def png_bits(self) -> np.ndarray:
        """Compressed length (PNG) of each model input in bits, computed on first use."""
        if self._png_bits is None:
            self._png_bits = png_bits(self.images)
        return self._png_bits


class FeatureCache:
    """Representations by model and image content: each (model, image set) is run through
    the network once while the cache lives. The key is the images' content hash and the
    weights' checksum (a model trained further in place does not read stale entries), so
    two tensors holding the same images share an entry. Each model keeps its ``per_model``
    latest sets; entries go with the model.

    The detectors' standalone calls share :data:`SHARED`; a pipeline run
    (:mod:`oodkit.pipeline`) makes its own and drops it when done."""

    def __init__(self, per_model: int = 16):
        self.per_model = per_model
        self._store: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()

    @staticmethod
    def key(model, x: torch.Tensor) -> tuple:
        with torch.no_grad():
            weights = sum(float(p.detach().double().sum()) for p in model.parameters())
        return fingerprint(x), weights  # the batch size does not change the result

    def get(self, model, key):
        return self._store.get(model, {}).get(key)

    def put(self, model, key, rep: "Representation") -> None:
        entries = self._store.setdefault(model, {})
        if len(entries) >= self.per_model:
            entries.pop(next(iter(entries)))
        entries[key] = rep

    def clear(self) -> None:
        self._store.clear()


SHARED = FeatureCache()


def _gives_features(model) -> bool:
    import inspect

    try:
        return "return_features" in inspect.signature(model.net.forward).parameters
    except (AttributeError, TypeError, ValueError):
        return False


def clear_cache() -> None:
    """Empty the cache that detectors used standalone share (:data:`SHARED`)."""
    SHARED.clear()


def precision_knobs() -> list:
    """The TF32 switches of this PyTorch as (object, attribute, full-fp32 value): the
    per-backend ``fp32_precision`` settings where they exist (PyTorch >= 2.9, where
    reading the legacy ``allow_tf32`` flags raises once a user set the new ones), else
    the legacy flags."""
    b = torch.backends
    conv = getattr(b.cudnn, "conv", None)
    if hasattr(b.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        return [(b.cuda.matmul, "fp32_precision", "ieee"), (conv, "fp32_precision", "ieee")]
    return [(b.cuda.matmul, "allow_tf32", False), (b.cudnn, "allow_tf32", False)]


@contextmanager
def tf32(enabled: bool):
    """TF32 matrix and convolution arithmetic on or off inside; the settings are
    restored on the way out, also after an error. Process-wide, like PyTorch's own."""
    knobs = precision_knobs()
    saved = [getattr(obj, attr) for obj, attr, _ in knobs]
    for obj, attr, full in knobs:
        setattr(obj, attr, ("tf32" if isinstance(full, str) else True) if enabled else full)
    try:
        yield
    finally:
        for (obj, attr, _), value in zip(knobs, saved):
            setattr(obj, attr, value)


def full_fp32():
    """TF32 off inside (a context manager): PyTorch runs CUDA convolutions in TF32 by
    default, which moved bits/dim by 1.5e-4 on an H200 (fp32 agrees with the CPU to
    2e-6)."""
    return tf32(False)


@contextmanager
def _bf16(device_type: str):
    with tf32(True), torch.autocast(device_type, dtype=torch.bfloat16):
        yield


# How the network's arithmetic may run in a forward pass, fastest last. The logits leave
# the network's last layer in float32 in every mode (the UNet runs it outside autocast)
# and Eq. 10 is taken from them in float64, so only the network body is rounded. fp32 is
# the default and what every reported bits/dim uses; the others are measured against it
# per shipped model in benchmarks/precision_check.py.
PRECISIONS = {
    "fp32": lambda device_type: full_fp32(),
    "tf32": lambda device_type: tf32(True),  # CUDA matmuls and convolutions in TF32; CPU unchanged
    "bf16": _bf16,  # bf16 autocast (native on GPUs and CPUs with AVX-512 BF16 / AMX; emulated, slower, elsewhere)
}


def arithmetic(precision: str, device_type: str) -> str:
    """The arithmetic ``precision`` really runs on ``device_type``: TF32 is a CUDA setting,
    so elsewhere it is fp32."""
    return "fp32" if precision == "tf32" and device_type != "cuda" else precision


def precision_context(precision: str, device_type: str):
    """The arithmetic of :data:`PRECISIONS` ``[precision]`` for a pass on ``device_type``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return PRECISIONS[precision](device_type)


def network_layout(model, device, precision: str = "fp32"):
    """The memory layout the detection pass runs the network in (a context manager):
    channels-last on the CPU in fp32, where oneDNN ran the shipped networks 1.1-1.4x faster
    with it; row-major in bf16 there (1.3-2.1x faster than channels-last for the grey-scale
    nets, 8 % slower for the CIFAR-10 ones) and on other devices until a GPU run has
    measured it (benchmarks/README.md, *Throughput of the detection pass*). Every detection
    pass goes through here, so fitted statistics and scores come from the same kernels; the
    model's weights get their layout back afterwards."""
    net = getattr(model, "net", None)
    return net.channels_last() if channels_last_pass(device, precision) and hasattr(net, "channels_last") \
        else nullcontext()


def channels_last_pass(device, precision: str = "fp32") -> bool:
    """Whether :func:`network_layout` runs a network on ``device`` in ``precision`` channels-last."""
    return device.type == "cpu" and precision != "bf16"


def _passes(model, x: torch.Tensor, batch_size: int, progress: bool, desc: str, shard: bool = True) -> list:
    """(logits, log N(x), features or None) per batch of ``x``, in order. Under
    ``torchrun`` each process runs every world-th batch and the batches are gathered back:
    each batch is the tensor one process would have run, so the numbers do not change."""
    device = next(model.parameters()).device  # the model's own: a user's model is never moved
    with_features = _gives_features(model)

    def run(xb):
        # pixels cross to the device as uint8 (a quarter of the bytes of float32) and are
        # converted there: the same elementwise arithmetic, so the same floats
        xf = to_float(xb.to(device, non_blocking=xb.is_pinned()))
        f, h = model.inference_logits(xf, return_features=True) if with_features else \
            (model.inference_logits(xf), None)
        return f.float().cpu(), log_std_normal(xf).cpu(), h.float().cpu() if h is not None else None

    return shared_batches(run, list(batches(x, batch_size)), shard, progress, desc)


@torch.no_grad()
def represent(model, x: torch.Tensor, batch_size: int = 256, device=None, progress: bool = False,
              desc: str = "forward", cache: FeatureCache | None = SHARED, precision: str = "fp32",
              shard: bool = True) -> Representation:
    """One forward pass of ``model`` over images ``x`` (N, C, H, W) at the model's size,
    uint8 or float in [-1, 1], on the model's own device (``device`` is accepted for
    compatibility and ignored); shared over the processes of a ``torchrun`` group. Results
    are kept in ``cache`` (:class:`FeatureCache`; None: not kept), so every detector
    sharing a model and a cache reuses them. ``precision``: the network's arithmetic
    (:data:`PRECISIONS`; default full fp32). ``shard=False``: this process runs every
    batch itself, also under torchrun (when the processes score different images)."""
    device = next(model.parameters()).device
    # keyed by the arithmetic that runs: tf32 on a CPU is the fp32 pass, not a second one
    key = FeatureCache.key(model, x) + (arithmetic(precision, device.type),) if cache is not None else None
    if key is not None and cache.get(model, key) is not None:
        return cache.get(model, key)
    was_training = model.training
    model.eval()
    try:
        with precision_context(precision, device.type), network_layout(model, device, precision):
            out = _passes(model, x, batch_size, progress, desc, shard)
            features = torch.cat([h for _, _, h in out]) if out and out[0][2] is not None else None
            class_logits = rotation_logits = None
            if features is not None and has_class_head(model):
                class_logits = model.class_logits(features.to(device)).cpu()
            if features is not None and has_rotation_head(model):
                rotation_logits = model.rotation_logits(features.to(device)).cpu()
    finally:
        model.train(was_training)
    rep = Representation(torch.cat([f for f, _, _ in out]), torch.cat([g for _, g, _ in out]).numpy(),
                         int(x[0].numel()), x, features=features, class_logits=class_logits,
                         rotation_logits=rotation_logits, precision=arithmetic(precision, device.type))
    if not torch.isfinite(rep.logits).all():
        raise FloatingPointError("the model produced NaN or inf logits; the checkpoint may be corrupt or diverged")
    if cache is not None:
        cache.put(model, key, rep)
    return rep
