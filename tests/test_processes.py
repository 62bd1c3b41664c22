"""Processes against closed forms (Ho et al. 2020; Song et al. 2021), diffusers' tables, and their own SDE."""
import math

import numpy as np
import pytest
import torch

from difflab.processes import DDPM, VESDE, VPSDE, ContinuousSNR, SubVPSDE

from conftest import all_processes

f64 = torch.float64


def interior_times(process, n=9):
    lo, hi = process.t_min, process.t_max
    t = torch.linspace(lo + 0.03 * (hi - lo), hi - 0.03 * (hi - lo), n, dtype=f64)
    if isinstance(process, DDPM):  # stay inside a grid interval, away from the kinks
        T = process.num_steps
        t = (torch.floor(t * T) + 0.5) / T
    return t


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_alpha_sigma_is_exactly_alpha_and_sigma(process, dtype):
    """`alpha_sigma` (log α and log σ sharing their common part) equals α(t), σ(t) bit for bit."""
    t = interior_times(process, 17).to(dtype)
    alpha, sigma = process.alpha_sigma(t)
    assert torch.equal(alpha, process.alpha(t)) and torch.equal(sigma, process.sigma(t))


def test_alpha_sigma_follows_a_subclass_that_changes_sigma():
    from difflab.processes.schedules import Linear

    class HalfSigmaVP(ContinuousSNR):  # an extension overriding log σ only
        def log_sigma(self, t):
            return super().log_sigma(t) - math.log(2.0)

    class ShiftedLinear(Linear):  # a schedule with its own VP closed form for σ
        def vp_log_sigma(self, t):
            return super().vp_log_sigma(t) - 1.0

    t = torch.linspace(0.1, 0.9, 5, dtype=f64)
    for p in (HalfSigmaVP("linear"), ContinuousSNR(ShiftedLinear(-10.0, 10.0))):
        alpha, sigma = p.alpha_sigma(t)
        assert torch.equal(alpha, p.alpha(t)) and torch.equal(sigma, p.sigma(t))
    torch.testing.assert_close(HalfSigmaVP("linear").alpha_sigma(t)[1], 0.5 * ContinuousSNR("linear").sigma(t))


def test_vp_alpha_closed_form():
    p = VPSDE(0.1, 20.0)
    t = torch.linspace(1e-5, 1, 50, dtype=f64)
    expected = torch.exp(-0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1)
    torch.testing.assert_close(p.alpha(t), expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(p.sigma(t) ** 2, 1 - expected**2, rtol=1e-10, atol=1e-15)
    # sub-VP: σ = 1 − α² (Song et al. 2021)
    torch.testing.assert_close(SubVPSDE(0.1, 20.0).sigma(t), 1 - expected**2, rtol=1e-10, atol=1e-15)


def test_ve_sigma_closed_form():
    p = VESDE(0.01, 50.0)
    t = torch.linspace(0, 1, 50, dtype=f64)
    torch.testing.assert_close(p.sigma(t), 0.01 * (50.0 / 0.01) ** t, rtol=1e-12, atol=0)
    torch.testing.assert_close(p.alpha(t), torch.ones_like(t))


@pytest.mark.parametrize("schedule,diffusers_name", [("linear", "linear"), ("cosine", "squaredcos_cap_v2")])
@pytest.mark.parametrize("T", [10, 100, 1000])
def test_ddpm_alphas_cumprod_matches_product_and_diffusers(schedule, diffusers_name, T):
    diffusers = pytest.importorskip("diffusers")
    p = DDPM(T, schedule, 1e-4, 0.02)
    t = torch.arange(1, T + 1, dtype=f64) / T
    abar = p.alpha(t) ** 2
    # ᾱ_i = ∏_{j≤i} (1 − β_j), computed independently in numpy
    np.testing.assert_allclose(abar.numpy(), np.cumprod(1 - p.betas.numpy()), rtol=1e-12)
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=diffusers_name, beta_start=1e-4, beta_end=0.02)
    np.testing.assert_allclose(abar.numpy(), ref.alphas_cumprod.double().numpy(), rtol=2e-5, atol=1e-7)
    # float32 grid times land on the grid too
    torch.testing.assert_close(p.alpha(t.float()).double() ** 2, abar, rtol=1e-5, atol=1e-7)


