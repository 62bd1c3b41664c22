"""Networks: the DDPM CIFAR-10 UNet has Ho et al.'s 35.7M parameters (and diffusers' count for the
same architecture), any image size works, bf16 autocast on CPU stays finite, configs instantiate."""
import math
from pathlib import Path

import pytest
import torch

import difflab
from difflab.denoiser import Denoiser
from difflab.models import MLP, UNet, sinusoidal_embedding
from difflab.parameterizations import Epsilon
from difflab.processes import DDPM, VPSDE

CONF = Path(difflab.__file__).parent / "conf" / "model"


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_ddpm_cifar10_unet_has_35_7M_parameters():
    from diffusers import UNet2DModel

    ours = UNet(in_channels=3, ch=128, ch_mult=(1, 2, 2, 2), num_res_blocks=2, attn_resolutions=(16,), dropout=0.1, image_size=32)
    assert abs(n_params(ours) - 35.7e6) < 0.05e6  # Ho et al. 2020, Table / Appendix B: 35.7M
    # diffusers' UNet2DModel with the same architecture (google/ddpm-cifar10-32's layout)
    peer = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                       up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1, norm_num_groups=32)
    assert n_params(ours) == n_params(peer)


def test_unet_config_matches_the_paper_network():
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    m = instantiate(OmegaConf.load(CONF / "unet_ddpm_cifar10.yaml"))
    assert abs(n_params(m) - 35.7e6) < 0.05e6
    attn_levels = [i for i, s in enumerate(m.down) if any(not isinstance(a, torch.nn.Identity) for a in s.attns)]
    assert attn_levels == [1]  # 32 → 16: attention at 16×16 only (plus the middle)


@pytest.mark.parametrize("shape,ch_mult,attn", [((1, 8, 8), (1, 2), (4,)), ((1, 28, 28), (1, 2, 2), (7,)),
                                                ((3, 7, 9), (1, 2, 2, 2), (4,)), ((2, 5, 5), (1,), (5,))])
def test_unet_shapes_for_any_size(shape, ch_mult, attn):
    torch.manual_seed(0)
    m = UNet(in_channels=shape[0], ch=16, ch_mult=ch_mult, num_res_blocks=1, attn_resolutions=attn, dropout=0.0,
             image_size=shape[1], num_groups=8)
    # break the zero-initialised output so the gradient check below is meaningful
    torch.nn.init.normal_(m.conv_out.weight, std=0.01)
    x = torch.randn(3, *shape, requires_grad=True)
    out = m(x, torch.tensor([1.0, 10.0, 900.0]))
    assert out.shape == x.shape
    out.pow(2).sum().backward()
    assert all(p.grad is not None for p in m.parameters() if p.requires_grad)


def test_unet_depends_on_noise_level_and_input():
    torch.manual_seed(0)
    m = UNet(1, 16, (1, 2), 1, (4,), 0.0, 8, num_groups=8)
    for p in m.parameters():  # undo the zero inits
        torch.nn.init.normal_(p, std=0.05)
    x = torch.randn(2, 1, 8, 8)
    a, b = m(x, torch.tensor([10.0, 10.0])), m(x, torch.tensor([500.0, 500.0]))
    assert (a - b).abs().max() > 1e-4
    x2 = x.clone()
    x2[1] += 1
    assert torch.allclose(m(x2, torch.tensor([10.0, 10.0]))[0], a[0], atol=1e-5)  # no mixing across the batch


def test_unet_bf16_autocast_on_cpu_is_finite_and_denoiser_stays_fp32():
    torch.manual_seed(0)
    m = UNet(3, 32, (1, 2), 1, (8,), 0.1, 16, num_groups=8)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.05)
    m.eval()  # dropout off, so bf16 and fp32 runs are comparable
    den = Denoiser(m, DDPM(1000), Epsilon(), conditioning="t", cond_scale=1000)
    z, t = torch.randn(4, 3, 16, 16), torch.tensor([0.001, 0.2, 0.7, 1.0])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        raw = m(z, t * 1000)
        pred = den(z, t)
    assert raw.dtype == torch.bfloat16 and torch.isfinite(raw.float()).all()
    for field in pred:
        assert field.dtype == torch.float32 and torch.isfinite(field).all()
    with torch.no_grad():
        ref = m(z, t * 1000)
    assert (raw.float() - ref).abs().max() < 0.05 * ref.abs().max()  # bf16 is close to fp32


def test_unet_bad_input_names_the_fix():
    m = UNet(1, 16, (1, 2), 1, (), 0.0, 8, num_groups=8)
    with pytest.raises(ValueError, match="in_channels"):
        m(torch.randn(2, 3, 8, 8), torch.zeros(2))
    with pytest.raises(ValueError, match="num_groups"):
        UNet(1, 24, (1, 2), 1, (), 0.0, 8, num_groups=32)
    with pytest.raises(ValueError, match=r"shape \[B\]"):
        m(torch.randn(2, 1, 8, 8), torch.zeros(3))


def test_mlp_shapes_and_errors():
    m = MLP(4, hidden=32, depth=2, emb_dim=16)
    for p in m.parameters():
        torch.nn.init.normal_(p, std=0.1)
    assert m(torch.randn(5, 4), torch.rand(5)).shape == (5, 4)
    assert m(torch.randn(5, 1, 2, 2), torch.rand(5)).shape == (5, 1, 2, 2)
    assert MLP((1, 2, 2))(torch.randn(3, 1, 2, 2), torch.rand(3)).shape == (3, 1, 2, 2)
    with pytest.raises(ValueError, match="model.dim"):
        m(torch.randn(5, 3), torch.rand(5))
    out = MLP(2)(torch.randn(3, 2), torch.rand(3))
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised output layer


