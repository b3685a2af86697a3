"""oodkit: out-of-distribution detection with classification diffusion models.

Images are (N, C, H, W) float in [-1, 1] (or uint8 pixels where a function says so);
log-densities are in nats and float64; detector scores follow scikit-learn: higher
means more in-distribution (``ood_score = -score_samples``).

The public API:

* models: :class:`CDM`, :class:`DDPM`, :class:`JointDiffusion`, :class:`NoiseSchedule`,
  :class:`UNet`; :func:`load_model` (a checkpoint path or a pretrained name),
  :func:`list_models`, :func:`fit_model`, :func:`train`, :class:`TrainConfig`;
* detectors: :class:`CDMDetector`, :class:`DiffusionDetector`, :func:`make_detector`,
  :func:`load_detector`, :func:`load_detectors`, :func:`save_detectors`;
* data: :func:`load_dataset`, :func:`as_images`, :func:`conform`;
* metrics: :func:`ood_metrics`, :func:`auroc`, :func:`fpr95_ood_accepted`,
  :func:`fpr95_id_rejected`, :func:`bootstrap_intervals`;
* thresholds with a guarantee: :func:`conformal_threshold`, :func:`pvalues`,
  :func:`bh_screen` (see :mod:`oodkit.conformal`);
* :func:`run_bench`, the runner behind ``oodkit bench``.
"""
import importlib

from ._version import __version__

# name -> the module that defines it. Imported on first use, so that ``import oodkit`` and
# ``oodkit --help`` do not load torch and scikit-learn before they are needed.
_API = {
    "run_bench": "bench", "CheckpointError": "checkpoint", "save_checkpoint": "checkpoint",
    "as_images": "data", "conform": "data", "load_dataset": "data",
    "CDMDetector": "detectors", "DiffusionDetector": "detectors", "make_detector": "detectors",
    "load_detector": "detectors.persist", "load_detectors": "detectors.persist", "save_detectors": "detectors.persist",
    "auroc": "metrics", "bootstrap_intervals": "metrics", "fpr95_id_rejected": "metrics",
    "fpr95_ood_accepted": "metrics", "ood_metrics": "metrics",
    "CDM": "models.cdm", "DDPM": "models.ddpm", "JointDiffusion": "models.joint",
    "UNet": "nn.unet", "UNetConfig": "nn.unet", "unet_from_preset": "nn.unet",
    "list_models": "pretrained", "load_model": "pretrained", "NoiseSchedule": "schedules",
    "TrainConfig": "training", "fit_model": "training", "train": "training",
    "pvalues": "conformal", "bh_screen": "conformal", "conformal_threshold": "conformal",
}


def __getattr__(name):
    if name not in _API:
        raise AttributeError(f"module 'oodkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_API))


__all__ = [
    "CDM", "DDPM", "JointDiffusion", "NoiseSchedule", "UNet", "UNetConfig", "unet_from_preset", "load_model",
    "list_models", "save_checkpoint", "CheckpointError", "TrainConfig", "train", "fit_model", "CDMDetector",
    "DiffusionDetector", "make_detector", "load_detector", "load_detectors", "save_detectors", "load_dataset",
    "as_images", "conform", "ood_metrics", "auroc", "fpr95_ood_accepted", "fpr95_id_rejected",
    "bootstrap_intervals", "run_bench", "pvalues", "bh_screen", "conformal_threshold", "__version__",
]
