"""The GMM oracle: a Gaussian mixture whose noised marginals, posterior mean and score are exact.

p(x) = Σ_k w_k N(x; μ_k, s_k² I). Under z_t = α x + σ ε each component stays Gaussian,

    z_t | k ~ N(α μ_k, v_k I),   v_k = α² s_k² + σ²,
    E[x | z_t, k] = μ_k + (α s_k² / v_k)(z_t − α μ_k),
    ∇ log p_t(z) = Σ_k r_k(z) · (α μ_k − z)/v_k,   r_k = posterior responsibility,

so E[x | z_t] = Σ_k r_k E[x | z_t, k] is the Bayes-optimal denoiser for *any* process
(only α and σ enter). Samplers and likelihood estimates are tested against it.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from ..parameterizations import Epsilon, Parameterization, Prediction, input_scale_of
from ..processes.base import Process


def _as_tensor(v, name: str) -> Tensor:
    try:
        t = torch.as_tensor(v, dtype=torch.float64)
    except Exception as e:  # ragged lists from the command line
        raise ValueError(f"GMMOracle: {name} must be a rectangular list of numbers ({e})") from None
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"GMMOracle: {name} must be finite numbers, got {t.tolist()}")
    return t


class GMMOracle(nn.Module):
    """Isotropic Gaussian mixture with exact log-density, sampling and posterior quantities.

    means [K, D], stds [K] (> 0), weights [K] (≥ 0, normalised to sum to 1).
    Inputs may be [N, D] or [N, *shape] with prod(shape) = D (mixtures over images).
    """

    def __init__(self, means: Sequence, stds: Sequence, weights: Sequence | None = None):
        super().__init__()
        means, stds = _as_tensor(means, "means"), _as_tensor(stds, "stds")
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2:
            raise ValueError(f"GMMOracle: means must be K x D, got shape {tuple(means.shape)}")
        k = means.shape[0]
        stds = stds.reshape(-1)
        if stds.numel() == 1 and k > 1:
            stds = stds.expand(k).clone()
        weights = torch.full((k,), 1.0 / k, dtype=torch.float64) if weights is None else _as_tensor(weights, "weights").reshape(-1)
        if stds.shape[0] != k or weights.shape[0] != k:
            raise ValueError(
                f"GMMOracle: means has K={k} rows, but stds has {stds.shape[0]} and weights "
                f"{weights.shape[0]} entries; give one std and one weight per component"
            )
        if not bool((stds > 0).all()):
            raise ValueError(f"GMMOracle: every std must be > 0, got {stds.tolist()}")
        if bool((weights < 0).any()) or not float(weights.sum()) > 0:
            raise ValueError(f"GMMOracle: weights must be >= 0 with a positive sum, got {weights.tolist()}")
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("weights", weights / weights.sum())

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    # ------------------------------------------------------------------ helpers
    def _flat(self, x: Tensor) -> Tensor:
        if x[0].numel() != self.dim:
            raise ValueError(f"GMMOracle: expected points with {self.dim} features, got shape {tuple(x.shape)}")
        return x.reshape(x.shape[0], self.dim).to(torch.float64)

    @staticmethod
    def _col(v, n: int, device) -> Tensor:
        v = torch.as_tensor(v, dtype=torch.float64, device=device).reshape(-1)
        return v.expand(n) if v.numel() == 1 else v

    def _params(self, device) -> tuple[Tensor, Tensor, Tensor]:
        """(means, stds, weights) on `device`: the oracle answers on the device of its input,
        wherever its own buffers live (a no-op when they already match)."""
        return self.means.to(device), self.stds.to(device), self.weights.to(device)

    def _component_terms(self, z: Tensor, alpha, sigma) -> tuple[Tensor, Tensor, Tensor]:
        """log w_k + log N(z; α μ_k, v_k I) → [N, K], plus α [N] and v [N, K]."""
        n = z.shape[0]
        means, stds, weights = self._params(z.device)
        a = self._col(alpha, n, z.device)
        s = self._col(sigma, n, z.device)
        v = a[:, None] ** 2 * stds[None] ** 2 + s[:, None] ** 2  # [N, K]
        diff2 = (z.pow(2).sum(1)[:, None] - 2 * a[:, None] * (z @ means.T)
                 + a[:, None] ** 2 * means.pow(2).sum(1)[None])  # ‖z − α μ_k‖²
        logn = -0.5 * diff2 / v - 0.5 * self.dim * torch.log(2 * math.pi * v)
        return weights.log()[None] + logn, a, v

    # ------------------------------------------------------------------ densities
    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log p(x), per example [N] (nats)."""
        return self.noisy_log_prob(x, 1.0, 0.0).to(torch.promote_types(x.dtype, torch.float32))

    def noisy_log_prob(self, z: Tensor, alpha, sigma) -> Tensor:
        """Exact log p_t(z) of the noised marginal, for given α, σ (scalars or [N])."""
        terms, _, _ = self._component_terms(self._flat(z), alpha, sigma)
        return torch.logsumexp(terms, dim=1)

    def nll(self, dim_normalised: bool = True, num_samples: int = 200_000, seed: int = 0) -> tuple[float, float]:
        """Monte Carlo entropy E_p[−log p(x)] (nats, per dim by default) and its standard error."""
        g = torch.Generator().manual_seed(seed)
        lp = self.log_prob(self.sample(num_samples, generator=g).double())
        scale = self.dim if dim_normalised else 1
        return float(-lp.mean() / scale), float(lp.std() / math.sqrt(num_samples) / scale)

    def sample(self, n: int, generator: torch.Generator | None = None, return_labels: bool = False):
        """n draws of p(x) (float32, on the oracle's device). The draws are made on the
        generator's device, so a CPU generator with a given seed gives the same points
        whether the oracle lives on the CPU or on a GPU."""
        dev = self.means.device
        gen_dev = generator.device if generator is not None else dev
        means, stds, weights = self._params(gen_dev)
        k = torch.multinomial(weights, n, replacement=True, generator=generator)
        x = means[k] + stds[k, None] * torch.randn(n, self.dim, dtype=torch.float64, generator=generator, device=gen_dev)
        x, k = x.float().to(dev), k.to(dev)
        return (x, k) if return_labels else x

    # ------------------------------------------------------------------ posterior
    def responsibilities(self, z: Tensor, alpha, sigma) -> Tensor:
        terms, _, _ = self._component_terms(self._flat(z), alpha, sigma)
        return torch.softmax(terms, dim=1)

    def posterior_mean(self, z: Tensor, alpha, sigma) -> Tensor:
        """E[x | z_t] = Σ_k r_k (μ_k + α s_k²/v_k (z − α μ_k)), same shape as z."""
        zf = self._flat(z)
        terms, a, v = self._component_terms(zf, alpha, sigma)
        r = torch.softmax(terms, dim=1)
        means, stds, _ = self._params(zf.device)
        gain = a[:, None] * stds[None] ** 2 / v  # [N, K]
        # Σ_k r_k μ_k (1 − α gain_k) + (Σ_k r_k gain_k) z
        mean = (r * (1 - a[:, None] * gain)) @ means + (r * gain).sum(1, keepdim=True) * zf
        return mean.reshape(z.shape).to(torch.promote_types(z.dtype, torch.float32))

    def score(self, z: Tensor, alpha, sigma) -> Tensor:
        """∇_z log p_t(z) = Σ_k r_k (α μ_k − z)/v_k, same shape as z."""
        zf = self._flat(z)
        terms, a, v = self._component_terms(zf, alpha, sigma)
        r = torch.softmax(terms, dim=1)
        s = (r / v * a[:, None]) @ self._params(zf.device)[0] - (r / v).sum(1, keepdim=True) * zf
        return s.reshape(z.shape).to(torch.promote_types(z.dtype, torch.float32))

    def prediction(self, z: Tensor, t: Tensor, process: Process) -> Prediction:
        """Exact Prediction(x0, eps, score) at time t for `process`."""
        alpha, sigma = process.alpha_sigma(torch.as_tensor(t, dtype=torch.float64, device=z.device).expand(z.shape[0]))
        x0 = self.posterior_mean(z, alpha, sigma)
        shape = (-1,) + (1,) * (z.ndim - 1)
        a, s = alpha.reshape(shape).to(x0.dtype), sigma.reshape(shape).to(x0.dtype)
        eps = (z.to(x0.dtype) - a * x0) / s
        return Prediction(x0=x0, eps=eps, score=-eps / s)

    # ------------------------------------------------------------------ as a model
    def as_model(self, process: Process, parameterization: Parameterization | None = None) -> "OracleModel":
        """An nn.Module `model(z, t)` whose output is the Bayes-optimal raw prediction for
        `parameterization`; use with `Denoiser(..., conditioning="t")`."""
        return OracleModel(self, process, parameterization or Epsilon())

    def denoiser(self, process: Process, parameterization: Parameterization | None = None):
        from ..denoiser import Denoiser

        p = parameterization or Epsilon()
        return Denoiser(self.as_model(process, p), process, p, conditioning="t")


class OracleModel(nn.Module):
    """The oracle in the shape of a network: forward(z, t) → raw output of the parameterization."""

    def __init__(self, oracle: GMMOracle, process: Process, parameterization: Parameterization):
        super().__init__()
        self.oracle, self.process, self.parameterization = oracle, process, parameterization

    def forward(self, z: Tensor, t: Tensor) -> Tensor:
        t64 = t.to(torch.float64)
        alpha, sigma = self.process.alpha_sigma(t64)
        shape = (-1,) + (1,) * (z.ndim - 1)
        scale = input_scale_of(self.parameterization, alpha, sigma)
        if scale is not None:  # the Denoiser fed the network c_in-scaled input (EDM): undo it
            z = (z.to(torch.float64) / scale.reshape(shape)).to(z.dtype)
        pred = self.oracle.prediction(z.to(torch.float64), t64, self.process)
        out = self.parameterization.output_from(pred, z.to(torch.float64), alpha.reshape(shape), sigma.reshape(shape))
        return out.to(z.dtype)