def test_sinusoidal_embedding_formula():
    c = torch.tensor([0.0, 3.0])
    e = sinusoidal_embedding(c, 6, max_period=100.0)
    freqs = 100.0 ** (-torch.arange(3) / 3)
    torch.testing.assert_close(e, torch.cat([torch.cos(c[:, None] * freqs), torch.sin(c[:, None] * freqs)], 1))
    assert sinusoidal_embedding(c, 7).shape == (2, 7)


@pytest.mark.parametrize("name", ["mlp", "unet_tiny", "unet_ddpm_cifar10"])
def test_model_configs_instantiate(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    m = instantiate(cfg)
    if name == "mlp":
        x = torch.randn(2, 2)
    else:
        x = torch.randn(2, m.in_channels, m.image_size, m.image_size)
    assert m(x, torch.tensor([1.0, 2.0])).shape == x.shape
    # with a data section the sizes follow the data
    if name == "mlp":
        full = OmegaConf.create({"data": {"dim": 5}, "model": cfg})
        assert instantiate(full.model).dim == 5
    else:
        full = OmegaConf.create({"data": {"channels": 2, "image_size": 12}, "model": cfg})
        assert instantiate(full.model).in_channels == 2


def test_mlp_trains_through_denoiser_on_every_process():
    """One optimisation step from the zero init reduces the loss (gradients reach the network)."""
    from difflab.losses import DiffusionLoss

    torch.manual_seed(0)
    for process in (VPSDE(), DDPM(100)):
        m = MLP(2, hidden=32, depth=1, emb_dim=16)
        den = Denoiser(m, process, Epsilon(), conditioning="t", cond_scale=1000)
        loss_fn = DiffusionLoss(process, Epsilon(), "simple")
        x = torch.randn(256, 2) * 0.1 + 1
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
        with torch.no_grad():
            before = float(loss_fn(den, x, g()).mean())
        for _ in range(20):
            opt.zero_grad()
            loss_fn(den, x, torch.Generator().manual_seed(_ + 1)).mean().backward()
            opt.step()
        assert float(loss_fn(den, x, g()).mean()) < before


@pytest.mark.parametrize("name", ["mlp", "unet"])
def test_networks_on_the_test_device_match_the_cpu(name, device):
    """The same weights give the same outputs on `device` (--device / DIFFLAB_TEST_DEVICE) as on
    the CPU, also in channels_last layout; under bf16 autocast the Denoiser's prediction is float32."""
    torch.manual_seed(0)
    if name == "mlp":
        net, x = MLP(dim=3, hidden=32, depth=2, emb_dim=16), torch.randn(5, 3)
    else:
        net = UNet(in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), dropout=0.0,
                   image_size=8, num_groups=8)
        x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.2)
    c = torch.rand(5) * 10
    ref = net(x, c)
    dev = net.to(device)
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):  # cuDNN convolutions default to TF32 (~1e-3 off)
        torch.testing.assert_close(dev(x.to(device), c.to(device)).cpu(), ref, rtol=1e-4, atol=1e-4)
        if name == "unet":
            dev.to(memory_format=torch.channels_last)
            out = dev(x.to(device).contiguous(memory_format=torch.channels_last), c.to(device))
            torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)
    den = Denoiser(dev, VPSDE().to(device), Epsilon(), conditioning="log_snr")
    with torch.autocast(device.type, dtype=torch.bfloat16):
        pred = den(x.to(device), torch.full((5,), 0.5, device=device))
    assert pred.eps.dtype == torch.float32 and torch.isfinite(pred.eps).all()


# ------------------------------------------------------------------ VDM's Fourier features of the input
def test_base2_fourier_features_are_vdm_s():
    """Kingma et al. 2021, Appendix C (VDM's Base2FourierFeatures): for channel c and exponent n the
    features sin(2ⁿ·2π·x_c), cos(2ⁿ·2π·x_c); sines first, then cosines, each in channel-major order."""
    from difflab.models.unet import base2_fourier_features

    x = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0)).clamp(-1.5, 1.5)
    ns = (6, 7)
    got = base2_fourier_features(x, ns)
    assert got.shape == (2, 2 * 3 * 2, 4, 5) and got.dtype == torch.float32
    for c in range(3):
        for k, n in enumerate(ns):
            arg = (2.0**n) * 2 * math.pi * x[:, c].double()  # float32 products: |arg| ≤ 1.2e3, error ≤ ~1e-4
            torch.testing.assert_close(got[:, c * 2 + k].double(), torch.sin(arg), atol=5e-4, rtol=0)
            torch.testing.assert_close(got[:, 6 + c * 2 + k].double(), torch.cos(arg), atol=5e-4, rtol=0)
    # n = 7 has a period of 2⁻⁷ on x: one 8-bit bin of [−1, 1] (2/255) is nearly one period
    xs = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(base2_fourier_features(xs + 2.0**-7, (7,)), base2_fourier_features(xs, (7,)), atol=5e-4, rtol=0)


def test_unet_with_fourier_features_widens_only_its_input_convolution():
    plain = UNet(in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, num_groups=8)
    ff = UNet(in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(), image_size=8, num_groups=8,
              fourier_features=(6, 7))
    assert ff.conv_in.in_channels == 1 + 2 * 2 and plain.conv_in.in_channels == 1
    extra = sum(p.numel() for p in ff.parameters()) - sum(p.numel() for p in plain.parameters())
    assert extra == 4 * 16 * 3 * 3  # four more input channels of conv_in, nothing else
    x = torch.randn(3, 1, 8, 8)
    assert ff(x, torch.zeros(3)).shape == x.shape
