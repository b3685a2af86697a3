"""Data sets and image handling."""
from .images import ImageInputError, as_images, conform, to_float, to_uint8
from .registry import REGISTRY, default_root, list_datasets, load_dataset
from .sources import DataNotFound, ImageSet

__all__ = [
    "ImageSet", "DataNotFound", "ImageInputError", "load_dataset", "list_datasets", "default_root",
    "REGISTRY", "as_images", "conform", "to_float", "to_uint8",
]
