"""Likelihoods of a diffusion model, three ways, with standard errors and bits/dim.

1. **Probability-flow ODE** (Song et al. 2021, Eq. 13). The ODE

       dz/dt = v(z, t) = f(z, t) − ½ g(t)² ∇ log p_t(z)                         (PF-ODE)

   moves samples of p_t into samples of p_s without noise, so by the instantaneous
   change of variables d log p_t(z_t)/dt = −∇·v(z_t, t) (Chen et al. 2018; Song et al. 2021, App. D.2) and

       log p_{t_min}(x) = log p_{t_max}(z_{t_max}) + ∫_{t_min}^{t_max} ∇·v(z_t, t) dt,   z_{t_min} = x.

   We integrate the augmented state (z, ∫∇·v) with torchdiffeq. The divergence is exact
   (D backward passes, for small D) or Hutchinson's unbiased estimate ε^T (∂v/∂z) ε with a
   Rademacher or Gaussian probe ε drawn once per example and solve (seeded).
   The number is the exact log-density *of the model's ODE flow* (up to solver error) at
   t_min, treated as the data density (for the oracle, p_{t_min} differs from p_data by
   the tiny σ(t_min) blur).

2. **Continuous-time ELBO** (Kingma et al. 2021, Eq. 17) and
3. **discrete-time ELBO** (Kingma et al. 2021, Eq. 13; with Ho et al. 2020's discretised-Gaussian
   decoder, Eq. 13) —
   computed per example by `difflab.losses.continuous_elbo` / `discrete_elbo`; this module
   only draws many (x, t, ε) samples in batches and turns them into a mean with a standard
   error. By default λ = log SNR is drawn uniformly (antithetic) for the continuous ELBO, on
   every process: drawn uniformly in t, VP's weight −dλ/dt spans 5000× and the estimate's
   error bars are ~30× wider (and can sit several standard errors off).

Units. Everything is per example in nats; `Estimate.per_dim` divides by D. Images are
scored in **bits/dim in 8-bit space**: integers k ∈ {0..255} are uniformly dequantised to
y = k + u, u ~ U[0, 1), and the model sees x = 2y/256 − 1 ∈ [−1, 1). A density p_x on x
is a density on y with Jacobian |dx/dy| = 2/256 per dim, so

       bpd = −log p_x(x) / (D ln 2) + log2(256/2) = nll_x / (D ln 2) + 7      (`bits_per_dim`).

A uniform density on [−1, 1)^D (nll_x = D ln 2) is therefore exactly 8 bits/dim. The +7 is
valid for 8-bit data in [−1, 1) only (other bit depths or ranges change it: pass `bits`,
`data_range`); a discretised decoder already scores integer bins of width 1 and needs no
offset (`data_range = 2^bits`). This conversion is written once, in `bits_per_dim`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from .processes.base import Process, append_dims

LN2 = math.log(2.0)
DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


# --------------------------------------------------------------------------- results
@dataclass
class Estimate:
    """A Monte Carlo mean with its standard error (both per example, nats unless stated),
    plus the per-draw values it came from and the data dimension D."""

    mean: float
    se: float
    num_draws: int
    dim: int
    values: Tensor | None = None

    @property
    def per_dim(self) -> tuple[float, float]:
        """(mean, se) in nats/dim."""
        return self.mean / self.dim, self.se / self.dim

def estimate_from_values(values: Tensor, dim: int, keep_values: bool = True) -> Estimate:
    """Mean and standard error std/√n of per-draw values (nats)."""
    v = values.detach().to(torch.float64).reshape(-1)
    n = v.numel()
    se = float(v.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return Estimate(float(v.mean()), se, n, dim, v if keep_values else None)


# --------------------------------------------------------------------------- bits/dim
def bits_per_dim(nll_nats: Tensor | float, dim: int, bits: float = 8, data_range: float = 2.0) -> Tensor | float:
    """Negative log-density in nats (of data scaled to a range of width `data_range`,
    [−1, 1) by default) → bits/dim in `bits`-bit integer space:

        bpd = nll / (D ln 2) + log2(2^bits / data_range)      (see module docstring).

    The only place the conversion is written. A discretised decoder scores integer bins
    directly: pass data_range = 2^bits (no offset). A standard error converts with no offset too.
    """
    return nll_nats / (dim * LN2) + math.log2(2**bits / data_range)


def dequantize(x: Tensor, generator: torch.Generator | None = None, bits: int = 8) -> Tensor:
    """Uniform dequantisation of images on the `bits`-bit grid x = 2k/(2^b − 1) − 1 (the
    usual ToTensor()·2 − 1 scaling) to x' = 2(k + u)/2^b − 1, u ~ U[0, 1).

    Densities on x' convert to bits/dim with `bits_per_dim` (offset log2(2^b/2) = b − 1).
    """
    levels = 2**bits
    k = torch.round((x.to(torch.float64) + 1) * (levels - 1) / 2).clamp(0, levels - 1)
    off = (x - (2 * k / (levels - 1) - 1)).abs().max() if x.numel() else torch.tensor(0.0)
    if float(off) > 1e-3:
        raise ValueError(
            f"dequantize: data are not on the {bits}-bit grid 2k/{levels - 1} − 1 (off by up to {float(off):.3g}); "
            "pass images scaled from integers, or use nll (nats/dim) instead of bits/dim for continuous data"
        )
    u = torch.rand(x.shape, generator=generator, dtype=torch.float64, device=generator.device if generator is not None else x.device)
    return (2 * (k + u.to(k.device)) / levels - 1).to(x.dtype)


# --------------------------------------------------------------------------- PF-ODE
@dataclass
class OdeLikelihood:
    """Per-example results of `ode_log_likelihood` (nats)."""

    log_prob: Tensor        # log p_{t_min}(x) [B]
    prior_log_prob: Tensor  # log p_{t_max}(z_{t_max}) [B]
    delta: Tensor           # ∫ ∇·v dt [B]
    z_end: Tensor           # z_{t_max}
    nfe: int                # evaluations of the denoiser


def probability_flow_velocity(denoiser, process: Process, z: Tensor, t: Tensor) -> Tensor:
    """v(z, t) = f(z, t) − ½ g(t)² score(z, t) with the denoiser's score
    (`Process.probability_flow_velocity`; Song et al. 2021, Eq. 13)."""
    return process.probability_flow_velocity(z, t, denoiser(z, t).score.to(z.dtype))


def _divergence_exact(v: Tensor, z: Tensor, create_graph: bool = False) -> Tensor:
    """Σ_i ∂v_i/∂z_i by one backward pass per dimension (D passes; small D only)."""
    vf = v.flatten(1)
    div = torch.zeros(z.shape[0], dtype=v.dtype, device=v.device)
    d = vf.shape[1]
    for i in range(d):
        (gi,) = torch.autograd.grad(vf[:, i].sum(), z, retain_graph=True, create_graph=create_graph)
        div = div + gi.flatten(1)[:, i]
    return div


def _divergence_hutchinson(v: Tensor, z: Tensor, probes: Tensor) -> Tensor:
    """Hutchinson: E_ε[ε^T (∂v/∂z) ε] = tr(∂v/∂z) for E[ε ε^T] = I; averaged over the
    probes [P, B, ...] (one vector-Jacobian product each)."""
    total = torch.zeros(z.shape[0], dtype=v.dtype, device=v.device)
    for eps in probes:
        (vjp,) = torch.autograd.grad((v * eps).sum(), z, retain_graph=True)
        total = total + (vjp * eps).flatten(1).sum(1)
    return total / probes.shape[0]


def draw_probes(shape, num_probes: int, kind: str, generator: torch.Generator | None, dtype, device) -> Tensor:
    """Probe vectors [P, *shape] with E[ε ε^T] = I: Rademacher (±1) or standard Gaussian."""
    if kind not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    gdev = generator.device if generator is not None else device
    if kind == "gaussian":
        eps = torch.randn((num_probes, *shape), generator=generator, dtype=dtype, device=gdev)
    else:
        eps = torch.randint(0, 2, (num_probes, *shape), generator=generator, device=gdev).to(dtype) * 2 - 1
    return eps.to(device)


def ode_log_likelihood(
    denoiser,
    process: Process,
    x: Tensor,
    *,
    divergence: str = "hutchinson",
    probe: str = "rademacher",
    num_probes: int = 1,
    generator: torch.Generator | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    method: str = "dopri5",
    exact_max_dim: int = 256,
) -> OdeLikelihood:
    """Exact log-likelihood of the probability-flow ODE, per example (nats), see module
    docstring. `divergence="exact"` is exact up to solver tolerance (rtol, atol); the
    Hutchinson estimate is unbiased for the log-density (one fixed probe per example and
    solve, as in FFJORD / score_sde) and its noise shows up in the standard error over
    examples."""
    from torchdiffeq import odeint

    if divergence not in DIVERGENCES:
        raise ValueError(f"divergence must be one of {DIVERGENCES}, got {divergence!r}")
    d = x[0].numel()
    if divergence == "exact" and d > exact_max_dim:
        raise ValueError(
            f"divergence='exact' needs {d} backward passes per step for D={d} (> exact_max_dim={exact_max_dim}); "
            "use divergence='hutchinson'"
        )
    probes = draw_probes(x.shape, num_probes, probe, generator, x.dtype, x.device) if divergence == "hutchinson" else None
    nfe = 0
    bsz = x.shape[0]

    def rhs(t: Tensor, state: tuple[Tensor, Tensor]):
        nonlocal nfe
        nfe += 1
        z = state[0]
        # the solver's first-step heuristic may probe just past t_max: clamp into the domain
        tb = t.to(z.dtype).clamp(process.t_min, process.t_max).expand(bsz)
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            v = probability_flow_velocity(denoiser, process, z, tb)
            div = _divergence_exact(v, z) if probes is None else _divergence_hutchinson(v, z, probes)
        return v.detach(), div.detach()

    ts = torch.tensor([process.t_min, process.t_max], dtype=x.dtype, device=x.device)
    zero = torch.zeros(bsz, dtype=x.dtype, device=x.device)
    with torch.no_grad():
        zs, deltas = odeint(rhs, (x, zero), ts, rtol=rtol, atol=atol, method=method)
    z_end, delta = zs[-1], deltas[-1]
    prior = process.prior_log_prob(z_end).to(x.dtype)
    return OdeLikelihood(prior + delta, prior, delta, z_end, nfe)


def nll_ode(
    denoiser,
    process: Process,
    x: Tensor,
    *,
    batch_size: int = 4096,
    generator: torch.Generator | None = None,
    on_batch: Callable[[int], None] | None = None,
    **ode_options,
) -> Estimate:
    """−log p(x) by the probability-flow ODE over a data set x [N, ...], in batches:
    the mean per example (nats) and its standard error over examples (which includes the
    Hutchinson noise). `Estimate.per_dim` gives nats/dim. `on_batch(n)`: called after each
    batch of n examples (progress)."""
    vals = []
    for chunk in x.split(batch_size):
        vals.append(-ode_log_likelihood(denoiser, process, chunk, generator=generator, **ode_options).log_prob)
        if on_batch is not None:
            on_batch(chunk.shape[0])
    return estimate_from_values(torch.cat(vals), x[0].numel())


# --------------------------------------------------------------------------- ELBO
DataSource = Tensor | Callable[[int, torch.Generator | None], Tensor]


def _draw_batches(data: DataSource, num_draws: int, batch_size: int, generator):
    """Yield batches of x totalling num_draws: from a sampler `data(n, generator)`, or
    cycling through a fixed tensor (each pass re-uses every example once)."""
    done = 0
    while done < num_draws:
        n = min(batch_size, num_draws - done)
        if callable(data) and not torch.is_tensor(data):
            xb = data(n, generator)
        else:
            idx = torch.arange(done, done + n) % data.shape[0]
            xb = data[idx.to(data.device)]
        done += n
        yield xb


def nll_elbo(
    denoiser,
    process: Process,
    data: DataSource,
    *,
    num_draws: int = 1_000_000,
    batch_size: int = 65_536,
    num_steps: int | None = None,
    generator: torch.Generator | None = None,
    on_batch: Callable[[int], None] | None = None,
    **elbo_options,
) -> Estimate:
    """−ELBO ≥ −log p(x): mean and standard error over `num_draws` independent (x, t, ε)
    draws, each scored by `difflab.losses.continuous_elbo` (VDM; `num_steps=None`) or
    `discrete_elbo` (DDPM with T = num_steps). Nats per example; `.per_dim` for nats/dim,
    `bpd_from_estimate` for bits/dim. Their `time_sampling` defaults apply: λ uniform
    (antithetic) for the continuous ELBO, i uniform for the discrete one.

    `data` is a tensor (cycled through; the standard error is then that of the mean over its
    N examples, from the per-example averages) or a sampler `data(n, generator)` (fresh x
    for every draw, e.g. the oracle's exact samples). Options such as
    time_sampling, decoder and bits are passed through to the loss. `on_batch(n)`: called
    after each batch of n draws (progress).
    """
    from . import losses

    vals = []
    d = None
    with torch.no_grad():
        for xb in _draw_batches(data, num_draws, batch_size, generator):
            d = xb[0].numel()
            if num_steps is None:
                terms = losses.continuous_elbo(denoiser, process, xb, generator=generator, **elbo_options)
            else:
                terms = losses.discrete_elbo(denoiser, process, xb, num_steps, generator=generator, **elbo_options)
            vals.append(terms.total.detach().to(torch.float64).reshape(-1).cpu())
            if on_batch is not None:
                on_batch(xb.shape[0])
    vals = torch.cat(vals)
    est = estimate_from_values(vals, d, keep_values=False)
    if torch.is_tensor(data) and num_draws > data.shape[0]:
        # a fixed data set is cycled: draws of one example share its x, so the standard error
        # comes from the per-example means (N of them), not from num_draws independent draws
        n = data.shape[0]
        idx = torch.arange(vals.numel()) % n
        per_example = torch.zeros(n, dtype=torch.float64).index_add_(0, idx, vals) / torch.bincount(idx, minlength=n)
        est.se = float(per_example.std(unbiased=True) / math.sqrt(n))
    return est


def bpd_from_estimate(est: Estimate, discrete_decoder: bool = False, bits: int = 8) -> tuple[float, float]:
    """(bpd, se) of an estimate (nats per example) on [−1, 1) data in `bits`-bit space, by
    `bits_per_dim`; no offset when the decoder is discretised (it scores integer bins directly)."""
    data_range = 2.0**bits if discrete_decoder else 2.0
    return bits_per_dim(est.mean, est.dim, bits, data_range), bits_per_dim(est.se, est.dim, bits, 2.0**bits)
