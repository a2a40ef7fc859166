"""Data layer: datasets from standard layouts, and the batch augmentations of training."""

from suite.data.augment import augment_batch
from suite.data.datasets import INFO, DataError, DatasetInfo, ImageSet, check, fit_and_val, load_split, split_train_val

__all__ = ["INFO", "DataError", "DatasetInfo", "ImageSet", "augment_batch", "check", "fit_and_val", "load_split", "split_train_val"]
