"""Where the loss looks: drawing one time (or one step of a grid) per example, with 1/p(t).

Every objective is an integral over t (`weighting`), estimated with one draw per example as
f(t)/p(t). The draw's density p decides the variance, never the expectation:

    uniform      t uniform on [t_min, t_max]
    antithetic   VDM's low-discrepancy draw: one u, then u_i = (u + i/B) mod 1
    importance   a histogram over t fitted to the loss seen (improved DDPM's loss-aware sampler)
    log_snr, log_snr_antithetic
                 λ uniform on [λ(t_max), λ(t_min)] (uniform / antithetic), t = t(λ). The ELBO's
                 weight −λ'(t)/p(t) is then constant: the change of variables from t to λ under
                 which the continuous ELBO depends on the schedule only through its endpoints
                 (Kingma et al. 2021, Sec. "invariance to the noise schedule").
    log_normal   ln σ̃ ~ N(P_mean, P_std²), σ̃ = σ/α = e^{−λ/2}, truncated to the process's range, t = t(λ):
                 EDM's training distribution of the noise level (Karras et al. 2022, Sec. 5 / Table 1);
                 with weighting=edm each draw is EDM's per-example loss.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..processes.base import Process
from .weighting import log_normal_density

TIME_SAMPLINGS = ("uniform", "antithetic", "importance", "log_snr", "log_snr_antithetic", "log_normal")
#: pieces of the log-SNR range in which the log_snr samplers draw t uniformly (see `sample_times`)
LOG_SNR_SEGMENTS = 1024


class TimeSampler(nn.Module):
    """Draws u ∈ [0, 1) per example and returns (u, q(u)), q the density of u (1 for uniform).

    uniform     u_i ~ U[0, 1) independently.
    antithetic  one u ~ U[0, 1); u_i = (u + i/B) mod 1 (VDM's low-discrepancy sampler): every
                u_i is still uniform, so estimates stay unbiased, with much lower variance.
    importance  u from a histogram over `num_bins` equal bins with p(bin) ∝ √(E[L²]) of the
                per-example loss seen in that bin (running average, improved-DDPM's
                loss-aware sampler), mixed with `uniform_mix` of the uniform density; uniform
                until every bin has `warmup` observations. The estimate is divided by q(u),
                so it stays unbiased; the histogram is a buffer (saved in checkpoints).
    log_snr, log_snr_antithetic
                u uniform (or antithetic) as above, but mapped to times uniform in λ rather than
                in t (see `sample_times`): the lowest-variance choice for the elbo/likelihood
                weightings and for ELBO evaluation on VP/sub-VP (−λ' ~ 1/t near t = 0).
    log_normal  u uniform, mapped to ln σ̃ ~ N(p_mean, p_std²) by the normal's inverse CDF (see
                `sample_times`): EDM's log-normal noise levels.
    """

    def __init__(self, kind: str = "uniform", num_bins: int = 50, uniform_mix: float = 0.1,
                 decay: float = 0.99, warmup: int = 10, p_mean: float = -1.2, p_std: float = 1.2):
        super().__init__()
        if kind not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {kind!r}")
        if not 0.0 < uniform_mix <= 1.0:
            raise ValueError(f"uniform_mix must lie in (0, 1], got {uniform_mix}")
        if not p_std > 0:
            raise ValueError(f"p_std (std of EDM's log-normal ln sigma) must be > 0, got {p_std}")
        self.kind, self.num_bins, self.uniform_mix, self.decay, self.warmup = kind, int(num_bins), float(uniform_mix), float(decay), int(warmup)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.variable = "log_snr" if kind.startswith("log_snr") else ("log_normal" if kind == "log_normal" else "t")
        self.register_buffer("loss_sq", torch.zeros(self.num_bins, dtype=torch.float64))
        self.register_buffer("counts", torch.zeros(self.num_bins, dtype=torch.float64))

    def bin_probs(self) -> Tensor:
        """Probability of each histogram bin (uniform until warm)."""
        if self.kind != "importance" or bool((self.counts < self.warmup).any()):
            return torch.full((self.num_bins,), 1.0 / self.num_bins, dtype=torch.float64, device=self.counts.device)
        p = self.loss_sq.clamp_min(0).sqrt()
        p = p / p.sum() if float(p.sum()) > 0 else torch.full_like(p, 1.0 / self.num_bins)
        return (1 - self.uniform_mix) * p + self.uniform_mix / self.num_bins

    def forward(self, batch: int, device=None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        if generator is not None:
            device = generator.device
        if self.kind in ("uniform", "log_snr", "log_normal"):
            u = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
            return u, torch.ones_like(u)
        if self.kind in ("antithetic", "log_snr_antithetic"):
            u0 = torch.rand(1, generator=generator, device=device, dtype=torch.float64)
            u = torch.remainder(u0 + torch.arange(batch, device=device, dtype=torch.float64) / batch, 1.0)
            return u, torch.ones_like(u)
        probs = self.bin_probs().to(device)
        b = torch.multinomial(probs, batch, replacement=True, generator=generator)
        r = torch.rand(batch, generator=generator, device=device, dtype=torch.float64)
        u = (b.to(torch.float64) + r) / self.num_bins
        return u, probs[b] * self.num_bins

    @torch.no_grad()
    def update(self, u: Tensor, loss: Tensor) -> None:
        """Feed the per-example losses (as estimated, i.e. after dividing by q) back."""
        if self.kind != "importance":
            return
        b = (u.detach().to(self.counts.device) * self.num_bins).long().clamp(0, self.num_bins - 1)
        sq = loss.detach().to(torch.float64).to(self.counts.device) ** 2
        sums = torch.zeros_like(self.loss_sq).index_add_(0, b, sq)
        n = torch.zeros_like(self.counts).index_add_(0, b, torch.ones_like(sq))
        seen = n > 0
        mean = sums[seen] / n[seen]
        first = self.counts[seen] == 0
        self.loss_sq[seen] = torch.where(first, mean, self.decay * self.loss_sq[seen] + (1 - self.decay) * mean)
        self.counts += n


def as_time_sampler(time_sampling) -> TimeSampler:
    return time_sampling if isinstance(time_sampling, TimeSampler) else TimeSampler(time_sampling)


def aligned_bins(num_bins: int, num_steps: int) -> int:
    """Largest bin count ≤ num_bins dividing num_steps, so each grid time lies in one bin and
    its probability is q(u)/T exactly."""
    for b in range(min(num_bins, num_steps), 0, -1):
        if num_steps % b == 0:
            return b
    return 1


class TimeDraw(NamedTuple):
    """Times t [B] drawn by a `TimeSampler`, their u ∈ [0,1) and 1/p(t) (so ∫ f dt ≈ f(t)/p(t))."""

    t: Tensor
    u: Tensor
    inv_density: Tensor


class StepDraw(NamedTuple):
    """Steps of a T-step grid drawn by `sample_steps`: the cell (s, t] per example and 1/P(cell)
    (so Σ_i f_i ≈ f_i / P(i))."""

    s: Tensor
    t: Tensor
    inv_prob: Tensor


def grid_span(process: Process, num_steps: int | None) -> float:
    """Length of time the draws stand for: t_max − t_min, or T·h for a grid of T cells of width h."""
    lo, hi = float(process.t_min), float(process.t_max)
    if num_steps is None:
        return hi - lo
    T = int(num_steps)
    return T * ((hi - lo) / (T - 1)) if T > 1 else (hi - lo)


def _log_snr_ends(process: Process, device) -> Tensor:
    """[λ(t_min), λ(t_max)] in float64."""
    return process.log_snr(torch.tensor([float(process.t_min), float(process.t_max)], dtype=torch.float64, device=device))


def sample_times(process: Process, sampler: TimeSampler, batch: int, device=None, generator: torch.Generator | None = None,
                 num_steps: int | None = None, dtype=torch.float32) -> TimeDraw:
    """Draw one time per example and its inverse density.

    Continuous: t = t_min + u (t_max − t_min), 1/p(t) = span / q(u).
    Discrete (num_steps = T): the T grid times t_k = t_min + (k−1) h, h = (t_max − t_min)/(T − 1),
      k = ⌊u T⌋ + 1 (for DDPM's process exactly its steps i/T); each stands for a cell of width
      h, so 1/p = T h / q(u).
    log_snr samplers: λ uniform in log-SNR on [λ_min, λ_max], i.e. 1/p(t) = (λ_max − λ_min)/(−λ'(t))
      (the change of variables dλ = λ'(t) dt), so the ELBO's weight −λ'/p is constant: finite
      variance even where −λ' ~ 1/t (VP near 0). Done exactly as a mixture: the λ range is cut
      into M = `LOG_SNR_SEGMENTS` equal pieces whose end times t_j = t(λ_j) come from
      `process.t_from_log_snr` (M + 1 inversions, not one per example), a piece is chosen with
      probability 1/M and t is uniform in it: 1/p(t) = M (t_{j+1} − t_j) exactly, so the estimate
      is unbiased whatever the accuracy of t_from_log_snr, and −λ'(t)/p(t) = (λ_max − λ_min)
      up to the change of −λ' within a piece of width (λ_max − λ_min)/M.
    """
    u, q = sampler(batch, device=device, generator=generator)
    lo, hi = float(process.t_min), float(process.t_max)
    if sampler.variable == "log_normal":
        return _log_normal_times(process, sampler, u, num_steps, dtype)
    if sampler.variable == "log_snr":
        if num_steps is not None:
            raise ValueError("time_sampling='log_snr*' draws continuous times; use uniform/antithetic/importance "
                             "for a discrete process (or discrete=False)")
        with torch.no_grad():  # p is a fixed proposal: E[f_θ(t)/p(t)] has gradient ∫∇f_θ dt
            ends = _log_snr_ends(process, u.device)
            lam = ends[0] + torch.linspace(0.0, 1.0, LOG_SNR_SEGMENTS + 1, dtype=torch.float64, device=u.device) * (ends[1] - ends[0])
            nodes = process.t_from_log_snr(lam).to(torch.float64).clamp(lo, hi)
            nodes[0], nodes[-1] = lo, hi
            pos = u * LOG_SNR_SEGMENTS
            j = torch.floor(pos).clamp(0, LOG_SNR_SEGMENTS - 1).long()
            width = nodes[j + 1] - nodes[j]
            t = nodes[j] + (pos - j) * width
            inv_p = LOG_SNR_SEGMENTS * width  # each segment has probability 1/M, t uniform within it
        return TimeDraw(t.to(dtype), u, inv_p.to(dtype))
    if num_steps is None:
        t = lo + u * (hi - lo)
    else:
        T = int(num_steps)
        k = torch.floor(u * T).clamp(0, T - 1)
        t = lo + k * ((hi - lo) / (T - 1)) if T > 1 else torch.full_like(u, hi)
    return TimeDraw(t.to(dtype), u, (grid_span(process, num_steps) / q).to(dtype))


def _log_normal_times(process: Process, sampler: TimeSampler, u: Tensor, num_steps: int | None, dtype) -> TimeDraw:
    """EDM's ln σ̃ ~ N(P_mean, P_std²) (Karras et al. 2022, Table 1), σ̃ = e^{−λ/2}, truncated to the
    process's range [σ̃(t_min), σ̃(t_max)] (mass Z inside it).

    Continuous: ln σ̃ = P_mean + P_std Φ⁻¹(Φ(a) + u Z), t = t(λ) by `process.t_from_log_snr`, and
      1/p(t) = 1/(N(ln σ̃_t) / Z · (−λ'(t)/2)) (the change of variables d ln σ̃ = −λ'/2 dt), evaluated at
      the t returned. Discrete (num_steps = T grid times of width h): grid time t_k with probability
      P_k ∝ N(ln σ̃_k)(−λ'(t_k)), the same density at the grid, 1/p = h/P_k."""
    m, s = sampler.p_mean, sampler.p_std
    lo, hi = float(process.t_min), float(process.t_max)
    with torch.no_grad():  # p is a fixed proposal
        if num_steps is None:
            ends_sigma = -0.5 * _log_snr_ends(process, u.device)  # [ln σ̃(t_min), ln σ̃(t_max)]
            cdf = torch.special.ndtr((ends_sigma - m) / s)
            mass = cdf[1] - cdf[0]
            log_sigma = m + s * torch.special.ndtri((cdf[0] + u * mass).clamp(1e-300, 1 - 1e-16))
            t = process.t_from_log_snr(-2 * log_sigma).to(torch.float64).clamp(lo, hi)
            lam, dlam = process.log_snr(t).to(torch.float64), process.dlog_snr_dt(t).to(torch.float64)
            inv_p = mass / (log_normal_density(-0.5 * lam, m, s) * 0.5 * -dlam)
        else:
            T = int(num_steps)
            h = grid_span(process, T) / T
            grid = lo + torch.arange(T, dtype=torch.float64, device=u.device) * ((hi - lo) / max(T - 1, 1))
            dens = log_normal_density(-0.5 * process.log_snr(grid).to(torch.float64), m, s) * -process.dlog_snr_dt(grid).to(torch.float64)
            probs = dens / dens.sum()
            k = torch.searchsorted(torch.cumsum(probs, 0), u, right=True).clamp(0, T - 1)
            t, inv_p = grid[k], h / probs[k]
    return TimeDraw(t.to(dtype), u, inv_p.to(dtype))


def sample_steps(process: Process, sampler: TimeSampler, num_steps: int, batch: int, device=None,
                 generator: torch.Generator | None = None, dtype=torch.float32) -> StepDraw:
    """Draw one cell (s, t] of the T-step grid t_i = t_min + i/T (t_max − t_min), i = 1..T, per
    example, for the discrete-time ELBO's sum over i (Kingma et al. 2021, Eq. 13).

    uniform, antithetic: i = ⌊u T⌋ + 1, P(i) = 1/T.
    log_snr, log_snr_antithetic: λ uniform on [λ_T, λ_0] as in `sample_times`, i the cell that
      contains it: P(i) = (λ_{i−1} − λ_i)/(λ_0 − λ_T), proportional to the log-SNR the cell spans.
    """
    T = int(num_steps)
    if T < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if sampler.kind == "importance":
        raise ValueError("discrete_elbo: time_sampling must be uniform, antithetic, log_snr or log_snr_antithetic")
    u, _ = sampler(batch, device=device, generator=generator)
    lo, hi = float(process.t_min), float(process.t_max)
    if sampler.variable == "log_snr":
        grid = lo + torch.arange(T + 1, dtype=torch.float64, device=u.device) / T * (hi - lo)
        with torch.no_grad():
            lam = process.log_snr(grid).to(torch.float64)  # decreasing: λ_0 > … > λ_T
        target = lam[0] + u * (lam[T] - lam[0])
        i = torch.searchsorted(-lam, -target, right=True).clamp(1, T)  # λ_{i−1} ≥ target > λ_i
        inv_p = (lam[0] - lam[T]) / (lam[i - 1] - lam[i])
    else:
        i = torch.floor(u * T).clamp(0, T - 1).long() + 1
        inv_p = torch.full_like(u, float(T))
    s = lo + (i - 1).to(torch.float64) / T * (hi - lo)
    t = lo + i.to(torch.float64) / T * (hi - lo)
    return StepDraw(s.to(dtype), t.to(dtype), inv_p.to(dtype))
