"""Exponential integrators of the probability-flow ODE (and of the reverse SDE) in the half
log-SNR  h-variable  λ̂ = λ/2 = −log σ̃, written for x̃ = z/α, where the linear part is exact:

    x̃_s = (σ̃_s/σ̃_t) x̃_t + σ̃_s ∫ e^{λ̂} x̂ dλ̂   (Lu et al. 2022, DPM-Solver++, Eq. 9 divided by α_s).

DPM-Solver++ 2M / 3M (Lu et al. 2022, Alg. 2; the 3M and SDE forms of k-diffusion, Karras et al.
2022's codebase) and UniPC (Zhao et al. 2023, UniPC-bh2 with data prediction). Same signature as
the other samplers; x̃ and σ̃ come from α and σ only, so each works for every process.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from ._util import GridConstants, randn_like, report


def _check_eta(name: str, eta: float) -> None:
    if not (math.isfinite(eta) and eta >= 0):
        raise ValueError(f"{name}: eta must be >= 0 (0 = ODE, 1 = the reverse SDE), got {eta}")


def _dpmpp(model, process, x: Tensor, ts: Tensor, callback, generator, order: int, eta: float,
           lower_order_final: bool) -> Tensor:
    """DPM-Solver++ multistep of `order` 1–3 in x̃ = z/α, h = λ̂_s − λ̂_t. With eta > 0 the SDE form
    (Lu et al. 2022b, DPM-Solver++(2M) SDE; k-diffusion's `sample_dpmpp_{2m,3m}_sde`): the linear
    part decays by e^{−h(1+η)} and fresh noise σ̃_s √(1 − e^{−2ηh}) ξ enters (none at the last move).
    Order 2 uses the midpoint correction ½(1 − e^{−h}) (x̂_t − x̂_prev)/r (Alg. 2); order 3 uses
    φ₂ = (e^{−h} − 1)/h + 1, φ₃ = φ₂/h − ½ on the divided differences of the last three x̂.
    lower_order_final: with fewer than 15 steps, the last moves drop to order n − i (diffusers)."""
    c = GridConstants.of(process, ts)
    n, sig = len(ts) - 1, c.sigma_tilde
    x = x / c.alpha[0]
    hist: list = []  # (x̂, h) of the previous moves, most recent first
    for i in range(n):
        denoised = model(c.alpha[i] * x, c.t[i]).x0
        h = 0.5 * (c.log_snr[i + 1] - c.log_snr[i])
        k = min(order, 1 + len(hist), n - i if lower_order_final and n < 15 else order)
        if h > 0:
            he = h * (1 + eta)
            phi1 = -math.expm1(-he)
            x = math.exp(-he) * x + phi1 * denoised
            if k >= 2:
                d1_0 = (denoised - hist[0][0]) * (h / hist[0][1])
                phi2 = 1 - phi1 / he
                if k == 3:
                    r0, r1 = hist[0][1] / h, hist[1][1] / h
                    d1_1 = (hist[0][0] - hist[1][0]) / r1
                    d1 = d1_0 + (d1_0 - d1_1) * r0 / (r0 + r1)
                    x = x + phi2 * d1 - (phi2 / he - 0.5) * (d1_0 - d1_1) / (r0 + r1)
                else:
                    x = x + (0.5 * phi1 if order == 2 else phi2) * d1_0
            if eta > 0 and i < n - 1:
                x = x + sig[i + 1] * math.sqrt(-math.expm1(-2 * eta * h)) * randn_like(x, generator)
            hist = [(denoised, h)] + hist[:1]
        else:  # a repeated grid time (ddpm_leading's last move): nothing to integrate
            hist = []
        report(callback, i, c.t[i], c.t[i + 1], c.alpha[i + 1] * x, denoised)
    return c.alpha[-1] * x


def dpm_solver(model, process, x: Tensor, ts: Tensor, callback=None, generator=None,
               lower_order_final: bool = True) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), data-prediction multistep in λ = log SNR:
    h = λ̂_s − λ̂_t, r = h_prev/h, D = (1 + 1/(2r)) x̂_t − (1/(2r)) x̂_prev,
    z_s = (σ_s/σ_t) z_t − α_s (e^{−h} − 1) D; first order (DDIM) at the first move. NFE = steps."""
    return _dpmpp(model, process, x, ts, callback, generator, 2, 0.0, lower_order_final)


def dpm_solver_3m(model, process, x: Tensor, ts: Tensor, callback=None, generator=None,
                  lower_order_final: bool = True) -> Tensor:
    """DPM-Solver++(3M): third-order multistep in λ (Lu et al. 2022, Sec. 4 / App. B; k-diffusion's
    `sample_dpmpp_3m_sde` at η = 0). NFE = steps."""
    return _dpmpp(model, process, x, ts, callback, generator, 3, 0.0, lower_order_final)


def dpm_solver_sde(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, eta: float = 1.0,
                   lower_order_final: bool = True) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022b; k-diffusion's `sample_dpmpp_2m_sde`, midpoint): η = 1 is
    the reverse SDE, η = 0 the ODE solver `dpm_solver`. NFE = steps."""
    _check_eta("dpm_solver_sde", eta)
    return _dpmpp(model, process, x, ts, callback, generator, 2, eta, lower_order_final)


def dpm_solver_3m_sde(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, eta: float = 1.0,
                      lower_order_final: bool = True) -> Tensor:
    """DPM-Solver++(3M) SDE (k-diffusion's `sample_dpmpp_3m_sde`). NFE = steps."""
    _check_eta("dpm_solver_3m_sde", eta)
    return _dpmpp(model, process, x, ts, callback, generator, 3, eta, lower_order_final)


def _unipc_rhos(rks: list, hh: float, corrector: bool) -> list:
    """UniPC's coefficients ρ (Zhao et al. 2023, Alg. 2–3, B(h) = e^{hh} − 1, "bh2"): solve
    R ρ = b with R_{ij} = r_j^{i}, b_i = i! φ_{i+1}(hh) hh / B(h). The predictor of order p uses the
    first p − 1 rows and columns (ρ = ½ for p = 2); the corrector all p (ρ = ½ for p = 1)."""
    p = len(rks) + 1
    if p == (1 if corrector else 2):
        return [0.5]
    if p == 1:  # first-order predictor: no correction term
        return []
    rk = list(rks) + [1.0]
    b_h, h_phi_k, fact, rows, b = math.expm1(hh), math.expm1(hh) / hh - 1, 1, [], []
    for i in range(1, p + 1):
        rows.append([r ** (i - 1) for r in rk])
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1 / fact
    m = p if corrector else p - 1
    R, bb = torch.tensor(rows, dtype=torch.float64)[:m, :m], torch.tensor(b, dtype=torch.float64)[:m]
    return torch.linalg.solve(R, bb).tolist()


def _uni_update(x: Tensor, hist: list, lam: list, sig: list, s: int, t: int, model_t: Tensor | None) -> Tensor:
    """One UniP step (model_t None) or UniC correction from ts[s] to ts[t], in x̃: hist holds
    (x̂_j, j), most recent first, hist[0] at ts[s]."""
    h = lam[t] - lam[s]
    if h == 0:
        return x
    m0 = hist[0][0]
    rks = [(lam[j] - lam[s]) / h for _, j in hist[1:]]
    rhos = _unipc_rhos(rks, -h, corrector=model_t is not None)
    res = sum(r * (m - m0) / rk for r, rk, (m, _) in zip(rhos, rks, hist[1:]))
    if model_t is not None:
        res = res + rhos[-1] * (model_t - m0)
    b_h = math.expm1(-h)
    return (sig[t] / sig[s]) * x - b_h * m0 - b_h * res


def unipc(model, process, x: Tensor, ts: Tensor, callback=None, generator=None, order: int = 3,
          lower_order_final: bool = True) -> Tensor:
    """UniPC (Zhao et al. 2023): the UniP-p multistep predictor in λ on x̂, then, once the next
    x̂ has been evaluated, the UniC corrector on the same point (no extra NFE). Data prediction,
    B(h) = e^{−h} − 1 ("bh2"), orders warm up from 1; lower_order_final: order ≤ steps left
    (diffusers' `UniPCMultistepScheduler`). Default order 3: the best of orders 2 and 3 at 10–20 NFE in
    bench/sampler_quality.py. NFE = steps."""
    if int(order) != order or not 1 <= order <= 4:
        raise ValueError(f"unipc: order must be an integer in 1..4, got {order}")
    c = GridConstants.of(process, ts)
    n, sig, lam = len(ts) - 1, c.sigma_tilde, [0.5 * v for v in c.log_snr]
    x = x / c.alpha[0]
    hist: list = []
    x_last, p = None, 0
    for i in range(n):
        denoised = model(c.alpha[i] * x, c.t[i]).x0
        if x_last is not None:
            x = _uni_update(x_last, hist[:p], lam, sig, i - 1, i, denoised)
        hist = [(denoised, i)] + hist[: int(order) - 1]
        p = min(int(order), len(hist), n - i if lower_order_final else int(order))
        x_last = x
        x = _uni_update(x, hist[:p], lam, sig, i, i + 1, None)
        report(callback, i, c.t[i], c.t[i + 1], c.alpha[i + 1] * x, denoised)
    return c.alpha[-1] * x
