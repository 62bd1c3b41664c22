"""Schedules as an axis: every process × every log-SNR schedule is a distinct, valid process with
the process's own endpoints (VDM, Kingma et al. 2021, Eq. 3–4 and 17), or a one-line refusal."""
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from difflab.cli.common import CONFIG_DIR
from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, LinearBeta, LogSNRSchedule, SubVPSDE

f64 = torch.float64
SCHEDULES = sorted(p.stem for p in (Path(CONFIG_DIR) / "schedule").glob("*.yaml"))
PROCESSES = sorted(p.stem for p in (Path(CONFIG_DIR) / "process").glob("*.yaml"))
# combinations refused by design (message must name the fix)
REFUSED = {("ddpm", "learned"): "continuous_snr", ("continuous_snr", "linear_beta"): "t_min > 0",
           ("ve", "linear_beta"): "t_min > 0",
           # flow (α = 1 − t, σ = t) is its own schedule
           **{("flow", name): "schedule=linear" for name in ("cosine", "geometric_sigma", "learned", "linear_beta")}}


def build(process, schedule, *extra):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["output=unused", f"process={process}", f"schedule={schedule}", *extra])
    return instantiate(cfg.process)


def ends(p):
    return p.log_snr(torch.tensor([p.t_min, p.t_max], dtype=f64)).detach()


def test_every_yaml_is_a_registered_schedule():
    assert set(SCHEDULES) == set(LogSNRSchedule.registry), "one class + one YAML per schedule"


