"""The negative ELBO per example in nats, as named terms (Kingma et al. 2021, Eq. 11):

    −log p(x) ≤ prior + diffusion + reconstruction
    prior          = KL(q(z_{t_max} | x) ‖ p(z_{t_max}))
    diffusion      = continuous time: ½ ∫ −λ'(t) ‖ε − ε̂(z_t, t)‖² dt                 (Eq. 17)
                     discrete time:   (T/2) E_i [(SNR(s) − SNR(t)) ‖x − x̂(z_t, t)‖²]    (Eq. 13)
    reconstruction = −log p(x | z_{t_min})

The diffusion term is estimated with one draw per example; by default λ is drawn uniformly
(antithetic), which makes its weight constant whatever the process (see `time_sampling`).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ..processes.base import Process, append_dims
from .diffusion import weighted_diffusion_loss
from .eps_error import at_least_f32, eps_error_at, float32_outside_network, noise_like, sum_dims
from .time_sampling import as_time_sampler, sample_steps


class ElboTerms(NamedTuple):
    """Per-example terms of −ELBO in nats, each [B]: total = prior + diffusion + reconstruction."""

    prior: Tensor
    diffusion: Tensor
    reconstruction: Tensor

    @property
    def total(self) -> Tensor:
        return self.prior + self.diffusion + self.reconstruction


def prior_kl(process: Process, x: Tensor) -> Tensor:
    """KL(q(z_{t_max} | x) ‖ N(0, s² I)) in nats [B], s = process.prior_std():
    Σ_d ½ [(σ² + α² x_d²)/s² − 1 − log(σ²/s²)]."""
    x = at_least_f32(x)
    t = torch.full((x.shape[0],), float(process.t_max), device=x.device, dtype=x.dtype)
    alpha, sigma = process.alpha_sigma(t)
    a, s = append_dims(alpha, x.ndim), append_dims(sigma, x.ndim)
    var_p = process.prior_std() ** 2
    kl = 0.5 * ((s**2 + (a * x) ** 2) / var_p - 1.0 - torch.log(s**2 / var_p))
    return sum_dims(kl)


def _std_normal_cdf(v: Tensor) -> Tensor:
    return 0.5 * (1.0 + torch.erf(v / math.sqrt(2.0)))


def reconstruction_nll(process: Process, x: Tensor, noise: Tensor, decoder: str = "gaussian", bits: int = 8) -> Tensor:
    """−log p(x | z_{t_min}) in nats [B], z_{t_min} = α₀ x + σ₀ ε, decoder mean z/α₀, std σ₀/α₀ (VDM).

    gaussian:     density N(x; z/α₀, σ₀²/α₀² I) (continuous data)
    discretized:  8-bit data in [−1, 1] (levels k/(2^bits − 1)·2 − 1): probability of x's bin
                  [x − Δ, x + Δ], Δ = 1/(2^bits − 1), with the outer bins extended to ±∞
                  (DDPM's discretised Gaussian decoder, Ho et al. 2020 Eq. 13). This is a
                  probability, so the bound is on the discrete data's −log P (nats).
    """
    x, noise = at_least_f32(x), at_least_f32(noise)
    t = torch.full((x.shape[0],), float(process.t_min), device=x.device, dtype=x.dtype)
    alpha, sigma = process.alpha_sigma(t)
    a, s = append_dims(alpha, x.ndim).to(x.dtype), append_dims(sigma, x.ndim).to(x.dtype)
    z = a * x + s * noise
    mean, std = z / a, s / a
    if decoder == "gaussian":
        nll = 0.5 * ((x - mean) / std) ** 2 + torch.log(std) + 0.5 * math.log(2 * math.pi)
        return sum_dims(nll)
    if decoder == "discretized":
        half = 1.0 / (2**bits - 1)
        upper = torch.where(x > 1 - half, torch.ones_like(x), _std_normal_cdf((x + half - mean) / std))
        lower = torch.where(x < -1 + half, torch.zeros_like(x), _std_normal_cdf((x - half - mean) / std))
        # in the far tail compute the bin mass from the log-density to avoid 0 − 0
        prob = (upper - lower).clamp_min(0)
        log_prob = torch.where(prob > 1e-12, prob.clamp_min(1e-30).log(),
                               math.log(2 * half) - 0.5 * ((x - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi))
        return -sum_dims(log_prob)
    raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")


def _with_end_terms(process: Process, x: Tensor, diffusion: Tensor, generator, decoder: str, bits: int) -> ElboTerms:
    """Complete a diffusion term with the prior and reconstruction terms (fresh decoder noise)."""
    return ElboTerms(prior=prior_kl(process, x), diffusion=diffusion,
                     reconstruction=reconstruction_nll(process, x, noise_like(x, generator), decoder, bits))


@float32_outside_network
def continuous_elbo(denoiser, process: Process, x: Tensor, *, generator: torch.Generator | None = None,
                    time_sampling="log_snr_antithetic", decoder: str = "gaussian", bits: int = 8) -> ElboTerms:
    """Continuous-time negative ELBO (Kingma et al. 2021, Eqs. 11 and 17), per example in nats:

        diffusion = ½ ∫_{t_min}^{t_max} −λ'(t) ‖ε − ε̂(z_t, t)‖² dt = ½ ∫ −λ'(t) e^{λ_t} ‖x − x̂‖² dt,

    one t per example from `time_sampling` (default: λ uniform, antithetic), plus the prior KL
    and the reconstruction term (`reconstruction_nll`). Differentiable (a learned log-SNR
    schedule trains on it). `denoiser(z, t)` → `Prediction`; its `.parameterization`, if any,
    forms ε − ε̂ exactly. Inputs in float32 or float64.
    """
    x = at_least_f32(x)
    diffusion, _ = weighted_diffusion_loss(denoiser, process, x, as_time_sampler(time_sampling), weighting="elbo",
                                           generator=generator)
    return _with_end_terms(process, x, diffusion, generator, decoder, bits)


@float32_outside_network
def discrete_elbo(denoiser, process: Process, x: Tensor, num_steps: int, *, generator: torch.Generator | None = None,
                  time_sampling="uniform", decoder: str = "gaussian", bits: int = 8) -> ElboTerms:
    """Discrete-time negative ELBO with T = num_steps steps (Kingma et al. 2021, Eq. 13), per example in nats:

        diffusion = (T/2) E_{i~U{1..T}} [(SNR(s) − SNR(t)) ‖x − x̂(z_t, t)‖²],
                    s = t_min + (i−1)/T·(t_max − t_min),  t = t_min + i/T·(t_max − t_min)
                  = ½ Σ_i expm1(λ_s − λ_t) ‖ε − ε̂‖²     (since ‖x − x̂‖² = e^{−λ_t}‖ε − ε̂‖²),

    the sum over i estimated by one cell per example (`sample_steps`: uniform or antithetic over
    i, or in proportion to the log-SNR each cell spans for log_snr*), plus the same prior and
    reconstruction terms as `continuous_elbo`; it decreases towards the continuous ELBO as T
    grows (VDM, Appendix). For DDPM's own chain (t_min = 1/T', t_max = 1) num_steps = T' − 1
    puts s, t on its steps.
    """
    x = at_least_f32(x)
    draw = sample_steps(process, as_time_sampler(time_sampling), num_steps, x.shape[0], device=x.device,
                        generator=generator, dtype=x.dtype)
    sq = eps_error_at(denoiser, process, x, draw.t, noise_like(x, generator))
    weight = 0.5 * torch.expm1(process.log_snr(draw.s) - process.log_snr(draw.t)) * draw.inv_prob
    return _with_end_terms(process, x, weight.to(sq.dtype) * sq, generator, decoder, bits)