def test_ddpm_linear_beta_values():
    p = DDPM(1000, "linear", 1e-4, 0.02)
    np.testing.assert_allclose(p.betas.numpy(), np.linspace(1e-4, 0.02, 1000), rtol=1e-12)


def test_log_snr_finite_and_decreasing_on_every_grid(process):
    for n in (2, 10, 1000):
        t = torch.linspace(process.t_min, process.t_max, n, dtype=f64)
        lam = process.log_snr(t)
        assert torch.isfinite(lam).all(), f"non-finite log-SNR on a {n}-point grid"
        assert (lam[1:] < lam[:-1]).all(), "log-SNR must decrease in t"
    # the data end is nearly clean, the prior end nearly pure noise
    lam_ends = process.log_snr(torch.tensor([process.t_min, process.t_max], dtype=f64))
    assert lam_ends[0] > 4 and lam_ends[1] < -4


def test_g2_matches_finite_differences(process):
    """g² = dσ²/dt − 2 (d log α/dt) σ²  and  f = (d log α/dt) z, by central differences."""
    t = interior_times(process)
    h = 1e-6 if not isinstance(process, DDPM) else 0.05 / process.num_steps
    with torch.no_grad():
        dlog_a = (process.alpha(t + h).log() - process.alpha(t - h).log()) / (2 * h)
        dvar = (process.sigma(t + h) ** 2 - process.sigma(t - h) ** 2) / (2 * h)
        g2_fd = dvar - 2 * dlog_a * process.sigma(t) ** 2
        x = torch.randn(len(t), 3, dtype=f64)
        f, g = process.sde(x, t)
    torch.testing.assert_close(g**2, g2_fd, rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(f, dlog_a[:, None] * x, rtol=1e-4, atol=1e-8)


def test_forward_sde_reproduces_marginals(process):
    """Euler–Maruyama on dz = f dt + g dw from z_{t0} ~ q(z_{t0}|x) matches q(z_{t1}|x)."""
    gen = torch.Generator().manual_seed(0)
    lo, hi = process.t_min, process.t_max
    t0, t1 = lo + 0.1 * (hi - lo), lo + 0.85 * (hi - lo)
    n_paths, n_steps, x = 40_000, 2000, 0.7
    ts = torch.linspace(t0, t1, n_steps + 1, dtype=f64)
    z = process.q_sample(torch.full((n_paths, 1), x, dtype=f64), ts[:1].expand(n_paths),
                         torch.randn(n_paths, 1, dtype=f64, generator=gen))
    with torch.no_grad():
        for i in range(n_steps):
            dt = ts[i + 1] - ts[i]
            f, g = process.sde(z, ts[i : i + 1])
            z = z + f * dt + g * dt.sqrt() * torch.randn(z.shape, dtype=f64, generator=gen)
        a1, s1 = process.alpha_sigma(ts[-1:])
    mean, var = float(z.mean()), float(z.var())
    se_mean = float(s1) / math.sqrt(n_paths)
    assert abs(mean - float(a1) * x) < 5 * se_mean + 0.01 * abs(float(a1) * x), (mean, float(a1) * x)
    assert abs(var / float(s1) ** 2 - 1) < 5 * math.sqrt(2 / n_paths) + 0.01, (var, float(s1) ** 2)


def test_posterior_matches_dense_gaussian_conditioning(process):
    """q(z_s | z_t, x) (Ho et al. 2020, Eqs. 6–7) vs the conditional of the joint Gaussian of
    (z_s, z_t) built from the Markov transition z_t = α_{t|s} z_s + σ_{t|s} ε' (Eq. 8.37)."""
    D = 3
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, D, dtype=f64, generator=gen)
    ts = interior_times(process, 5)
    for s, t in [(ts[0], ts[2]), (ts[1], ts[4]), (ts[3], ts[4])]:
        s1, t1 = s.reshape(1), t.reshape(1)
        with torch.no_grad():
            a_s, sig_s = process.alpha_sigma(s1)
            a_t, sig_t = process.alpha_sigma(t1)
        a_ts = a_t / a_s
        I = torch.eye(D, dtype=f64)
        S_ss = sig_s**2 * I
        S_st = a_ts * sig_s**2 * I
        S_tt = (a_ts**2 * sig_s**2 + (sig_t**2 - a_ts**2 * sig_s**2)) * I
        joint = torch.cat([torch.cat([S_ss, S_st], 1), torch.cat([S_st.T, S_tt], 1)], 0)
        z_t = a_t * x + sig_t * torch.randn(1, D, dtype=f64, generator=gen)
        K = joint[:D, D:] @ torch.linalg.inv(joint[D:, D:])
        mean_ref = a_s * x[0] + K @ (z_t[0] - a_t * x[0])
        cov_ref = joint[:D, :D] - K @ joint[D:, :D]
        with torch.no_grad():
            mean, std = process.q_posterior(x, z_t, s1, t1)
        torch.testing.assert_close(mean[0], mean_ref, rtol=1e-6, atol=1e-9)
        torch.testing.assert_close(std[0] ** 2 * I, cov_ref, rtol=1e-6, atol=1e-12)


