"""The weighted diffusion loss L_w (see `weighting`), per example, estimated by one draw of t.

    L_w(x) ≈ ½ w(λ_t) (−λ'(t)) ‖ε − ε̂(z_t, t)‖² / p(t),   t ~ p (see `time_sampling`),

computed in float32 (the network under the caller's autocast, see `eps_error`).
"""
from __future__ import annotations

import inspect
import warnings

import torch
from torch import Tensor, nn

from ..parameterizations import Parameterization
from ..processes.base import Process
from .eps_error import at_least_f32, eps_error_at, float32_outside_network, noise_like, parameterization_of
from .time_sampling import TimeDraw, TimeSampler, aligned_bins, grid_span, sample_times
from .weighting import dlog_snr_spread, options_of, reads, weighting_factor


@float32_outside_network
def weighted_diffusion_loss(denoiser, process: Process, x: Tensor, time_sampler: TimeSampler, *, weighting: str = "elbo",
                            parameterization: Parameterization | None = None, gamma: float = 5.0,
                            num_steps: int | None = None, generator: torch.Generator | None = None,
                            t: Tensor | None = None, noise: Tensor | None = None,
                            **weighting_options) -> tuple[Tensor, TimeDraw | None]:
    """(L_w per example [B] in nats, summed over data dims; the time draw, None when `t` is given).

    `t` and `noise` may be given (tests); else they are drawn (t by `time_sampler`, on a grid
    of `num_steps` times when given). Given times are scored as if drawn uniformly (1/p = span).
    With weighting="elbo" this is the continuous-time ELBO's diffusion term (Kingma et al. 2021,
    Eq. 17). `parameterization` defaults to the denoiser's own (ε form for a plain callable).
    weighting_options: the weighting's own (EDM's sigma_data, p_mean, p_std; `weighting_factor`).
    """
    x = at_least_f32(x)
    span = grid_span(process, num_steps)
    if t is None:
        draw = sample_times(process, time_sampler, x.shape[0], device=x.device, generator=generator,
                            num_steps=num_steps, dtype=x.dtype)
        t, inv_p = draw.t, draw.inv_density
    else:
        draw, t = None, t.to(x.device)
        inv_p = torch.full((x.shape[0],), span, dtype=x.dtype, device=x.device)
    noise = noise_like(x, generator) if noise is None else at_least_f32(noise)
    sq = eps_error_at(denoiser, process, x, t, noise, parameterization or parameterization_of(denoiser))
    needs = reads(weighting)
    factor = weighting_factor(weighting, process.log_snr(t) if "log_snr" in needs else None,
                              process.dlog_snr_dt(t) if "dlog_snr_dt" in needs else None, span, gamma, like=t,
                              **weighting_options)
    return (factor * inv_p).to(sq.dtype) * sq, draw  # ∫ f dt ≈ f(t) / p(t)


