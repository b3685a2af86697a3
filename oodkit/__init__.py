"""oodkit: out-of-distribution detection with classification diffusion models.

Images are (N, C, H, W) float in [-1, 1] (or uint8 pixels where a function says so);
log-densities are in nats and float64; detector scores follow scikit-learn: higher
means more in-distribution.
"""
__version__ = "0.1.0"

from .checkpoint import CheckpointError, load_model, save_checkpoint
from .detectors import CDMDetector, make_detector
from .metrics import ood_metrics
from .models.cdm import CDM
from .nn.unet import UNet, UNetConfig, unet_from_preset
from .schedules import NoiseSchedule
from .training import TrainConfig, fit_model, train

__all__ = [
    "CDM", "NoiseSchedule", "UNet", "UNetConfig", "unet_from_preset", "load_model", "save_checkpoint",
    "CheckpointError", "TrainConfig", "train", "fit_model", "CDMDetector", "make_detector", "ood_metrics",
    "__version__",
]
