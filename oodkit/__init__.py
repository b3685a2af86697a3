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
* :func:`run_bench`, the runner behind ``oodkit bench``.
"""
__version__ = "0.2.0"

from .bench import run_bench
from .checkpoint import CheckpointError, save_checkpoint
from .data import as_images, conform, load_dataset
from .detectors import CDMDetector, DiffusionDetector, make_detector
from .detectors.persist import load_detector, load_detectors, save_detectors
from .metrics import auroc, bootstrap_intervals, fpr95_id_rejected, fpr95_ood_accepted, ood_metrics
from .models.cdm import CDM
from .models.ddpm import DDPM
from .models.joint import JointDiffusion
from .nn.unet import UNet, UNetConfig, unet_from_preset
from .pretrained import list_models, load_model
from .schedules import NoiseSchedule
from .training import TrainConfig, fit_model, train

__all__ = [
    "CDM", "DDPM", "JointDiffusion", "NoiseSchedule", "UNet", "UNetConfig", "unet_from_preset", "load_model",
    "list_models", "save_checkpoint", "CheckpointError", "TrainConfig", "train", "fit_model", "CDMDetector",
    "DiffusionDetector", "make_detector", "load_detector", "load_detectors", "save_detectors", "load_dataset",
    "as_images", "conform", "ood_metrics", "auroc", "fpr95_ood_accepted", "fpr95_id_rejected",
    "bootstrap_intervals", "run_bench", "__version__",
]
