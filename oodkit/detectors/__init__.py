"""Detectors, scikit-learn style, and the detector table the CLI and runner read."""
from .base import BaseDetector
from .cdm import CDMDetector
from .diffusion import DiffusionDetector
from .registry import DETECTORS, detector_class, make_detector
from .table import TABLE, DetectorInfo, default_detectors, describe_detectors, detector_kinds, model_default_detectors

__all__ = ["BaseDetector", "CDMDetector", "DiffusionDetector", "DETECTORS", "TABLE", "DetectorInfo",
           "make_detector", "detector_class", "detector_kinds", "default_detectors", "model_default_detectors",
           "describe_detectors"]
