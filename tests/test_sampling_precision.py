"""Sampling precision: fp32, bf16 (autocast: normalisations in float32), bf16-true (a bf16 copy
of the network, every layer in bf16, as diffusers' pipelines run a bf16 UNet). In every mode the
sampler's state and the samples stay float32, and the trained network is left untouched."""
import pytest
import torch

from difflab.denoiser import Denoiser
from difflab.evaluation import PRECISIONS, SamplerChoice, draw_samples
from difflab.evaluation.sampling import in_precision
from difflab.models import UNet
from difflab.models.options import apply_model_options, is_compiled, network_copy
from difflab.parameterizations import Epsilon
from difflab.processes import DDPM


def unet_denoiser(device):
    torch.manual_seed(0)
    net = UNet(in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,), image_size=8, num_groups=4)
    for p in net.parameters():  # a network that does something (the output layer starts at zero)
        torch.nn.init.normal_(p, std=0.05) if p.ndim > 1 else None
    process = DDPM(1000, "linear")
    return Denoiser(net.to(device).eval(), process.to(device), Epsilon(), conditioning="t", cond_scale=1000.0), process


def draw(den, process, device, precision):
    x, nfe = draw_samples(den, process, (1, 8, 8), 64, 0, SamplerChoice("ddim", 10), batch_size=64, device=device,
                          precision=precision, progress=False)
    return x


def norm_inputs(den):
    """dtypes of the network's GroupNorm outputs (a hook, copied with the network)."""
    seen = []
    for m in den.model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    return seen


def test_precision_names_follow_lightning():
    assert {"fp32", "bf16", "bf16-mixed", "bf16-true", "fp16", "16-mixed", "fp16-true", "16-true"} <= set(PRECISIONS)
    with pytest.raises(ValueError, match="precision must be one of"):
        in_precision(None, "bf17")


@pytest.mark.parametrize("precision", ["bf16", "bf16-true"])
def test_low_precision_samples_are_float32_close_to_fp32_and_leave_the_network_untouched(device, precision):
    den, process = unet_denoiser(device)
    before = {k: v.clone() for k, v in den.model.state_dict().items()}
    seen = norm_inputs(den)
    ref = draw(den, process, device, "fp32")
    assert seen and set(seen) == {torch.float32}
    seen.clear()
    x = draw(den, process, device, precision)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    err = (x - ref).abs().max() / ref.abs().max()
    assert 0 < err < 0.05, err  # bf16 keeps ~3 significant digits; not a silent fp32 run
    # the bf16 copy runs GroupNorm in bf16; CUDA's autocast keeps it in float32 (its fp32 op list)
    if precision == "bf16-true":
        assert set(seen) == {torch.bfloat16}
    elif device.type == "cuda":
        assert set(seen) == {torch.float32}
    after = den.model.state_dict()
    assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())


def test_true_precision_matches_a_bf16_network_run_by_hand(device):
    """bf16-true = the network with bf16 weights on the bf16-rounded input, its output in float32,
    c (t·1000) in float32 (t = 999 is 1000 in bf16)."""
    den, process = unet_denoiser(device)
    low, amp = in_precision(den, "bf16-true")
    assert amp is None and low.process is den.process and low.parameterization is den.parameterization
    z = torch.randn(4, 1, 8, 8, device=device)
    t = torch.tensor([0.999, 0.5, 0.1, 0.0105], device=device)
    net16 = den.model.to(torch.bfloat16)
    try:
        raw = net16(z.to(torch.bfloat16), t * 1000.0).float()
    finally:
        den.model.to(torch.float32)
    a, s = process.alpha_sigma(t)
    x0 = (z - s[:, None, None, None] * raw) / a[:, None, None, None]
    pred = low(z, t)
    assert pred.eps.dtype == torch.float32
    if device.type == "cpu":
        assert torch.equal(pred.eps, raw)
    else:  # cuDNN may pick another kernel for the copy; a float32 run would be ~1e-2 away
        torch.testing.assert_close(pred.eps, raw, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(pred.x0, x0, rtol=1e-5, atol=1e-5)


def test_network_without_weights_samples_as_it_is():
    from difflab.models.oracle import GMMOracle

    oracle = GMMOracle(torch.tensor([[-2.0, 0.0], [2.0, 0.0]]), torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.7]))
    den = oracle.denoiser(DDPM(1000, "linear"), Epsilon())
    assert in_precision(den, "bf16-true") == (den, None)
    with pytest.raises(ValueError, match="bf16-mixed"):
        in_precision(lambda z, t: z, "bf16-true")
    with pytest.raises(ValueError, match="precision=16-mixed"):  # a name that exists, for fp16 too
        in_precision(lambda z, t: z, "fp16-true")


def test_compiled_network_copy_is_compiled_again_and_the_original_keeps_its_own():
    net = apply_model_options(torch.nn.Linear(3, 3), compile={"dynamic": False})
    own = net._compiled_call_impl
    low = network_copy(net, torch.bfloat16)
    assert is_compiled(low) and low._compiled_call_impl is not own and net._compiled_call_impl is own
    assert low._difflab_compile_options == {"dynamic": False}
    assert low.weight.dtype == torch.bfloat16 and net.weight.dtype == torch.float32
    assert not is_compiled(network_copy(torch.nn.Linear(3, 3)))
