"""The device-resident data path: the same examples in the same order as the loader path,
images scaled like ToTensor·2 − 1, flips on the device, batches on the test device."""
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from difflab.data import DigitsDataModule, ImageFolderDataModule
from difflab.data.base import DeviceBatches


def batches(loader, n):
    out = []
    for k, (x, i) in enumerate(loader):
        if k == n:
            break
        out.append((x.cpu(), i.cpu()))
    return out


def test_digits_are_device_resident_by_default_and_match_the_loader():
    fast, slow = DigitsDataModule(batch_size=64), DigitsDataModule(batch_size=64, device_resident=False)
    fl, sl = fast.train_dataloader(), slow.train_dataloader()
    assert isinstance(fl, DeviceBatches) and isinstance(sl, DataLoader) and len(fl) == len(sl) == 1600 // 64
    for (xf, if_), (xs, is_) in zip(batches(fl, 30), batches(sl, 30)):
        assert torch.equal(if_, is_) and torch.equal(xf, xs)
    fl.sampler.batches_done = lambda: 27  # resumed mid-epoch 2: the batches an uninterrupted run reads next
    sl.sampler.batches_done = lambda: 27
    assert all(torch.equal(a[1], b[1]) for a, b in zip(batches(fl, 3), batches(sl, 3)))


@pytest.fixture
def image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    (tmp_path / "a").mkdir()
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "a" / f"{i}.png")
    return tmp_path


def test_image_folder_device_path_scales_and_flips_like_torchvision(image_folder, device):
    ref = ImageFolderDataModule(str(image_folder), image_size=8, batch_size=4, random_flip=False, device_resident=False)
    ref_x = {int(i): x for xb, ib in batches(ref.train_dataloader(), 3) for x, i in zip(xb, ib)}
    dm = ImageFolderDataModule(str(image_folder), image_size=8, batch_size=4, random_flip=True, device_resident=True)
    loader = dm.train_dataloader()
    loader.data = loader.data.to(device)
    flipped = 0
    for epoch in range(4):
        loader.sampler.batches_done = lambda e=epoch: 3 * e
        for x, index in loader:
            assert x.device.type == device.type and x.dtype == torch.float32
            for xi, i in zip(x.cpu(), index.cpu()):
                same, flip = torch.equal(xi, ref_x[int(i)]), torch.equal(xi, ref_x[int(i)].flip(-1))
                assert same or flip
                flipped += flip
    assert 8 < flipped < 40  # 48 draws, each flipped with probability 1/2


def test_device_resident_is_refused_where_unsupported():
    from difflab.data.base import BaseDataModule, IndexedDataset

    class Listy(BaseDataModule):
        data_shape = (2,)

        def build_train(self):
            return [torch.zeros(2)] * 8

    with pytest.raises(ValueError, match="device_resident=false"):
        Listy(batch_size=4, device_resident=True).train_dataloader()
    assert isinstance(Listy(batch_size=4).train_dataloader(), DataLoader)


def test_uint8_pixels_map_exactly_as_torchvision_totensor_on_the_test_device(device):
    """All 256 pixel values, on the test device, equal torchvision's ToTensor (x/255 on the
    CPU) then x·2 − 1, bit for bit. CUDA's x/255.0 is x·(1/255), which rounds differently."""
    from PIL import Image
    from torchvision import transforms as T

    from difflab.data.base import uint8_to_model_space

    pixels = np.arange(256, dtype=np.uint8).reshape(16, 16)
    ref = T.ToTensor()(Image.fromarray(pixels)) * 2.0 - 1.0  # [1, 16, 16]
    got = uint8_to_model_space(torch.from_numpy(pixels)[None].to(device))
    assert got.device.type == device.type and got.dtype == torch.float32
    assert torch.equal(got.cpu(), ref)
    reciprocal = torch.arange(256, dtype=torch.uint8).float() * (1.0 / 255.0) * 2.0 - 1.0
    assert not torch.equal(reciprocal, ref.flatten())  # the rounding the table avoids
    with pytest.raises(TypeError, match="uint8"):
        uint8_to_model_space(torch.zeros(3))


def test_loader_workers_never_exceed_the_usable_cores():
    """data.num_workers beyond the cores this process may use is lowered to them (a default run on a
    2-core machine prints no over-subscription warning); fewer are kept."""
    import os

    from difflab.data import DigitsDataModule

    cores = len(os.sched_getaffinity(0))
    assert DigitsDataModule(num_workers=cores + 7).num_workers == cores
    assert DigitsDataModule(num_workers=0).num_workers == 0
