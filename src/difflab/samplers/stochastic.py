"""Stochastic samplers: ancestral (DDPM), DDIM(η), Euler–Maruyama, predictor–corrector, Langevin.

Each is one function `(model, process, x, ts, callback, generator, **options) -> x` where
`model(z, t)` returns a `Prediction` (x̂, ε̂, score), `x` holds samples of the prior at ts[0]
and `ts` is a descending time grid. Only α, σ, λ, f and g of the process enter. The last
move never injects noise (it returns the mean of the last transition).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import GridConstants, randn_like, report, times


def _group_mean_norm(v: Tensor, generator) -> Tensor:
    """‖v‖ per sample, averaged over each seeding chunk (the whole batch for one generator,
    each chunk for a list of generators) and broadcast back to [B]. score_sde averages over
    the batch; per chunk keeps a sample independent of the batch it was drawn in."""
    groups = len(generator) if isinstance(generator, (list, tuple)) else 1
    norms = v.flatten(1).norm(dim=1)
    return norms.reshape(groups, -1).mean(1, keepdim=True).expand(groups, norms.shape[0] // groups).reshape(-1)


def ancestral(model, process, x: Tensor, ts: Tensor, callback=None, generator=None) -> Tensor:
    """DDPM ancestral sampling: z_s ~ q(z_s | z_t, x = x̂(z_t)), the Gaussian posterior of
    Ho et al. 2020, Eqs. 6–7, with the denoiser's x̂ plugged in (their Alg. 2)."""
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    for i in range(n):
        pred = model(x, c.t[i])
        coef_z, coef_x, std = c.posterior(i)
        x = coef_z * x + coef_x * pred.x0
        if i < n - 1 and std > 0:
            x = x + std * randn_like(x, generator)
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x


def ddim(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, eta: float = 0.0) -> Tensor:
    """DDIM (Song, Meng & Ermon 2021, Eq. 12): z_s = α_s x̂ + √(σ_s² − c²) ε̂ + c ξ,
    c = η · std of q(z_s | z_t, x) (Ho et al. 2020, Eq. 7). η = 0 is deterministic (a first-order
    solver of the probability-flow ODE), η = 1 is ancestral sampling."""
    if not (math.isfinite(eta) and 0.0 <= eta <= 1.0):
        raise ValueError(f"ddim: eta must lie in [0, 1] (0 = deterministic, 1 = ancestral), got {eta}")
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    for i in range(n):
        pred = model(x, c.t[i])
        _, _, std = c.posterior(i)
        noise_std = eta * std
        x = c.alpha[i + 1] * pred.x0 + math.sqrt(max(c.sigma[i + 1] ** 2 - noise_std**2, 0.0)) * pred.eps
        if i < n - 1 and noise_std > 0:
            x = x + noise_std * randn_like(x, generator)
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x


def euler_maruyama(model, process, x: Tensor, ts: Tensor, callback=None, generator=None) -> Tensor:
    """Euler–Maruyama on the reverse SDE dz = [f(z,t) − g(t)² ∇log p_t(z)] dt + g(t) dw̄
    (Anderson 1982; Song et al. 2021, Eq. 6, discretised: Y_{n−1} = Y_n − h f + h g² s_θ + g √h Z_n), f = (d log α/dt) z."""
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    for i in range(n):
        pred = model(x, c.t[i])
        h = c.t[i] - c.t[i + 1]
        x = x - h * process.reverse_sde_drift(x, times(c.t[i], x), pred.score)
        if i < n - 1 and h > 0:
            x = x + math.sqrt(c.g2[i] * h) * randn_like(x, generator)
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x


def langevin_step(x: Tensor, score: Tensor, step: Tensor | float, generator=None, noise: bool = True) -> Tensor:
    """One step of Langevin dynamics x ← x + (ε/2) ∇log p(x) + √ε z (Song & Ermon 2019, Eq. 4, "Sampling with
    Langevin Dynamics"). `step` is ε, a float or a per-sample [B] tensor."""
    if torch.is_tensor(step):
        step = step.reshape((-1,) + (1,) * (x.ndim - 1))
    x = x + 0.5 * step * score
    if noise:
        x = x + (step**0.5 if torch.is_tensor(step) else math.sqrt(step)) * randn_like(x, generator)
    return x


