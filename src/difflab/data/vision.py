"""`data=mnist|cifar10|imagefolder`: torchvision data sets read from a local `data.root`.

Nothing downloads unless the user sets `data.download=true`; a missing root raises a
`FileNotFoundError` whose one line says how to get the files. Images are scaled to
[-1, 1] (x = 2 · ToTensor(img) − 1); CIFAR-10 uses random horizontal flips (DDPM, Ho et al. 2020).
With `data.device_resident=true` the training images are decoded once into a uint8 tensor
that lives on the training device (see `difflab.data.base.DeviceBatches`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .base import BaseDataModule


def _stack_uint8(dataset) -> torch.Tensor:
    """A torchvision data set whose transform ends in PILToTensor → one [N, C, H, W] uint8 tensor."""
    return torch.stack([dataset[i][0] for i in range(len(dataset))])


def _to_unit_range():
    from torchvision import transforms as T

    return T.Lambda(lambda x: x * 2.0 - 1.0)


class _TorchvisionDataModule(BaseDataModule):
    name = ""
    #: how a user gets the files, shown when they are missing
    howto = ""

    def __init__(self, root: str = "data", download: bool = False, batch_size: int = 128, **loader):
        super().__init__(batch_size=batch_size, **loader)
        self.root, self.download = Path(str(root)).expanduser(), bool(download)

    def _missing(self, detail: str = "") -> FileNotFoundError:
        return FileNotFoundError(
            f"data={self.name}: no data set found under data.root={self.root}{detail}; {self.howto} "
            f"or set data.download=true (needs network)"
        )

    def prepare_data(self) -> None:
        """Check (or, with download=true, fetch) the files before anything is written."""
        if self.download:
            self._dataset(train=True, download=True)
            return
        try:
            self._dataset(train=True, download=False)
        except (RuntimeError, FileNotFoundError) as e:
            raise self._missing() from e

    def _dataset(self, train: bool, download: bool = False):  # pragma: no cover - abstract
        raise NotImplementedError

    def build_train(self):
        try:
            return self._dataset(True, self.download)
        except (RuntimeError, FileNotFoundError) as e:
            raise self._missing() from e

    def build_val(self):
        try:
            return self._dataset(False, self.download)
        except (RuntimeError, FileNotFoundError):
            return None


class MNISTDataModule(_TorchvisionDataModule):
    """MNIST 28×28 (pad=2 gives 32×32, a size UNets downsample cleanly)."""

    name = "mnist"
    howto = "put the MNIST files in <root>/MNIST/raw (from https://yann.lecun.com/exdb/mnist/)"

    def __init__(self, root: str = "data", download: bool = False, batch_size: int = 128, pad: int = 0,
                 channels: int | None = None, image_size: int | None = None, dim: int | None = None, **loader):
        super().__init__(root, download, batch_size, **loader)
        self.pad = int(pad)
        s = 28 + 2 * self.pad
        self.data_shape = (1, s, s)
        self.check_declared(dim, channels, image_size)

    def _dataset(self, train, download=False):
        from torchvision import datasets, transforms as T

        tf = T.Compose([T.Pad(self.pad), T.ToTensor(), _to_unit_range()])
        return datasets.MNIST(str(self.root), train=train, download=download, transform=tf)

    def train_images(self):
        self.setup("fit")
        x = torch.as_tensor(self.train_set.base.data)[:, None]  # [N, 1, 28, 28] uint8
        return torch.nn.functional.pad(x, (self.pad,) * 4)

    def labelled_images(self, split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images [N, 1, S, S] as trained (padded by `pad`), labels [N]) of the train split
        (60,000) or the val split (MNIST's 10,000 test images): the classifier features' data."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be train or val, got {split!r}")
        try:
            ds = self._dataset(split == "train", self.download)
        except (RuntimeError, FileNotFoundError) as e:
            raise self._missing() from e
        x = torch.nn.functional.pad(torch.as_tensor(ds.data)[:, None], (self.pad,) * 4)
        return x, torch.as_tensor(ds.targets).long()


class CIFAR10DataModule(_TorchvisionDataModule):
    name = "cifar10"
    howto = "extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into <root>"

    def __init__(self, root: str = "data", download: bool = False, batch_size: int = 128, random_flip: bool = True,
                 channels: int | None = None, image_size: int | None = None, dim: int | None = None, **loader):
        super().__init__(root, download, batch_size, **loader)
        self.random_flip = bool(random_flip)
        self.data_shape = (3, 32, 32)
        self.check_declared(dim, channels, image_size)

    def _dataset(self, train, download=False):
        from torchvision import datasets, transforms as T

        flip = [T.RandomHorizontalFlip()] if (train and self.random_flip) else []
        tf = T.Compose(flip + [T.ToTensor(), _to_unit_range()])
        return datasets.CIFAR10(str(self.root), train=train, download=download, transform=tf)

    def train_images(self):
        self.setup("fit")
        return torch.as_tensor(self.train_set.base.data).permute(0, 3, 1, 2).contiguous()  # [N, 3, 32, 32] uint8


class ImageFolderDataModule(_TorchvisionDataModule):
    """Any folder of images, one sub-folder per class (torchvision ImageFolder), resized to
    `image_size` (shorter side) and centre-cropped; `val_root` optional."""

    name = "imagefolder"
    howto = "point data.root at a folder with one sub-folder of .png/.jpg images per class"

    def __init__(self, root: str = "data", image_size: int = 32, channels: int = 3, random_flip: bool = True,
                 val_root: str | None = None, batch_size: int = 128, dim: int | None = None, **loader):
        super().__init__(root, False, batch_size, **loader)
        self.image_size, self.channels, self.random_flip = int(image_size), int(channels), bool(random_flip)
        if self.channels not in (1, 3):
            raise ValueError(f"data.channels must be 1 or 3, got {channels}")
        self.val_root = Path(str(val_root)).expanduser() if val_root else None
        self.data_shape = (self.channels, self.image_size, self.image_size)
        self.check_declared(dim=dim)

    def _transform(self, train: bool, as_uint8: bool = False):
        from torchvision import transforms as T

        tf = [T.Resize(self.image_size), T.CenterCrop(self.image_size)]
        if self.channels == 1:
            tf.append(T.Grayscale(1))
        if as_uint8:  # the device-resident path flips on the device
            return T.Compose(tf + [T.PILToTensor()])
        if train and self.random_flip:
            tf.append(T.RandomHorizontalFlip())
        return T.Compose(tf + [T.ToTensor(), _to_unit_range()])

    def train_images(self):
        from torchvision import datasets

        return _stack_uint8(datasets.ImageFolder(str(self.root), transform=self._transform(True, as_uint8=True)))

    def _dataset(self, train, download=False):
        from torchvision import datasets

        root = self.root if train else self.val_root
        if root is None:
            raise FileNotFoundError("no val_root")
        if not root.is_dir():
            raise FileNotFoundError(str(root))
        return datasets.ImageFolder(str(root), transform=self._transform(train))
