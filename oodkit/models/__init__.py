"""Model kinds. :data:`MODEL_KINDS` is the one table of what each kind is: its class,
its network head and whether the network is time-conditioned. Checkpoint loading
(:func:`oodkit.checkpoint.build_model`) and training (:func:`oodkit.training.fit_model`)
both read it."""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ModelKind", "MODEL_KINDS", "model_kind", "has_class_head", "has_rotation_head",
           "has_contrastive_head"]


@dataclass(frozen=True)
class ModelKind:
    """``head``: "classifier" (T+2 noise-level logits) or "dense" (an eps image).
    ``needs_labels``: always trained on class labels (a CDM takes them only when built
    with a class head, ``num_labels > 0``)."""

    name: str
    module: str
    cls_name: str
    head: str
    time_conditioning: bool
    needs_labels: bool = False

    @property
    def cls(self):
        import importlib

        return getattr(importlib.import_module(self.module), self.cls_name)


MODEL_KINDS = {k.name: k for k in [
    ModelKind("cdm", "oodkit.models.cdm", "CDM", head="classifier", time_conditioning=False),
    ModelKind("ddpm", "oodkit.models.ddpm", "DDPM", head="dense", time_conditioning=True),
    ModelKind("joint", "oodkit.models.joint", "JointDiffusion", head="dense", time_conditioning=True,
              needs_labels=True),
]}


def model_kind(name: str) -> ModelKind:
    if name not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {name!r}; this oodkit knows {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[name]


def has_class_head(model) -> bool:
    """Whether ``model`` has a class head (a joint model, or a CDM built with
    ``num_labels > 0``): it trains on labels and its pass gives class logits."""
    return int(getattr(model, "num_labels", 0) or 0) > 0


def has_rotation_head(model) -> bool:
    """Whether ``model`` is a CDM trained with a label-free rotation head (``rotations=4``):
    its pass gives rotation logits."""
    return int(getattr(model, "rotations", 0) or 0) > 0



def has_contrastive_head(model) -> bool:
    """Whether ``model`` is a CDM trained with a label-free contrastive projection
    (``contrastive > 0``, SimCLR-style): its pooled features were shaped by instance
    discrimination. The projection itself is for training only."""
    return int(getattr(model, "contrastive", 0) or 0) > 0
