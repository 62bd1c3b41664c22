"""The shared shape of every data module: batches of `(x, index)` with x in model space.

Every data module is a `LightningDataModule` with a `data_shape` known *before* `setup()`
(the model is sized and checked against it), and its batches are `(x, index)`: x is a float
tensor (images in [-1, 1]), `index` the example's position in the training set. The index
lets the training module seed each example's noise from the example itself, so one
process and N DDP processes draw the same noise for the same example (docs/pitfalls.md, "seed each
sample, not each process").

Small data sets can be *device resident* (`data.device_resident=true`; on by default for data
already held as one tensor: gmm, toy2d, digits): the whole training set is one tensor on the
training device (CIFAR-10 as uint8 is 150 MB) and a batch is one indexing operation there,
converted to [-1, 1] and randomly flipped on the device: no loader workers, no per-image
transforms, no host-to-device copy. The batches hold the same examples in the same order as
the loader path (both follow `StepSampler`).
"""
from __future__ import annotations

import functools
import os
import signal

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler


class IndexedDataset(Dataset):
    """Wraps a dataset (tensor or torchvision) so that item i is `(x_i, i)`; labels are dropped."""

    def __init__(self, base, transform=None):
        self.base = base
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        item = self.base[i]
        if isinstance(item, (tuple, list)):
            item = item[0]
        if self.transform is not None:
            item = self.transform(item)
        return item, i


class TensorDataset1(Dataset):
    """A plain tensor as a dataset (item i is x[i])."""

    def __init__(self, x: Tensor):
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> Tensor:
        return self.x[i]


class StepSampler(Sampler[int]):
    """Training indices as a function of the number of batches already consumed.

    Epoch e is the permutation `randperm(N, seed + e)` (identity without shuffle), cut to a
    whole number of optimiser steps of `G = accumulate · world · batch_size` items. Step k's
    items are k·G … (k+1)·G − 1 of it, dealt to `accumulate · world` micro-batches: micro-batch
    m of rank r is the *virtual rank* v = m·W + r and takes every (A·W)-th item from v on.
    So W processes with batch B make exactly the global batches of one process with batch
    W·B (DistributedSampler's layout), and one process accumulating A micro-batches of B
    reads, in micro-batch m, exactly what rank m of A processes reads: with the per-rank
    gradients summed as DDP sums them (each scaled by 1/A, then added), 1 process × A = A processes
    to the bit. `__iter__` starts where `batches_done()` (micro-batches) says the run is: a
    resumed run reads the batches an uninterrupted one would have read.
    """

    def __init__(self, n: int, batch_size: int, world: int = 1, rank: int = 0, shuffle: bool = True, seed: int = 0,
                 batches_done=None, accumulate: int = 1):
        self.n, self.batch_size, self.world, self.rank = n, batch_size, world, rank
        self.shuffle, self.seed, self.batches_done, self.accumulate = shuffle, seed, batches_done, int(accumulate)
        self.steps_per_epoch = n // (self.accumulate * world * batch_size)
        self.batches_per_epoch = self.steps_per_epoch * self.accumulate  # this rank's micro-batches

    def __len__(self) -> int:
        return self.batches_per_epoch * self.batch_size

    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's items of epoch `epoch`, micro-batch after micro-batch."""
        if self.shuffle:
            perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        else:
            perm = torch.arange(self.n)
        a, w, b = self.accumulate, self.world, self.batch_size
        steps = perm[: self.steps_per_epoch * a * w * b].view(self.steps_per_epoch, b, a * w)  # [k, j, v]: item k·G + j·A·W + v
        return steps[:, :, self.rank::w].transpose(1, 2).reshape(-1)  # virtual ranks r, W + r, ...: micro-batches m = 0 … A−1

    def __iter__(self):
        done = int(self.batches_done()) if self.batches_done is not None else 0
        epoch, offset = divmod(done, self.batches_per_epoch)
        return iter(self.epoch_order(epoch)[offset * self.batch_size:].tolist())


_UNIT_LUT: dict[torch.device, Tensor] = {}