def test_t_from_log_snr_inverts(process):
    t = interior_times(process, 7)
    with torch.no_grad():
        back = process.t_from_log_snr(process.log_snr(t))
    tol = 1e-6 if not isinstance(process, DDPM) else 1e-6
    torch.testing.assert_close(back.double(), t, rtol=0, atol=tol)


def test_prior_log_prob_is_gaussian(process):
    z = process.prior_sample((5, 2, 3), generator=torch.Generator().manual_seed(0), dtype=f64)
    s = process.prior_std()
    ref = torch.distributions.Normal(0.0, s).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(process.prior_log_prob(z), ref)


def test_image_shaped_inputs(process):
    x = torch.randn(4, 3, 8, 8)
    t = torch.full((4,), 0.5 * (process.t_min + process.t_max))
    z = process.q_sample(x, t, torch.randn_like(x))
    f, g = process.sde(z, t)
    assert z.shape == f.shape == x.shape and g.shape == (4,)


@pytest.mark.parametrize(
    "make,arg",
    [
        (lambda: VESDE(sigma_min=50, sigma_max=0.01), "sigma_max"),
        (lambda: VESDE(sigma_min=-1), "sigma_min"),
        (lambda: DDPM(beta_start=0.0), "beta_start"),
        (lambda: DDPM(beta_end=1.5), "beta_end"),
        (lambda: DDPM(beta_start=0.02, beta_end=0.01), "beta_end"),
        (lambda: DDPM(num_steps=0), "num_steps"),
        (lambda: DDPM(beta_schedule="quadratic"), "beta_schedule"),
        (lambda: VPSDE(beta_min=-0.1), "beta_min"),
        (lambda: VPSDE(beta_min=5, beta_max=1), "beta_max"),
        (lambda: ContinuousSNR("linear", log_snr_min=5, log_snr_max=-5), "log_snr_min"),
        (lambda: ContinuousSNR("learned", log_snr_min=5, log_snr_max=5), "log_snr_min"),
        (lambda: ContinuousSNR("sigmoid"), "schedule"),
    ],
)
def test_invalid_arguments_name_the_argument(make, arg):
    with pytest.raises(ValueError, match=arg):
        make()


def test_time_outside_range_is_rejected(process):
    with pytest.raises(ValueError, match=r"t_min, t_max"):
        process.alpha(torch.tensor([process.t_max + 0.5]))
    with pytest.raises(ValueError, match=r"t_min, t_max"):
        process.sde(torch.zeros(1, 2), torch.tensor([process.t_min - 0.5]))


def test_learned_schedule_rejects_crossed_endpoints():
    p = ContinuousSNR("learned", -5, 5, hidden=8)
    with torch.no_grad():
        p.log_snr_min_param.fill_(6.0)
    with pytest.raises(ValueError, match="no longer decreasing"):
        p.log_snr(torch.tensor([0.5]))


def test_learned_schedule_endpoints_are_trainable():
    p = ContinuousSNR("learned", -5, 5, hidden=8)
    lam = p.log_snr(torch.tensor([0.0, 0.3, 1.0]))
    torch.testing.assert_close(lam[[0, 2]], torch.tensor([5.0, -5.0]), rtol=0, atol=1e-5)
    lam.sum().backward()
    assert p.log_snr_min_param.grad is not None and p.log_snr_max_param.grad is not None
    assert any(q.grad is not None and q.grad.abs().sum() > 0 for q in p.net.parameters())


