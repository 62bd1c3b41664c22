"""Training objectives and likelihood bounds (docs/objectives.md).

One concept per module:

    weighting       w(λ) of L_w = ½ ∫ w(λ_t)(−λ'(t)) ‖ε − ε̂‖² dt: the registry WEIGHTINGS (register_weighting)
    time_sampling   TimeSampler and sample_times / sample_steps: where t is drawn, with 1/p(t)
    eps_error       ‖ε − ε̂(z_t, t)‖², formed by the network's parameterization; the precision rule
    diffusion       DiffusionLoss: the weighted loss per example (training)
    elbo            continuous_elbo / discrete_elbo: −ELBO as named prior / diffusion / reconstruction terms
    score_matching  denoising and sliced score matching
"""
from .diffusion import DiffusionLoss, weighted_diffusion_loss
from .elbo import ElboTerms, continuous_elbo, discrete_elbo, prior_kl, reconstruction_nll
from .eps_error import eps_error_at, eps_squared_error, float32_outside_network, parameterization_of
from .score_matching import denoising_score_matching_loss, sliced_score_matching_loss
from .time_sampling import (TIME_SAMPLINGS, StepDraw, TimeDraw, TimeSampler, aligned_bins, as_time_sampler, grid_span,
                            sample_steps, sample_times)
from .weighting import WEIGHTINGS, dlog_snr_spread, register_weighting, weight_of_log_snr, weighting_factor

__all__ = [
    "WEIGHTINGS", "TIME_SAMPLINGS", "DiffusionLoss", "weighted_diffusion_loss", "ElboTerms", "continuous_elbo",
    "discrete_elbo", "prior_kl", "reconstruction_nll", "eps_error_at", "eps_squared_error", "float32_outside_network",
    "parameterization_of", "denoising_score_matching_loss", "sliced_score_matching_loss", "StepDraw", "TimeDraw",
    "TimeSampler", "aligned_bins", "as_time_sampler", "grid_span", "sample_steps", "sample_times", "dlog_snr_spread",
    "weight_of_log_snr", "weighting_factor", "register_weighting",
]
