"""Weightings of the diffusion loss, each a function of λ = log SNR (Kingma & Gao 2023).

One weighted form covers every diffusion objective (Kingma et al. 2021, Eq. 17, generalised):

    L_w(x) = ½ ∫_{t_min}^{t_max} w(λ_t) · (−dλ/dt) · E_ε ‖ε − ε̂(z_t, t)‖² dt,   z_t = α_t x + σ_t ε.

Because w depends on λ alone, ε, x₀, v and score networks train on the *same* objective
(diffusers#5654):

    elbo        w(λ) = 1                     VDM's continuous-time ELBO diffusion term (Eq. 17)
    likelihood  w(λ) = 1                     λ(t) = g(t)² in score SDE's objective (Song et al. 2021, Eq. 7):
                                             ½ g² ‖ŝ − ∇log q(z|x)‖², and g² = −σ² dλ/dt
    simple      ½ w(λ)(−λ') = 1/(t_max−t_min)   DDPM's L_simple = E_{t~U} ‖ε − ε̂‖² (Ho et al. 2020, Eq. 14)
    snr         ½ w(λ)(−λ') = SNR·e^{−λ}/(t_max−t_min)  Hang et al.'s "SNR" baseline:
                                             E_{t~U} SNR(t)‖x − x̂‖²  (= L_simple in value)
    min_snr     ½ w(λ)(−λ') = min(1, γ e^{−λ})/(t_max−t_min)  Min-SNR-γ (Hang et al. 2023):
                                             E_{t~U} min(SNR(t), γ)‖x − x̂‖²
    sigma2      ½ w(λ)(−λ') = ½/(t_max−t_min)   NCSN's λ(σ) = σ² (Song & Ermon 2019, Eq. 6):
                                             E_{t~U} ½σ²‖ŝ − ∇log q‖²
    flow_matching  w(λ) = e^{−λ/2} = σ̃       the conditional flow-matching loss ∫ ‖u − û‖² dt, u = ε − x, on
                                             process=flow (Lipman et al. 2023, Eq. 9 and 23; Kingma & Gao 2023
                                             give this w for it): there u − û = (ε − ε̂)/(1 − t), and
                                             ½ e^{−λ/2} (−λ') = ½ (t/(1 − t)) · 2/(t (1 − t)) = 1/(1 − t)²
    edm         ½ w(λ)(−λ') = p(ln σ̃) (−λ'/2) (σ̃² + σ_d²)/σ_d²,  σ̃ = e^{−λ/2}, p = N(P_mean, P_std²):
                                             EDM's E_{ln σ̃ ~ N(P_mean, P_std²)} λ(σ̃)‖D − x‖², λ(σ̃) = (σ̃² + σ_d²)/(σ̃ σ_d)²
                                             (Karras et al. 2022, Eq. 2, 8 and Table 1), since ‖D − x‖² = σ̃²‖ε − ε̂‖²
                                             (the form in which Kingma & Gao 2023 write EDM's weighting); with
                                             time_sampling=log_normal each draw is EDM's own per-example loss
                                             (times the normal's mass inside the process's σ̃ range)

(the "uniform-t" weightings are functions of λ through t(λ): w(λ) = 2ω(λ)/((t_max−t_min)(−λ'(t(λ))))
with ω their per-unit-time weight.)

Each is one function registered by `register_weighting` in the registry `WEIGHTINGS`; a user's
weighting is one such function (registered, or named by its dotted path) plus one
`weighting/<name>.yaml` in the user's config directory (docs/objectives.md, "Adding a weighting").
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..processes.base import Process
from ..registry import Registry

#: every weighting by name (a live tuple of the registered names; `register_weighting` adds one)
WEIGHTINGS = Registry("weighting")
#: what a weighting's factor may read, by parameter name (a training step computes only those it names)
READS = ("log_snr", "dlog_snr_dt")


def register_weighting(name: str) -> Callable[[Callable], Callable]:
    """Decorator: register a function as the weighting `name` (selected by `weighting: <name>` in
    a `weighting/*.yaml`; an undecorated function is selected by its dotted path instead).

    The function returns ½ w(λ)(−dλ/dt), the factor of ‖ε − ε̂‖² per unit of time in L_w (module
    doc), and takes, by name, what it reads of: `log_snr` (λ(t)), `dlog_snr_dt` (λ'(t)), `span`
    (t_max − t_min), `like` (a tensor of the result's shape, dtype and device, e.g. t) and its own
    options (e.g. min_snr's `gamma`), which `DiffusionLoss` takes from the YAML."""
    return WEIGHTINGS.decorator(name)


def reads(name: str) -> frozenset[str]:
    """Which of λ(t), λ'(t) (`READS`) the weighting's factor reads."""
    return frozenset(READS).intersection(WEIGHTINGS.get(name).parameters)


def options_of(name: str) -> tuple[str, ...]:
    """The options a weighting takes (its parameters besides λ, λ', span and like)."""
    return tuple(p for p in WEIGHTINGS.get(name).parameters if p not in (*READS, "span", "like"))


@register_weighting("elbo")
def elbo(dlog_snr_dt: Tensor) -> Tensor:
    """w(λ) = 1: VDM's continuous-time ELBO (Kingma et al. 2021, Eq. 17)."""
    return 0.5 * -dlog_snr_dt


@register_weighting("simple")
def simple(span: float, like: Tensor) -> Tensor:
    """DDPM's L_simple = E_{t~U} ‖ε − ε̂‖² (Ho et al. 2020, Eq. 14)."""
    return torch.ones_like(like) / span


@register_weighting("snr")
def snr(log_snr: Tensor, span: float) -> Tensor:
    """SNR · ‖x − x̂‖² = SNR · e^{−λ} ‖ε − ε̂‖² (Hang et al. 2023's baseline; exactly 1 · ‖ε − ε̂‖², written out)."""
    return torch.exp(log_snr) * torch.exp(-log_snr) / span


@register_weighting("min_snr")
def min_snr(log_snr: Tensor, span: float, gamma: float = 5.0) -> Tensor:
    """Min-SNR-γ (Hang et al. 2023): min(SNR, γ) ‖x − x̂‖² = min(1, γ e^{−λ}) ‖ε − ε̂‖²."""
    return torch.clamp(gamma * torch.exp(-log_snr), max=1.0) / span


@register_weighting("likelihood")
def likelihood(dlog_snr_dt: Tensor) -> Tensor:
    """λ(t) = g(t)² of score SDE (Song et al. 2021, Eq. 7): w(λ) = 1, as the ELBO."""
    return 0.5 * -dlog_snr_dt


@register_weighting("sigma2")
def sigma2(span: float, like: Tensor) -> Tensor:
    """NCSN's λ(σ) = σ² (Song & Ermon 2019, Eq. 6): E_{t~U} ½σ²‖ŝ − ∇log q‖² = ½ ‖ε − ε̂‖²."""
    return torch.full_like(like, 0.5) / span


@register_weighting("flow_matching")
def flow_matching(log_snr: Tensor, dlog_snr_dt: Tensor) -> Tensor:
    """w(λ) = e^{−λ/2}: conditional flow matching (Lipman et al. 2023, Eq. 9 and 23; Kingma & Gao 2023)."""
    return 0.5 * torch.exp(-0.5 * log_snr) * -dlog_snr_dt


@register_weighting("edm")
def edm(log_snr: Tensor, dlog_snr_dt: Tensor, sigma_data: float = 0.5, p_mean: float = -1.2, p_std: float = 1.2) -> Tensor:
    """p(ln σ̃) (−λ'/2) (σ̃² + σ_d²)/σ_d², σ̃ = e^{−λ/2}: EDM's loss (Karras et al. 2022, Eq. 2, 8, Table 1)."""
    log_sigma = -0.5 * log_snr
    density = log_normal_density(log_sigma, p_mean, p_std)  # of ln σ̃; d ln σ̃/dt = −λ'/2
    return density * (0.5 * -dlog_snr_dt) * (torch.exp(2 * log_sigma) + sigma_data**2) / sigma_data**2


def weighting_factor(name: str, log_snr: Tensor | None, dlog_snr_dt: Tensor | None, span: float, gamma: float = 5.0, *,
                     like: Tensor | None = None, **options) -> Tensor:
    """½ w(λ) (−dλ/dt): the factor multiplying ‖ε − ε̂‖² per unit of time in L_w (module doc), of
    the registered weighting `name` (or a dotted path to a weighting function).

    `span` = t_max − t_min (the length of the time interval), which turns the textbook
    "expectation over uniform t" weightings into integrals over t. options: the weighting's own
    (EDM's sigma_data, p_mean, p_std: σ_d and the log-normal training distribution of σ̃); those it
    does not take are ignored. λ and λ' may be None where the weighting does not read them
    (`reads`); `like` (e.g. t) then gives the shape, dtype and device of the result.
    """
    entry = WEIGHTINGS.get(name)
    needs = reads(name)
    if ("log_snr" in needs and log_snr is None) or ("dlog_snr_dt" in needs and dlog_snr_dt is None):
        raise ValueError(f"weighting {name!r} needs {'λ(t)' if log_snr is None and 'log_snr' in needs else 'dλ/dt'}")
    like = like if like is not None else log_snr if log_snr is not None else dlog_snr_dt
    return entry.call(dict(options, gamma=gamma), log_snr=log_snr, dlog_snr_dt=dlog_snr_dt, span=span, like=like)


def log_normal_density(log_sigma: Tensor, p_mean: float, p_std: float) -> Tensor:
    """N(ln σ̃; P_mean, P_std²): EDM's training density of ln σ̃ (Karras et al. 2022, Sec. 5)."""
    return torch.exp(-0.5 * ((log_sigma - p_mean) / p_std) ** 2) / (p_std * math.sqrt(2 * math.pi))


def weight_of_log_snr(name: str, log_snr: Tensor, dlog_snr_dt: Tensor, span: float = 1.0, gamma: float = 5.0,
                      **options) -> Tensor:
    """w(λ) itself, the weight of L_w = ½ ∫ w(λ_t)(−dλ/dt)‖ε − ε̂‖² dt (Kingma & Gao 2023; module doc):
    2 · `weighting_factor` / (−dλ/dt), e.g. to compare weightings as functions of λ."""
    return 2.0 * weighting_factor(name, log_snr, dlog_snr_dt, span, gamma, **options) / -dlog_snr_dt


def dlog_snr_spread(process: Process) -> float:
    """max/min of −dλ/dt at t_min and t_max (1 where it cannot be evaluated): how far the ELBO's
    weight varies over uniform t (−λ' ~ 1/t near t = 0 on VP and sub-VP)."""
    try:
        with torch.no_grad():
            t = torch.tensor([float(process.t_min), float(process.t_max)])
            d = (-process.dlog_snr_dt(t)).abs().double()
        return float(d.max() / d.min().clamp_min(1e-300))
    except Exception:  # pragma: no cover - a schedule without a closed-form derivative
        return 1.0
