"""Classification diffusion model (Yadin, Elata & Michaeli, NeurIPS 2024).

A network with no time input classifies the noise level of its input among the
``T+2`` classes of a :class:`~oodkit.NoiseSchedule`. A fixed cumulative sum over its
raw outputs gives ``f(x)``, with ``f(x)[t] = log p(t | x)`` up to a constant shared by
all t. From that one forward pass:

* Eq. 10: ``log p_t(x) = f(x)[t] - f(x)[T+1] + log N(x; 0, I)`` for every level t;
* Theorem 3.1: ``E[eps | x_t] = sqrt(1 - abar_t) * (grad_x F(x_t, t) + x_t)`` with
  ``F(x, t) = f(x)[T+1] - f(x)[t]`` (one more backward pass).

Images are (B, C, H, W) scaled to [-1, 1]; log-densities are in nats, float64.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..schedules import NoiseSchedule
from .sampling import eta_for, sample_loop
from .simclr import nt_xent, random_views

__all__ = ["CDM", "log_std_normal", "eq10_levels", "bits_per_dim"]

LOG_2PI = math.log(2 * math.pi)

# Convolution kernels choose their algorithm by batch size: on the CPUs measured, oneDNN
# ran batches of fewer than about 16 rows another way, which moved logits of ~1e3 nats by
# 5e-4, so an image's score depended on whether it fell into a short batch. Inference pads
# short batches to this many rows (at most 15 extra images a pass).
MIN_ROWS = 16


def pad_rows(x: torch.Tensor) -> torch.Tensor:
    """A batch of fewer than :data:`MIN_ROWS` rows padded to that many with copies of its
    last row (rows are independent under GroupNorm, so no other row changes); callers
    keep the first ``len(x)`` rows of the result."""
    n = x.shape[0]
    return torch.cat([x, x[-1:].expand(MIN_ROWS - n, *x.shape[1:])]) if 0 < n < MIN_ROWS else x


def log_std_normal(x: torch.Tensor) -> torch.Tensor:
    """``log N(x; 0, I)`` per image in nats, float64 (B,)."""
    x = x.reshape(x.shape[0], -1).double()
    return -0.5 * (x * x).sum(dim=1) - 0.5 * x.shape[1] * LOG_2PI


def eq10_levels(logits, log_gauss, t=None):
    """Eq. 10, the one place it is written: ``log p_t(x) = f(x)[t] - f(x)[T+1] + log N(x; 0, I)``
    in nats, float64, for levels ``t`` (all by default): (B, len(t)). ``logits`` (B, T+2)
    and ``log_gauss`` (B,) may be tensors or arrays; the result has the type of ``logits``."""
    f = torch.as_tensor(logits).double()
    g = torch.as_tensor(log_gauss, device=f.device).double()
    sel = f if t is None else f[:, torch.as_tensor(t, dtype=torch.long, device=f.device)]
    out = sel - f[:, -1:] + g[:, None]
    return out if isinstance(logits, torch.Tensor) else out.cpu().numpy()


def bits_per_dim(log_p, d: int):
    """Bits per dimension of 8-bit data from ``log p(x)`` in nats on [-1, 1]:
    ``-log p / (d ln 2) + 7`` (7 = log2 128, the change of variables from 256 levels)."""
    return -log_p / (d * math.log(2)) + 7.0


class CDM(nn.Module):
    """Classification diffusion model around any ``net``: (B, C, H, W) -> (B, T+2).

    ``net`` must treat batch elements independently (GroupNorm, not BatchNorm), since
    Theorem 3.1 takes per-image input gradients of a batch sum.

    Args:
        net: the classifier; its raw outputs are the log-ratios between neighbouring
            levels, which the model turns into ``f(x)`` by a cumulative sum.
        schedule: the noise schedule; ``net`` must output ``schedule.T + 2`` values.
        ce_weight: weight of the cross-entropy term in :meth:`loss` (paper: 0.001).
        image_shape: (C, H, W) the model was trained on; inferred from a UNet's config,
            and used to refuse inputs of another shape.
        num_labels: with more than 0, a linear class head on the pooled decoder output
            (the features :meth:`logits` returns), trained on clean labelled images beside
            the noise-level loss. Its logits come from the same forward pass as ``f(x)``;
            Eq. 10 and Theorem 3.1 do not involve it.
        label_weight: weight of the class cross-entropy in :meth:`loss`.
        noise_batch: images of each batch the noise-level loss uses (all when None). That
            loss costs about three plain passes (its double backward), so a fine-tune with
            a class or rotation head can give most of its compute to the cheaper head losses.
        rotations: 4 adds a label-free rotation head (Gidaris et al., 2018): a linear
            4-way classifier on the pooled decoder output that predicts by how many quarter
            turns the clean image was rotated. Training it on each batch's four rotations
            shapes the features by what the images show, without labels. At scoring only
            the upright image is seen: :meth:`rotation_logits` reads the same one pass.
            0 (the default) adds nothing.
        rotation_weight: weight of the rotation cross-entropy in :meth:`loss`.
        contrastive: with more than 0, a label-free instance-discrimination objective
            (SimCLR-style, :mod:`oodkit.models.simclr`): a two-layer projection of the pooled
            decoder output to this many dimensions, trained by NT-Xent on two random views
            of every clean image. The projection is discarded at scoring: detectors read the
            pooled features of the upright image from the same one pass. 0 adds nothing.
        contrastive_weight: weight of the NT-Xent loss in :meth:`loss` (0.1 by default: about
            the rotation term's 0.25 x log 4 at the start, since NT-Xent starts at log(2B - 1)).
        temperature: NT-Xent's temperature.
    """

    kind = "cdm"

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, ce_weight: float = 1e-3, image_shape=None,
                 num_labels: int = 0, label_weight: float = 0.1, noise_batch: int | None = None,
                 rotations: int = 0, rotation_weight: float = 0.5, contrastive: int = 0,
                 contrastive_weight: float = 0.1, temperature: float = 0.2):
        super().__init__()
        self.net = net
        self.schedule = schedule
        self.ce_weight = float(ce_weight)
        self.num_labels = int(num_labels)
        self.label_weight = float(label_weight)
        self.noise_batch = None if noise_batch is None else int(noise_batch)
        self.rotations = int(rotations)
        self.rotation_weight = float(rotation_weight)
        self.contrastive = int(contrastive)
        self.contrastive_weight = float(contrastive_weight)
        self.temperature = float(temperature)
        if self.num_labels < 0 or (self.noise_batch is not None and self.noise_batch < 1):
            raise ValueError(f"num_labels must be 0 or more and noise_batch 1 or more, got {num_labels}, {noise_batch}")
        if self.rotations not in (0, 4):
            raise ValueError(f"rotations must be 0 (no rotation head) or 4 (quarter turns), got {rotations}")
        if self.contrastive < 0 or not self.temperature > 0:
            raise ValueError(f"contrastive must be 0 or more and temperature positive, got {contrastive}, {temperature}")
        if self.noise_batch is not None and not self._heads:
            raise ValueError("noise_batch splits a batch between the noise-level and head losses: it needs a class "
                             "head (num_labels > 0), a rotation head (rotations=4) or a contrastive projection")
        if self._heads and not hasattr(net, "feature_channels"):
            raise TypeError("a class, rotation or contrastive head needs a net with feature_channels (oodkit's UNet)")
        if self.num_labels:
            self.label_head = nn.Linear(net.feature_channels, self.num_labels)
        if self.rotations:
            self.rotation_head = nn.Linear(net.feature_channels, self.rotations)
        if self.contrastive:
            c = net.feature_channels
            self.projection = nn.Sequential(nn.Linear(c, c), nn.ReLU(), nn.Linear(c, self.contrastive))
        if image_shape is None and hasattr(net, "config"):
            cfg = net.config
            image_shape = (cfg.in_channels, cfg.image_size, cfg.image_size)
            if getattr(cfg, "num_classes", schedule.num_classes) != schedule.num_classes:
                raise ValueError(
                    f"net has {cfg.num_classes} outputs but the schedule has {schedule.num_classes} classes (T+2)"
                )
        self.image_shape = tuple(image_shape) if image_shape is not None else None
        if self.rotations and self.image_shape is not None and self.image_shape[1] != self.image_shape[2]:
            raise ValueError(f"a rotation head needs square images, got {self.image_shape[1:]} (H, W)")

    @property
    def T(self) -> int:
        return self.schedule.T

    @property
    def _heads(self) -> bool:
        """Whether any head trains beside the noise-level loss."""
        return bool(self.num_labels or self.rotations or self.contrastive)

    @property
    def needs_labels(self) -> bool:
        """Whether training takes class labels (a model with a class head)."""
        return self.num_labels > 0

    def class_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Class logits (B, num_labels), float32, from the pooled features (B, C) that
        :meth:`logits` returns beside ``f(x)``: no further network pass."""
        if not self.num_labels:
            raise ValueError("this CDM has no class head (it was trained without labels)")
        feats = torch.as_tensor(features).to(self.label_head.weight.device, self.label_head.weight.dtype)
        return self.label_head(feats).float()

    def rotation_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Rotation logits (B, 4), float32, from the pooled features (B, C) of upright
        images: column k scores "turned by k quarter turns". No further network pass."""
        if not self.rotations:
            raise ValueError("this CDM has no rotation head (it was trained without --rotation-head)")
        feats = torch.as_tensor(features).to(self.rotation_head.weight.device, self.rotation_head.weight.dtype)
        return self.rotation_head(feats).float()

    def _check(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if hasattr(x, "shape") else type(x).__name__
            raise ValueError(f"expected images of shape (B, C, H, W), got {shape}")
        if self.image_shape is not None and tuple(x.shape[1:]) != self.image_shape:
            c, h, w = self.image_shape
            hint = ": channels last? pass x.permute(0, 3, 1, 2)" if tuple(x.shape[1:]) == (h, w, c) else ""
            raise ValueError(
                f"this model takes images of shape {self.image_shape} (C, H, W), got {tuple(x.shape[1:])}{hint}"
            )
        if not x.is_floating_point():
            raise TypeError(f"images must be floating point in [-1, 1], got {x.dtype}: convert 8-bit pixels with "
                            "oodkit.data.images.to_float(oodkit.as_images(x)); log_prob, bpd, log_prob_levels and "
                            "noise_posterior take them as they are")

    def _input(self, x, value_range=None) -> torch.Tensor:
        """Images for the network, on the model's device, in float32 or wider (the likelihood
        is computed in it; :meth:`logits` hands the net its own precision): float (B, C, H, W)
        tensors checked (finite, and for a model that records its training images (a
        checkpoint) in [-1, 1] by the rules of :func:`oodkit.as_images`, each image on the
        8-bit levels read as those pixels); uint8 pixels, arrays and any layout
        :func:`oodkit.as_images` reads ((N, H, W, C) included), and floats of a declared
        ``value_range``, become float32 in [-1, 1]."""
        from ..data.images import as_images, check_float_images, level_tolerance, on_levels, to_float

        device = self._device()
        if value_range is not None:
            return to_float(as_images(x, value_range=value_range)).to(device)
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.ndim == 4 and not x.is_meta \
                and x.layout == torch.strided:
            # a model trained on images takes them in [-1, 1]; one built in code may model any
            # finite data (the analytic Gaussian of the exactness tests) in its own precision
            if getattr(self, "data_info", None):
                return to_float(on_levels(check_float_images(x), level_tolerance(x.dtype))).to(device)
            x = check_float_images(x, pixels=False)
            return x.to(device, torch.promote_types(x.dtype, torch.float32))
        return to_float(as_images(x)).to(device)

    def _device(self) -> torch.device:
        """Where the network's inputs go: its parameters' device (the CPU for an analytic
        net without parameters)."""
        param = next(self.net.parameters(), None)
        return param.device if param is not None else torch.device("cpu")

    def _noisy_input(self, x_t) -> torch.Tensor:
        """Noisy images ``x_t`` (B, C, H, W), any finite floats, on the model's device, in
        float32 or wider (the same tensor when they already are)."""
        from ..data.images import check_float_images

        if not isinstance(x_t, torch.Tensor) or not x_t.is_floating_point():
            what = x_t.dtype if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise TypeError(f"x_t must be noisy images, a float tensor (B, C, H, W), got {what}: convert 8-bit "
                            "pixels with oodkit.data.images.to_float(oodkit.as_images(x))")
        x_t = check_float_images(x_t, "x_t", pixels=False)
        return x_t.to(self._device(), torch.promote_types(x_t.dtype, torch.float32))

    # -- one forward pass ------------------------------------------------------------
    def logits(self, x: torch.Tensor, return_features: bool = False):
        """``f(x)``: (B, T+2), ``log p(t | x)`` up to a per-row constant (float32 or wider).
        ``return_features``: also the pooled decoder output (B, C) the classification head reads,
        from the same forward pass (nets that cannot give them raise TypeError)."""
        self._check(x)
        feats = None
        param = next(self.net.parameters(), None)
        net_x = x if param is None or not param.is_floating_point() or x.dtype == param.dtype else x.to(param.dtype)
        if return_features:
            raw, feats = self.net(net_x, return_features=True)
        else:
            raw = self.net(net_x)
        if raw.shape != (x.shape[0], self.schedule.num_classes):
            raise ValueError(
                f"net returned shape {tuple(raw.shape)}, expected ({x.shape[0]}, {self.schedule.num_classes})"
            )
        if raw.dtype in (torch.float16, torch.bfloat16):
            raw = raw.float()
        f = torch.cumsum(raw, dim=1)
        return (f, feats.float()) if return_features else f

    def inference_logits(self, x: torch.Tensor, return_features: bool = False):
        """:meth:`logits` with a short batch padded to :data:`MIN_ROWS` rows, so that an
        image's numbers do not depend on the batch it is in (no gradients kept)."""
        n = x.shape[0]
        with torch.no_grad():
            out = self.logits(pad_rows(x), return_features=return_features)
        return (out[0][:n], out[1][:n]) if return_features else out[:n]

    @staticmethod
    def levels_from_logits(logits: torch.Tensor, log_gauss: torch.Tensor) -> torch.Tensor:
        """Eq. 10 on cached logits: ``log p_t(x)`` (B, T+2) in nats, float64."""
        return eq10_levels(logits, log_gauss)

    @torch.no_grad()
    def log_prob_levels(self, x: torch.Tensor, value_range=None) -> torch.Tensor:
        """``log p_t(x)`` for every level t = 0..T+1: (B, T+2) in nats, float64. ``x``: float
        (B, C, H, W) in [-1, 1], or uint8 pixels in any layout :func:`oodkit.as_images` reads;
        ``value_range``: ``(0, 1)`` or ``(0, 255)`` for floats in that range, ``(-1, 1)``
        for [-1, 1] floats that happen to hold no negative value (as :func:`oodkit.as_images`)."""
        x = self._input(x, value_range)
        return self.levels_from_logits(self.inference_logits(x), log_std_normal(x))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, value_range=None) -> torch.Tensor:
        """``log p_data(x)`` by Eq. 10 in one forward pass: (B,) nats, float64 (input as
        :meth:`log_prob_levels`)."""
        return self._log_prob(self._input(x, value_range))

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return eq10_levels(self.inference_logits(x), log_std_normal(x), [0])[:, 0]

    @torch.no_grad()
    def bpd(self, x: torch.Tensor, value_range=None) -> torch.Tensor:
        """Bits per dimension of 8-bit data: ``-log p(x) / (d ln 2) + 7`` (B,), float64
        (input as :meth:`log_prob_levels`)."""
        x = self._input(x, value_range)  # checked once
        return bits_per_dim(self._log_prob(x), x[0].numel())

    @torch.no_grad()
    def noise_posterior(self, x: torch.Tensor, value_range=None) -> torch.Tensor:
        """``p(t | x)`` under a uniform prior over levels: (B, T+2), float64, rows sum to 1
        (input as :meth:`log_prob_levels`)."""
        return torch.softmax(self.inference_logits(self._input(x, value_range)).double(), dim=1)

    # -- Theorem 3.1 ------------------------------------------------------------------
    def logits_and_eps(self, x_t: torch.Tensor, t: torch.Tensor, create_graph: bool = False):
        """One forward and one backward pass: ``(f(x_t) (B, T+2), E[eps | x_t] (B, C, H, W))``;
        ``eps`` in the dtype of ``x_t`` (any finite floats)."""
        given = x_t.dtype if isinstance(x_t, torch.Tensor) else None
        f, eps = self._logits_and_eps(self._noisy_input(x_t), t, create_graph)
        return f, eps.to(given)

    def _logits_and_eps(self, x_t: torch.Tensor, t, create_graph: bool):
        """:meth:`logits_and_eps` on ``x_t`` already checked (training's inner loop)."""
        t = torch.as_tensor(t, device=x_t.device).long()
        if t.ndim == 0:
            t = t.expand(x_t.shape[0])
        k = self.schedule.num_classes
        if t.shape != (x_t.shape[0],) or bool(((t < 0) | (t >= k)).any()):
            raise ValueError(f"noise levels t must be in 0..{k - 1}, one per image (or one for all): got "
                             f"{t.tolist() if t.numel() <= 8 else tuple(t.shape)}")
        with torch.enable_grad():
            x = x_t if (create_graph and x_t.requires_grad) else x_t.detach().requires_grad_(True)
            f = self.logits(x)
            big_f = f[:, -1] - f.gather(1, t[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(big_f.sum(), x, create_graph=create_graph)
        _, sigma = self.schedule.coefficients(t, x_t)
        eps = sigma * (grad.to(x_t.dtype) + x)
        if not create_graph:
            eps, f = eps.detach(), f.detach()
        return f, eps

    def eps(self, x_t: torch.Tensor, t: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
        """``E[eps | x_t]`` by Theorem 3.1 (B, C, H, W). Works inside ``torch.no_grad()``."""
        return self.logits_and_eps(x_t, t, create_graph=create_graph)[1]

    # -- training -------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, generator: torch.Generator | None = None, y: torch.Tensor | None = None):
        """``ce_weight * CE(f(x_t), t) + MSE(eps, eps_hat)`` with t uniform over all T+2
        classes, plus ``label_weight * CE(class_logits(x0), y)`` for a model with a class
        head (labels ``y`` (B,)), plus ``rotation_weight * CE(rotation_logits(rot_k(x0)), k)``
        over the four quarter turns of every image for a model with a rotation head (a
        mean over images, so it does not depend on their order), plus
        ``contrastive_weight * NT-Xent`` of two random views of every image for a model with
        a contrastive projection (:meth:`contrastive_loss`, its views drawn from
        ``generator``). Returns ``(loss, {"ce": ..., "mse": ...[, "label_ce"][, "rot_ce"]
        [, "nt_xent"]})`` (scalars, parts detached).

        The MSE is averaged over pixels and over the batch, counting t = 0 images as
        zero: their input holds no noise to predict. At t = T+1 it vanishes by
        construction (eps_hat = x_t = eps).
        """
        self._check(x0)
        if self.num_labels and y is None:
            raise ValueError("this CDM has a class head and trains on labels: pass labels to train()")
        loss, parts = self._noise_loss(x0[: self.noise_batch], generator)
        feats = None
        if self.rotations:
            rot_ce, feats = self.rotation_loss(x0)
            loss, parts = loss + self.rotation_weight * rot_ce, {**parts, "rot_ce": rot_ce.detach()}
        if self.contrastive:
            con = self.contrastive_loss(x0, generator)
            loss, parts = loss + self.contrastive_weight * con, {**parts, "nt_xent": con.detach()}
        if self.num_labels:
            if feats is None:
                _, feats = self.net(x0, return_features=True)
            label_ce = F.cross_entropy(self.class_logits(feats), torch.as_tensor(y, device=x0.device).long())
            loss, parts = loss + self.label_weight * label_ce, {**parts, "label_ce": label_ce.detach()}
        return loss, parts

    def rotation_loss(self, x0: torch.Tensor):
        """Mean cross-entropy of the rotation head over the four quarter turns of each
        clean image (one pass over 4B images), and the upright images' features (B, C)."""
        b = x0.shape[0]
        turned = torch.cat([torch.rot90(x0, k, dims=(-2, -1)) for k in range(self.rotations)])
        _, feats = self.net(turned, return_features=True)
        target = torch.arange(self.rotations, device=x0.device).repeat_interleave(b)
        return F.cross_entropy(self.rotation_logits(feats), target), feats[:b]

    def contrastive_loss(self, x0: torch.Tensor, generator: torch.Generator | None = None):
        """NT-Xent of two random views of each clean image (:func:`~oodkit.models.simclr.random_views`,
        drawn from ``generator``): one pass over 2B images."""
        return self.view_loss(random_views(x0, generator), random_views(x0, generator))

    def view_loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """NT-Xent between given views (B, C, H, W) of the same B images, row i of each the
        same image: the projection of their pooled features, one pass over 2B images."""
        if not self.contrastive:
            raise ValueError("this CDM has no contrastive projection (it was trained without --contrastive-head)")
        _, feats = self.net(torch.cat([view1, view2]), return_features=True)
        z = self.projection(feats)
        return nt_xent(*z.float().chunk(2), temperature=self.temperature)

    def _noise_loss(self, x0: torch.Tensor, generator):
        b = x0.shape[0]
        t = torch.randint(0, self.schedule.num_classes, (b,), generator=generator, device="cpu").to(x0.device)
        eps = torch.randn(x0.shape, generator=generator, device="cpu").to(x0.device, x0.dtype)
        x_t = self.schedule.q_sample(x0, t, eps).requires_grad_(True)
        f, eps_hat = self._logits_and_eps(x_t, t, create_graph=True)
        ce = F.cross_entropy(f.float(), t)
        per_image = ((eps - eps_hat.float()) ** 2).flatten(1).mean(1)
        mse = (per_image * (t > 0)).mean()
        loss = self.ce_weight * ce + mse
        return loss, {"ce": ce.detach(), "mse": mse.detach()}

    # -- sampling -------------------------------------------------------------------
    def sample(
        self,
        n: int,
        steps: int | None = None,
        method: str = "ddpm",
        generator: torch.Generator | None = None,
        device=None,
        progress: bool = False,
    ) -> torch.Tensor:
        """Draw ``n`` images (n, C, H, W) in [-1, 1] with DDPM ancestral sampling
        (``method="ddpm"``) or deterministic DDIM (``"ddim"``) over ``steps`` levels
        (all T by default), eps from Theorem 3.1."""
        if self.image_shape is None:
            raise ValueError("model has no image_shape; construct it with image_shape=(C, H, W)")
        eta = eta_for(method)
        device = device or next(self.parameters()).device
        return sample_loop(
            self.eps, self.schedule, (n, *self.image_shape), steps=steps, eta=eta,
            generator=generator, device=device, progress=progress,
        )

    def config(self) -> dict:
        cfg = {"ce_weight": self.ce_weight, "image_shape": list(self.image_shape) if self.image_shape else None}
        if self.num_labels:
            cfg.update(num_labels=self.num_labels, label_weight=self.label_weight)
        if self.rotations:
            cfg.update(rotations=self.rotations, rotation_weight=self.rotation_weight)
        if self.contrastive:
            cfg.update(contrastive=self.contrastive, contrastive_weight=self.contrastive_weight,
                       temperature=self.temperature)
        if self._heads:
            cfg.update(noise_batch=self.noise_batch)
        return cfg