@pytest.mark.parametrize("process", PROCESSES)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_every_process_takes_every_schedule_or_refuses(process, schedule, one_thread):
    if (process, schedule) in REFUSED:
        with pytest.raises(Exception, match=REFUSED[(process, schedule)]):
            build(process, schedule)
        return
    p = build(process, schedule).double()
    native = build(process, "linear").double()
    assert p.schedule == schedule or (schedule == "linear" and p.schedule in ("linear_beta", "geometric_sigma", "linear"))
    t = torch.linspace(p.t_min, p.t_max, 257, dtype=f64)
    with torch.no_grad():
        lam, a, s = p.log_snr(t), p.alpha(t), p.sigma(t)
    assert torch.isfinite(lam).all() and (lam[1:] < lam[:-1]).all()
    torch.testing.assert_close(lam, 2 * (a.log() - s.log()), rtol=1e-9, atol=1e-9)
    if process == "ve":
        torch.testing.assert_close(a, torch.ones_like(a))
    elif process == "flow":
        torch.testing.assert_close(a + s, torch.ones_like(a))  # α = 1 − t, σ = t
    elif process != "subvp":
        torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))  # variance preserving
    # same endpoints as the process's own schedule (the ELBO's only dependence, VDM Eq. 17);
    # DDPM's cosine is Nichol & Dhariwal's published β table, with its own endpoints
    if (process, schedule) != ("ddpm", "cosine"):
        torch.testing.assert_close(ends(p), ends(native), rtol=1e-6, atol=1e-5)
    # dλ/dt (closed form or autograd) against central differences, inside the range
    if process != "ddpm":
        ti = torch.linspace(p.t_min + 0.05, p.t_max - 0.05, 9, dtype=f64)
        h = 1e-6
        with torch.no_grad():
            fd = (p.log_snr(ti + h) - p.log_snr(ti - h)) / (2 * h)
            torch.testing.assert_close(p.dlog_snr_dt(ti), fd, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(p.t_from_log_snr(p.log_snr(ti)).double(), ti, rtol=0, atol=1e-6)
    if schedule != "linear":
        same = (native.alpha(t) - a).abs().max() < 1e-6 and (native.sigma(t) - s).abs().max() < 1e-6
        native_names = {"vp": "linear_beta", "subvp": "linear_beta", "ddpm": "linear_beta", "ve": "geometric_sigma",
                        "continuous_snr": "geometric_sigma"}
        assert bool(same) == (schedule == native_names[process]), "a different schedule must be a different process"


def test_native_schedules_are_the_published_processes():
    t = torch.linspace(1e-5, 1, 50, dtype=f64)
    vp = VPSDE(0.1, 20.0, schedule="cosine")
    a_vp = torch.exp(-0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1)  # Song et al. 2021, Eq. 33
    torch.testing.assert_close(VPSDE(0.1, 20.0, schedule="linear_beta").alpha(t), a_vp, rtol=1e-12, atol=0)
    assert (vp.alpha(t[5:-5]) - a_vp[5:-5]).abs().max() > 1e-2
    # VE on a cosine schedule keeps σ(0) = σ_min and σ(1) = σ_max (so the prior N(0, σ_max²))
    ve = VESDE(0.01, 50.0, schedule="cosine")
    torch.testing.assert_close(ve.sigma(torch.tensor([0.0, 1.0], dtype=f64)), torch.tensor([0.01, 50.0], dtype=f64))
    assert ve.prior_std() == pytest.approx(50.0)
    # sub-VP on another schedule: still σ = 1 − α²
    sv = SubVPSDE(schedule="cosine")
    torch.testing.assert_close(sv.sigma(t), 1 - sv.alpha(t) ** 2, rtol=1e-10, atol=1e-14)


def test_cosine_continuous_snr_closed_form():
    """λ(t) = −2 log tan(a + t (b − a)) with a = atan(e^{−λ_max/2}), b = atan(e^{−λ_min/2})."""
    p, t = ContinuousSNR("cosine", -10, 10), torch.linspace(0, 1, 33, dtype=f64)
    a, b = math.atan(math.exp(-5)), math.atan(math.exp(5))
    torch.testing.assert_close(p.log_snr(t), -2 * torch.log(torch.tan(a + t * (b - a))))


def test_linear_beta_from_endpoints_recovers_the_betas():
    native = LinearBeta(0.1, 20.0, 1e-5)
    fit = LinearBeta.from_endpoints(native.log_snr_min, native.log_snr_max, 1e-5, 1.0)
    assert fit.beta_min == pytest.approx(0.1, rel=1e-6) and fit.beta_max == pytest.approx(20.0, rel=1e-6)


def test_ddpm_on_a_log_snr_schedule_at_the_grid():
    """ᾱ_i = sigmoid(λ(i/T)), λ linear in i between the linear β table's λ_1 and λ_T."""
    T = 50
    ref = DDPM(T, "linear")
    lab = torch.log(ref.alphas_cumprod)
    lam_ref = lab - torch.log1p(-ref.alphas_cumprod)
    p = DDPM(T, "geometric_sigma")
    i = torch.arange(1, T + 1, dtype=f64)
    lam = lam_ref[0] + (i - 1) / (T - 1) * (lam_ref[-1] - lam_ref[0])
    torch.testing.assert_close(p.alphas_cumprod, torch.sigmoid(lam), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(torch.cumprod(1 - p.betas, 0), p.alphas_cumprod, rtol=1e-10, atol=1e-14)


def test_gmm_sweep_over_schedule_gives_two_processes():
    """`difflab-train -m experiment=gmm schedule=linear,cosine` composes two different processes."""
    t = torch.linspace(0.05, 0.95, 19, dtype=f64)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        procs = [instantiate(compose("train", overrides=["output=unused", "experiment=gmm", f"schedule={s}"]).process)
                 for s in ("linear", "cosine")]
    a0, a1 = (p.alpha(t) for p in procs)
    assert (a0 - a1).abs().max() > 0.05
    torch.testing.assert_close(ends(procs[0]), ends(procs[1]), rtol=1e-6, atol=1e-5)


def test_learned_schedule_loads_a_checkpoint_from_before_schedules_were_modules():
    new = ContinuousSNR("learned", -5, 5, hidden=8)
    old_keys = {k.replace("log_snr_schedule.", ""): v + 1.0 for k, v in new.state_dict().items()}
    assert "net.l1.weight" in old_keys and "log_snr_min_param" in old_keys
    new.load_state_dict(old_keys)
    assert new.log_snr_min == -4.0 and new.log_snr_max == 6.0