def test_probability_flow_velocity_follows_gaussian_flow(process):
    """For Gaussian data x ~ N(m, s0²), p_t = N(α_t m, v_t), v_t = α_t² s0² + σ_t², and the
    probability-flow ODE (Song et al. 2021, Eq. 13) moves z_t = α_t m + √v_t u with u fixed
    (it transports quantiles). Its velocity, by central differences in t, must equal
    `probability_flow_velocity` with the exact score −(z − α_t m)/v_t; the reverse-SDE drift
    (Eq. 6) adds a further −½ g² score, g² by finite differences of α and σ."""
    m, s0 = 0.4, 0.7
    t = interior_times(process)
    h = 1e-6 if not isinstance(process, DDPM) else 0.05 / process.num_steps
    u = torch.linspace(-2.0, 2.0, len(t), dtype=f64)[:, None]

    def z_of(tt):
        a, s = process.alpha_sigma(tt)
        return (a * m)[:, None] + (a**2 * s0**2 + s**2).sqrt()[:, None] * u

    with torch.no_grad():
        a, s = process.alpha_sigma(t)
        z = z_of(t)
        score = -(z - (a * m)[:, None]) / (a**2 * s0**2 + s**2)[:, None]
        v_fd = (z_of(t + h) - z_of(t - h)) / (2 * h)
        v = process.probability_flow_velocity(z, t, score)
        dlog_a = (process.alpha(t + h).log() - process.alpha(t - h).log()) / (2 * h)
        g2_fd = (process.sigma(t + h) ** 2 - process.sigma(t - h) ** 2) / (2 * h) - 2 * dlog_a * s**2
        drift = process.reverse_sde_drift(z, t, score)
    torch.testing.assert_close(v, v_fd, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(drift, v_fd - 0.5 * g2_fd[:, None] * score, rtol=1e-4, atol=1e-7)


def test_transition_composes_marginals(process):
    """q(z_t | z_s) = N(α_{t|s} z_s, σ²_{t|s}) composed with q(z_s | x) gives q(z_t | x):
    α_{t|s} α_s = α_t and α_{t|s}² σ_s² + σ²_{t|s} = σ_t² (Kingma et al. 2021, Sec. 2); and
    q(z_s | z_t, x) collapses to z_s itself when s = t."""
    t = interior_times(process)
    s = t[:-1]
    with torch.no_grad():
        a_ts, var_ts = process.transition(s, t[1:])
        (a_s, sig_s), (a_t, sig_t) = process.alpha_sigma(s), process.alpha_sigma(t[1:])
        coef = process.posterior_coefficients(s, s)
    torch.testing.assert_close(a_ts * a_s, a_t, rtol=1e-10, atol=0)
    torch.testing.assert_close(a_ts**2 * sig_s**2 + var_ts, sig_t**2, rtol=1e-8, atol=1e-12)
    torch.testing.assert_close(torch.stack(coef), torch.stack([torch.ones_like(s), torch.zeros_like(s), torch.zeros_like(s)]))


def test_ddpm_posterior_coefficients_are_ho_eq7():
    """Ho et al. 2020, Eq. 7 on consecutive DDPM steps i−1 < i: coef_x = √ᾱ_{i−1} β_i/(1 − ᾱ_i),
    coef_z = √(1 − β_i)(1 − ᾱ_{i−1})/(1 − ᾱ_i), std² = β̃_i = (1 − ᾱ_{i−1}) β_i/(1 − ᾱ_i)."""
    p = DDPM(1000, "linear")
    i = torch.tensor([2, 10, 500, 1000])
    abar = torch.cumprod(1 - p.betas, 0)
    b, ab, ab_prev = p.betas[i - 1], abar[i - 1], abar[i - 2]
    coef_z, coef_x, std = p.posterior_coefficients((i - 1).double() / 1000, i.double() / 1000)
    torch.testing.assert_close(coef_x, ab_prev.sqrt() * b / (1 - ab), rtol=1e-9, atol=0)
    torch.testing.assert_close(coef_z, (1 - b).sqrt() * (1 - ab_prev) / (1 - ab), rtol=1e-9, atol=0)
    torch.testing.assert_close(std**2, (1 - ab_prev) * b / (1 - ab), rtol=1e-9, atol=0)