def uint8_to_model_space(x: Tensor) -> Tensor:
    """uint8 pixels k → 2·(k/255) − 1, bit-identical on every device to torchvision's
    `ToTensor` (a true division on the CPU) followed by `x * 2 − 1`.

    CUDA computes `x / 255.0` as `x · (1/255)`, which rounds differently for 111 of the 256
    values, so the device path looks the 256 values up in a table made once on the CPU.
    """
    if x.dtype != torch.uint8:
        raise TypeError(f"uint8_to_model_space expects uint8 pixels, got {x.dtype}")
    lut = _UNIT_LUT.get(x.device)
    if lut is None:
        ref = torch.arange(256, dtype=torch.uint8).float().div(255) * 2.0 - 1.0
        lut = _UNIT_LUT[x.device] = ref.to(x.device)
    return lut[x.long()]


class DeviceBatches:
    """Training batches `(x, index)` cut from one tensor on the device, in `StepSampler` order.

    data: [N, ...] float (model space) or uint8 images (→ x/255·2 − 1, as ToTensor then the
    [-1, 1] scaling); flip: random horizontal flips (probability ½ per item and epoch, drawn on the
    device from a generator seeded by (seed, epoch) and looked up by the item's index, so a resumed
    run, and any number of processes or accumulated micro-batches, flip each item as one
    uninterrupted process does).
    """

    def __init__(self, data: Tensor, sampler: "StepSampler", flip: bool = False, seed: int = 0):
        self.data, self.sampler, self.flip, self.seed = data, sampler, bool(flip), int(seed)

    def __len__(self) -> int:
        return self.sampler.batches_per_epoch

    def __iter__(self):
        s, b = self.sampler, self.sampler.batch_size
        done = int(s.batches_done()) if s.batches_done is not None else 0
        epoch = done // s.batches_per_epoch  # the flips' epoch; `s` starts at the right micro-batch
        order = torch.as_tensor(list(iter(s)), dtype=torch.long).to(self.data.device, non_blocking=True)
        if self.flip:  # a generator on the data's device, wherever the data were moved
            g = torch.Generator(device=self.data.device).manual_seed(self.seed * 1_000_003 + epoch)
            flips = torch.rand(self.data.shape[0], generator=g, device=self.data.device) < 0.5
        for k in range(order.numel() // b):
            index = order[k * b:(k + 1) * b]
            x = self.data[index]
            if x.dtype == torch.uint8:
                x = uint8_to_model_space(x)
            if self.flip:
                x = torch.where(flips[index].view(-1, *[1] * (x.dim() - 1)), x.flip(-1), x)
            yield x, index


# what SLURM (preemption, time limit, scancel --signal) and `timeout` send to every process of a job
STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT") if hasattr(signal, n))


def worker_init(worker_id: int, rank: int = 0) -> None:
    """A DataLoader worker's start: ignore the stop signals, which the main process handles (save
    at the current step, then exit or requeue) and shuts its workers down after. With the default
    action a worker that SLURM or `timeout` signals with the whole process group dies first, and
    the main process ends in "DataLoader worker ... killed by signal" without saving. The worker
    is then seeded as Lightning seeds it under seed_everything(workers=True)."""
    for s in STOP_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", "0")):
        from lightning.fabric.utilities.seed import pl_worker_init_function

        pl_worker_init_function(worker_id, rank=rank)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a SLURM or cgroup allotment)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


