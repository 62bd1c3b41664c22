"""A user's extension, outside difflab: one Process class, one sampler, one weighting and one
metric function, each reached through a YAML of the user's own config directory (added with
`hydra.searchpath`): a `_target_` (process, sampler, metric) or the weighting's dotted path in
`weighting:`. Nothing in difflab knows these names."""
import math

import torch

from difflab.processes.base import Process


class TrigVP(Process):
    """Variance-preserving α_t = cos(πt/2), σ_t = sin(πt/2) (the "cosine" path of Nichol & Dhariwal
    2021 without offset), t ∈ [t_min, t_max]; only log α and log σ are written, the rest (λ, f, g,
    posterior) comes from the Process base class."""

    def __init__(self, t_min: float = 1e-3, t_max: float = 0.999):
        super().__init__()
        self.t_min, self.t_max = float(t_min), float(t_max)

    def log_alpha(self, t):
        return torch.log(torch.cos(0.5 * math.pi * t))

    def log_sigma(self, t):
        return torch.log(torch.sin(0.5 * math.pi * t))


def toy_ddim(model, process, x, ts, callback=None, generator=None, squeeze: float = 1.0):
    """Deterministic DDIM written in α, σ only: z_s = α_s x̂ + σ_s ε̂ (Song et al. 2021, Eq. 12, η = 0).
    `squeeze` scales ε̂ (1 = DDIM), an option to show options reach the function."""
    for i in range(len(ts) - 1):
        pred = model(x, ts[i])
        a, s = process.alpha_sigma(ts[i + 1].reshape(1).to(torch.float64))
        x = float(a) * pred.x0 + squeeze * float(s) * pred.eps
    return x


def sigmoid_weighting(log_snr, dlog_snr_dt, bias: float = 0.0):
    """Kingma & Gao 2023's sigmoid weighting w(λ) = sigmoid(b − λ), as the factor ½ w(λ)(−dλ/dt)
    of ‖ε − ε̂‖² that difflab's weightings return. `bias` is an option set in the YAML."""
    return 0.5 * torch.sigmoid(bias - log_snr) * -dlog_snr_dt


def mean_radius(samples, scale: float = 1.0):
    """A sample metric: `scale` × the mean Euclidean norm of the samples."""
    return scale * float(samples.flatten(1).double().norm(dim=1).mean())
