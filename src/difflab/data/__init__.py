"""Data modules (LightningDataModule), each with `data_shape` known before setup and
batches `(x, index)` with x in model space (images in [-1, 1]).

Hydra group `data`: gmm, toy2d, digits, mnist, cifar10, imagefolder.
"""
from .base import BaseDataModule, IndexedDataset
from .digits import DigitsDataModule, load_digits_tensor
from .gmm import GMMDataModule
from .toy2d import SHAPES as TOY2D_SHAPES, Toy2DDataModule, toy2d_sample
from .vision import CIFAR10DataModule, ImageFolderDataModule, MNISTDataModule

__all__ = [
    "BaseDataModule", "IndexedDataset", "GMMDataModule", "Toy2DDataModule", "DigitsDataModule",
    "MNISTDataModule", "CIFAR10DataModule", "ImageFolderDataModule", "load_digits_tensor", "toy2d_sample", "TOY2D_SHAPES",
]