class BaseDataModule(L.LightningDataModule):
    """Loader plumbing shared by all data sets. Subclasses set `data_shape` and implement
    `build_train()` / `build_val()` returning map-style datasets of tensors."""

    data_shape: tuple[int, ...] = ()
    #: seed of the epoch permutations (DistributedSampler adds the epoch number)
    seed_for_shuffle: int = 0

    def __init__(self, batch_size: int = 128, num_workers: int = 0, shuffle: bool = True,
                 val_batch_size: int | None = None, pin_memory: bool = False,
                 device_resident: bool | None = None):
        super().__init__()
        self.device_resident = device_resident  # None: on for data held as one tensor
        if int(batch_size) < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.val_batch_size = int(val_batch_size or batch_size)
        # never more loader processes than the cores this process may use (a 2-core machine asked for 4
        # gets DataLoader's over-subscription warning and slower training)
        self.num_workers = min(int(num_workers), usable_cores())
        self.shuffle = bool(shuffle)
        self.pin_memory = bool(pin_memory)
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    # subclasses ---------------------------------------------------------------
    def check_declared(self, dim=None, channels=None, image_size=None) -> None:
        """The config may declare `dim`, `channels`, `image_size` (the model configs size
        themselves from them, e.g. `${oc.select:data.dim,2}`); they must match the data."""
        shape = tuple(self.data_shape)
        numel = 1
        for s in shape:
            numel *= s
        name = type(self).__name__
        if dim is not None and int(dim) != numel:
            raise ValueError(f"data.dim={dim} but {name} gives examples of shape {shape} ({numel} features); set data.dim={numel}")
        if channels is not None and (len(shape) != 3 or int(channels) != shape[0]):
            raise ValueError(f"data.channels={channels} but {name} gives examples of shape {shape}; set data.channels={shape[0] if len(shape) == 3 else 'null'}")
        if image_size is not None and (len(shape) != 3 or int(image_size) != shape[-1]):
            raise ValueError(f"data.image_size={image_size} but {name} gives examples of shape {shape}; set data.image_size={shape[-1] if len(shape) == 3 else 'null'}")

    def build_train(self) -> Dataset:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_val(self) -> Dataset | None:
        return None

    #: random horizontal flips of training images (set by the image data modules)
    random_flip: bool = False

    def train_images(self) -> Tensor | None:
        """The whole training set as one tensor (float in model space, or uint8 images), for
        the device-resident path; None when the data set is not held as a tensor."""
        self.setup("fit")
        base = self.train_set.base
        return base.x if isinstance(base, TensorDataset1) else None

    def _device_batches(self, sampler: "StepSampler"):
        if self.device_resident is False or (self.device_resident is None and self.num_workers > 0):
            return None
        data = self.train_images()
        if data is None:
            if self.device_resident:
                raise ValueError(f"data.device_resident=true is not supported by {type(self).__name__}; set data.device_resident=false")
            return None
        trainer = getattr(self, "trainer", None)
        device = trainer.strategy.root_device if trainer is not None else torch.device("cpu")
        cached = getattr(self, "_resident", None)
        if cached is None or cached.device != device:
            cached = self._resident = data.to(device)
        return DeviceBatches(cached, sampler, flip=self.random_flip, seed=self.seed_for_shuffle)

    # Lightning ---------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = IndexedDataset(self.build_train())
            val = self.build_val()
            self.val_set = IndexedDataset(val) if val is not None else None

    def _worker_init(self):
        """Loader workers that ignore the run's stop signals (see `worker_init`), seeded as Lightning's
        `seed_everything(workers=True)` seeds them."""
        trainer = getattr(self, "trainer", None)
        return functools.partial(worker_init, rank=trainer.global_rank if trainer is not None else 0) if self.num_workers > 0 else None

    def _loader(self, ds, batch_size: int, shuffle: bool, drop_last: bool) -> DataLoader:
        return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last and len(ds) >= batch_size,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0, worker_init_fn=self._worker_init())

    def train_dataloader(self) -> DataLoader:
        """Batches through a `StepSampler`: the data order is a function of the optimiser
        step alone, the same for any number of processes, and a run resumed mid-epoch
        continues with exactly the batches it would have seen (docs/pitfalls.md: stateful sampler)."""
        self.setup("fit")
        trainer = getattr(self, "trainer", None)
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        accumulate = int(getattr(trainer, "accumulate_grad_batches", 1) or 1)
        if len(self.train_set) < accumulate * world * self.batch_size:
            raise ValueError(f"the training set ({len(self.train_set)} items) is smaller than one global batch "
                             f"({world} processes x {accumulate} accumulated x data.batch_size={self.batch_size}); "
                             "lower data.batch_size")
        sampler = StepSampler(len(self.train_set), self.batch_size, world, rank, self.shuffle, self.seed_for_shuffle,
                              self._batches_done, accumulate)
        fast = self._device_batches(sampler)
        if fast is not None:
            return fast
        return DataLoader(self.train_set, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                          worker_init_fn=self._worker_init())

    def _batches_done(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.global_step * trainer.accumulate_grad_batches) if trainer is not None else 0

    def val_dataloader(self):
        self.setup("fit")
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.val_batch_size, False, False)

    def train_tensor(self, n: int | None = None) -> Tensor:
        """Up to n training examples stacked (for evaluation against real data)."""
        self.setup("fit")
        n = len(self.train_set) if n is None else min(n, len(self.train_set))
        return torch.stack([self.train_set[i][0] for i in range(n)])