def langevin(score_fn, x: Tensor, step_size: float, num_steps: int, generator=None) -> Tensor:
    """Plain (un-annealed) Langevin dynamics with a fixed score function `score_fn(x)` and a
    fixed step ε (Song & Ermon 2019, Eq. 4). It mixes badly between separated modes: the experiment of Song & Ermon 2019, §3.2.2
    (and Song & Ermon 2019, Fig. 3) shows it gets the mixture weights wrong."""
    if not step_size > 0 or num_steps < 1:
        raise ValueError(f"langevin: step_size must be > 0 and num_steps >= 1, got {step_size}, {num_steps}")
    for k in range(num_steps):
        x = langevin_step(x, score_fn(x), step_size, generator, noise=k < num_steps - 1)
    return x


def pc(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, snr: float = 0.16,
       corrector_steps: int = 1) -> Tensor:
    """Predictor–corrector sampling (Song et al. 2021, Alg. 1–3): at each t_i, `corrector_steps`
    Langevin corrector steps on p_{t_i} with step ε = 2 α_{t|s}² (snr ‖ξ‖/‖ŝ‖)² (norms averaged
    over the batch, or over each seeding chunk),
    then one reverse-diffusion predictor step, the forward discretisation
    z_t = α_{t|s} z_s + σ_{t|s} ξ run backwards: z_s = (2 − α_{t|s}) z_t + σ²_{t|s} ŝ + σ_{t|s} ξ.
    NFE = (corrector_steps + 1) per step."""
    if not (math.isfinite(snr) and snr > 0):
        raise ValueError(f"pc: snr must be > 0 (score_sde uses 0.16 for VP/VE), got {snr}")
    if int(corrector_steps) != corrector_steps or corrector_steps < 0:
        raise ValueError(f"pc: corrector_steps must be an integer >= 0, got {corrector_steps}")
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    for i in range(n):
        a_ts, var_ts = c.alpha_ts[i], c.var_ts[i]
        for _ in range(int(corrector_steps)):
            score = model(x, c.t[i]).score
            xi = randn_like(x, generator)
            step = 2 * a_ts**2 * (snr * _group_mean_norm(xi, generator) / _group_mean_norm(score, generator).clamp_min(1e-30)) ** 2
            step = step.reshape((-1,) + (1,) * (x.ndim - 1))
            x = x + step * score + (2 * step).sqrt() * xi
        pred = model(x, c.t[i])
        x = (2 - a_ts) * x + var_ts * pred.score
        if i < n - 1 and var_ts > 0:
            x = x + math.sqrt(var_ts) * randn_like(x, generator)
        report(callback, i, c.t[i], c.t[i + 1], x, pred.x0)
    return x


def annealed_langevin(model, process, x: Tensor, ts: Tensor, callback=None, generator=None,
                      steps_each: int = 5, step_lr: float = 0.2) -> Tensor:
    """Annealed Langevin dynamics (NCSN, Song & Ermon 2019, Alg. 1): for each noise
    level σ_i = σ(ts[i]), i = 1..N (geometric for the VE process), run `steps_each` Langevin
    steps on p_{t_i} with ε_i = ε σ_i²/σ_L², σ_L = σ(t_min). `step_lr` is ε/σ_L² (so ε_i =
    step_lr · σ_i²; NCSN's CIFAR-10 setting ε = 2e-5, σ_L = 0.01 is step_lr = 0.2). The start
    x is a sample of the prior at ts[0]. NFE = steps_each per level; the very last step adds no
    noise."""
    if int(steps_each) != steps_each or steps_each < 1:
        raise ValueError(f"annealed_langevin: steps_each must be an integer >= 1, got {steps_each}")
    if not (math.isfinite(step_lr) and step_lr > 0):
        raise ValueError(f"annealed_langevin: step_lr must be > 0, got {step_lr}")
    if bool((ts[1:] >= ts[:-1]).any()):
        raise ValueError(
            "annealed_langevin needs a score at every noise level of a strictly decreasing grid; "
            "this grid repeats a level (e.g. grid=ddpm_leading): use grid=uniform_t or uniform_log_snr"
        )
    c = GridConstants.of(process, ts)
    n = len(ts) - 1
    for i in range(1, n + 1):
        eps_i = step_lr * c.sigma[i] ** 2
        for k in range(int(steps_each)):
            pred = model(x, c.t[i])
            last = i == n and k == steps_each - 1
            x = langevin_step(x, pred.score, eps_i, generator, noise=not last)
        report(callback, i - 1, c.t[i - 1], c.t[i], x, pred.x0)
    return x