class DiffusionLoss(nn.Module):
    """The weighted diffusion loss L_w (module docstring), per example, in float32.

    Args:
      process, parameterization: as in `Denoiser` (the denoiser passed to `loss` must use
        the same process; the parameterization decides how ‖ε − ε̂‖² is formed exactly,
        `Parameterization.eps_error`).
      weighting: a registered name of `WEIGHTINGS` or a dotted path to a weighting function
        (`register_weighting`); gamma: Min-SNR's γ; weighting_options: a user weighting's own
        options (keyword parameters of its function).
      time_sampling: one of `TIME_SAMPLINGS` (see `TimeSampler`); num_bins, uniform_mix: the
        importance histogram's options.
      discrete: sample t on a grid of `num_steps` times instead of continuously; None (auto)
        uses the process's own `num_steps` where it has one (DDPM trains on its T steps i/T).
      sigma_data, p_mean, p_std: weighting "edm"'s σ_d (None: the parameterization's `sigma_data`,
        e.g. `EDM`'s, else 0.5) and log-normal σ̃ distribution, also that of time_sampling="log_normal".
      reduce_dims: "mean" averages the squared error over data dimensions (DDPM / score_sde
        `reduce_mean`, keeps gradient clipping meaningful for images); "sum" gives the
        per-example value in nats for the elbo weighting.

    `loss(denoiser, x, generator=None)` → [B] float32; reduce (mean) late.
    """

    def __init__(self, process: Process, parameterization, weighting: str = "simple", time_sampling: str = "uniform",
                 gamma: float = 5.0, reduce_dims: str = "mean", discrete: bool | None = None, num_steps: int | None = None,
                 num_bins: int = 50, uniform_mix: float = 0.1, sigma_data: float | None = None, p_mean: float = -1.2,
                 p_std: float = 1.2, **weighting_options):
        super().__init__()
        takes = options_of(weighting)  # ValueError listing the registered weightings for an unknown name
        unknown = sorted(set(weighting_options) - set(takes))
        if unknown:
            common = [p for p in inspect.signature(DiffusionLoss).parameters
                      if p not in ("process", "parameterization", "weighting_options")]
            raise ValueError(f"weighting {weighting} has no option weighting.{unknown[0]} (set by the recipe or an override); "
                             f"it takes {', '.join(common + [p for p in takes if p not in common])}")
        if reduce_dims not in ("mean", "sum"):
            raise ValueError(f"reduce_dims must be 'mean' or 'sum', got {reduce_dims!r}")
        if not gamma > 0:
            raise ValueError(f"gamma (Min-SNR γ) must be > 0, got {gamma}")
        # kept unregistered: the process belongs to the denoiser (avoids duplicate parameters)
        self.__dict__["process"] = process
        self.parameterization = parameterization
        self.weighting, self.gamma, self.reduce_dims = weighting, float(gamma), reduce_dims
        sigma_data = getattr(parameterization, "sigma_data", 0.5) if sigma_data is None else sigma_data
        if not sigma_data > 0:
            raise ValueError(f"sigma_data must be > 0, got {sigma_data}")
        self.weighting_options = dict(sigma_data=float(sigma_data), p_mean=float(p_mean), p_std=float(p_std), **weighting_options)
        steps = num_steps if num_steps is not None else getattr(process, "num_steps", None)
        self.num_steps = int(steps) if (discrete or (discrete is None and steps is not None)) and steps is not None else None
        if discrete and self.num_steps is None:
            raise ValueError("discrete=True needs num_steps (the process has no num_steps of its own)")
        self.time_sampler = TimeSampler(time_sampling, num_bins=num_bins if self.num_steps is None else aligned_bins(num_bins, self.num_steps),
                                        uniform_mix=uniform_mix, p_mean=p_mean, p_std=p_std)
        # a factor of t through −λ'(t) alone (elbo, likelihood) varies as much as −λ' does
        if reads(weighting) == {"dlog_snr_dt"} and self.num_steps is None and self.time_sampler.kind in ("uniform", "antithetic"):
            spread = dlog_snr_spread(process)
            if spread > 100:
                warnings.warn(f"weighting={weighting} with time_sampling={time_sampling}: -dλ/dt varies {spread:.0f}x over "
                              f"[t_min, t_max] on this process, so the loss estimate has a huge variance (training "
                              f"stalls); set weighting.time_sampling=log_snr_antithetic (or importance)", stacklevel=2)

    @property
    def time_sampling(self) -> str:
        return self.time_sampler.kind

    def forward(self, denoiser, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.loss(denoiser, x, generator)

    def loss(self, denoiser, x: Tensor, generator: torch.Generator | None = None, t: Tensor | None = None,
             noise: Tensor | None = None) -> Tensor:
        """Per-example loss [B]. `t` and `noise` may be given (tests); else they are drawn."""
        loss, draw = weighted_diffusion_loss(denoiser, self.process, x, self.time_sampler, weighting=self.weighting,
                                             parameterization=self.parameterization, gamma=self.gamma,
                                             num_steps=self.num_steps, generator=generator, t=t, noise=noise,
                                             **self.weighting_options)
        if self.reduce_dims == "mean":
            loss = loss / x[0].numel()
        if draw is not None and self.training and self.time_sampler.kind == "importance":  # the only one that learns
            self.time_sampler.update(draw.u, loss / draw.inv_density.to(loss.dtype))  # the integrand f itself
        return loss

    def extra_repr(self) -> str:
        return (f"weighting={self.weighting!r}, time_sampling={self.time_sampling!r}, gamma={self.gamma:g}, "
                f"reduce_dims={self.reduce_dims!r}, num_steps={self.num_steps}"
                + "".join(f", {k}={v:g}" for k, v in self.weighting_options.items() if k in options_of(self.weighting)
                          and isinstance(v, (int, float))))
