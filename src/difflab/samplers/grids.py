"""Time grids for the samplers: descending times t_max → t_min, `steps + 1` points.

Every grid is a plain function `grid(process, steps, **kw) -> Tensor [steps + 1]` (float64,
strictly decreasing except where the DDPM "leading" spacing repeats t_min). A sampler makes
`steps` moves ts[i] → ts[i+1] and returns the state at ts[-1] = t_min (the last move
injects no noise). Grids are written in α, σ, λ only, never by process type:

- `uniform_t`       — t_i = t_max + i/N (t_min − t_max)  (DDPM/score_sde default).
- `uniform_log_snr` — λ evenly spaced between λ(t_max) and λ(t_min), t = process.t_from_log_snr(λ)
                      (DPM-Solver's "logSNR" spacing; every step removes the same amount of
                      log signal-to-noise ratio, the natural time variable of Kingma et al. 2021).
- `edm`             — Karras et al. (2022) ρ-spacing of the noise level σ̃ = σ/α = e^{−λ/2}:
                      σ̃_i = (σ̃_max^{1/ρ} + i/N (σ̃_min^{1/ρ} − σ̃_max^{1/ρ}))^ρ, ρ = 7.
- `vp_uniform_t`    — σ̃ at uniform times of the linear-β VP SDE (β_min = 0.1, β_max = 20), the "VP"
                      time steps of Karras et al. 2022, Table 1, between the process's own σ̃ ends:
                      the uniform_t grid of ddpm/vp, carried over to every process through σ̃.
- `ddpm_trailing`   — discrete DDPM (needs `process.num_steps` = T): step indices
                      round(T − i T/N), i < N (start at the last training step t = 1), then t_min
                      (diffusers' "trailing" spacing, timesteps k ↔ t = (k + 1)/T).
- `ddpm_leading`    — the original DDPM/DDIM spacing: indices k (T // N) + 1 for k = N−1 … 0, then
                      t_min again (diffusers' "leading" spacing; it never starts at t = 1 and its
                      last move is empty, kept so that step counts match other libraries).
- `tuned:<file>`    — the times in a YAML file written by `difflab-tune-grid` (`evaluation.tuning`):
                      a sampler node `{name, steps, grid: [t_0, …, t_N]}` or a bare list of times.
"""
from __future__ import annotations

import inspect
import math

import torch
from torch import Tensor


def _check(process, steps) -> int:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps}")
    return int(steps)


def _pin_ends(process, ts: Tensor) -> Tensor:
    ts = ts.to(torch.float64).clamp(process.t_min, process.t_max)
    ts[0], ts[-1] = float(process.t_max), float(process.t_min)
    return ts


def uniform_t(process, steps: int) -> Tensor:
    """t_i = t_max + (i/N)(t_min − t_max), i = 0..N."""
    n = _check(process, steps)
    return _pin_ends(process, torch.linspace(process.t_max, process.t_min, n + 1, dtype=torch.float64))


def _end_log_snr(process) -> tuple[float, float]:
    ends = torch.tensor([process.t_max, process.t_min], dtype=torch.float64)
    with torch.no_grad():
        lam = process.log_snr(ends).to(torch.float64)
    return float(lam[0]), float(lam[1])


def uniform_log_snr(process, steps: int) -> Tensor:
    """λ_i evenly spaced from λ(t_max) to λ(t_min); t_i = t(λ_i) by `process.t_from_log_snr`."""
    n = _check(process, steps)
    lam_hi_t, lam_lo_t = _end_log_snr(process)
    lam = torch.linspace(lam_hi_t, lam_lo_t, n + 1, dtype=torch.float64)
    return _pin_ends(process, process.t_from_log_snr(lam).to(torch.float64))


def edm(process, steps: int, rho: float = 7.0) -> Tensor:
    """Karras et al. 2022 (EDM, Eq. 5) ρ-spacing in σ̃ = σ/α = exp(−λ/2), mapped back to t."""
    n = _check(process, steps)
    if not rho > 0:
        raise ValueError(f"edm grid: rho must be > 0, got {rho}")
    lam_max_t, lam_min_t = _end_log_snr(process)
    s_max, s_min = math.exp(-0.5 * lam_max_t), math.exp(-0.5 * lam_min_t)
    i = torch.arange(n + 1, dtype=torch.float64) / n
    s = (s_max ** (1 / rho) + i * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
    return _pin_ends(process, process.t_from_log_snr(-2 * torch.log(s)).to(torch.float64))


def vp_uniform_t(process, steps: int, beta_min: float = 0.1, beta_max: float = 20.0,
                 sigma_max: float | None = None) -> Tensor:
    """Karras et al. 2022, Table 1 (VP): σ̃(τ) = √(exp(½ β_d τ² + β_min τ) − 1), β_d = β_max − β_min, at
    τ uniform between τ(σ̃(t_max)) and τ(σ̃(t_min)), the inverse τ(σ̃) = (√(β_min² + 2 β_d log(1 + σ̃²))
    − β_min)/β_d; mapped back to the process's t by its log-SNR λ = −2 log σ̃. sigma_max (below σ̃(t_max)):
    the first move jumps from t_max to σ̃ = sigma_max and the other `steps` − 1 moves are uniform in τ below it."""
    n = _check(process, steps)
    if not (beta_max > beta_min > 0):
        raise ValueError(f"vp_uniform_t grid: need beta_max > beta_min > 0, got {beta_min}, {beta_max}")
    bd = beta_max - beta_min
    lam_hi, lam_lo = _end_log_snr(process)
    top = math.exp(-lam_hi)  # σ̃² at t_max
    capped = sigma_max is not None and n > 1 and sigma_max**2 < top
    if sigma_max is not None and not sigma_max > math.exp(-0.5 * lam_lo):
        raise ValueError(f"vp_uniform_t grid: sigma_max must exceed σ̃(t_min) = {math.exp(-0.5 * lam_lo):g}, got {sigma_max}")
    ends = torch.tensor([sigma_max**2 if capped else top, math.exp(-lam_lo)], dtype=torch.float64)
    tau = ((beta_min**2 + 2 * bd * torch.log1p(ends)).sqrt() - beta_min) / bd
    tau = torch.linspace(float(tau[0]), float(tau[1]), n if capped else n + 1, dtype=torch.float64)
    lam = -torch.log(torch.expm1(0.5 * bd * tau**2 + beta_min * tau))
    if capped:
        lam = torch.cat([torch.tensor([lam_hi], dtype=torch.float64), lam])
    return _pin_ends(process, process.t_from_log_snr(lam).to(torch.float64))


def _num_train_steps(process, name: str) -> int:
    t_steps = getattr(process, "num_steps", None)
    if t_steps is None:
        raise ValueError(
            f"grid={name} needs a discrete process with num_steps (process=ddpm); "
            f"use grid=uniform_t, uniform_log_snr or edm with {type(process).__name__}"
        )
    return int(t_steps)


def ddpm_trailing(process, steps: int) -> Tensor:
    """Step indices round(T − i T/N) for i < N (t = index/T), then t_min = 1/T."""
    n = _check(process, steps)
    t_steps = _num_train_steps(process, "ddpm_trailing")
    if n > t_steps:
        raise ValueError(f"grid=ddpm_trailing: steps={n} exceeds the process's T={t_steps} training steps; use steps <= {t_steps}")
    idx = torch.round(torch.arange(t_steps, 0, -t_steps / n, dtype=torch.float64))[:n]
    return torch.cat([idx / t_steps, torch.tensor([process.t_min], dtype=torch.float64)])


def ddpm_leading(process, steps: int) -> Tensor:
    """Step indices k (T // N) + 1 for k = N−1 … 0 (t = index/T), then t_min = 1/T."""
    n = _check(process, steps)
    t_steps = _num_train_steps(process, "ddpm_leading")
    if n > t_steps:
        raise ValueError(f"grid=ddpm_leading: steps={n} exceeds the process's T={t_steps} training steps; use steps <= {t_steps}")
    idx = torch.arange(n - 1, -1, -1, dtype=torch.float64) * (t_steps // n) + 1
    return torch.cat([idx / t_steps, torch.tensor([process.t_min], dtype=torch.float64)])


GRIDS = {
    "uniform_t": uniform_t,
    "uniform_log_snr": uniform_log_snr,
    "edm": edm,
    "vp_uniform_t": vp_uniform_t,
    "ddpm_trailing": ddpm_trailing,
    "ddpm_leading": ddpm_leading,
}


TUNED_PREFIX = "tuned:"


def load_tuned(path, steps: int) -> Tensor:
    """The times of a tuned grid file (`tuned:<path>`): the `grid` list of a sampler node, or a bare
    list; refused unless it holds exactly steps + 1 times."""
    import yaml

    try:
        with open(path) as f:
            node = yaml.safe_load(f)
    except OSError as e:
        raise FileNotFoundError(f"grid=tuned:{path}: cannot read the file ({e.strerror}); give a file written by difflab-tune-grid") from None
    except yaml.YAMLError:
        raise ValueError(f"grid=tuned:{path} is not valid YAML; give a file written by difflab-tune-grid") from None
    times = node.get("grid") if isinstance(node, dict) else node
    if not isinstance(times, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in times):
        raise ValueError(f"grid=tuned:{path} holds no list of times (expected `grid: [t_0, ..., t_N]`); give a file written by difflab-tune-grid")
    if len(times) != int(steps) + 1:
        raise ValueError(f"grid=tuned:{path} holds {len(times)} times, a grid for steps={len(times) - 1}, but steps={steps}; "
                         f"set sampler.steps={len(times) - 1} or tune a grid with sampler.steps={steps}")
    return torch.tensor(times, dtype=torch.float64)


def make_grid(process, steps: int, grid="uniform_t", **kwargs) -> Tensor:
    """A grid by name, `<name>@<σ̃_max>` (the grid below a σ̃ cap: `vp_uniform_t@10` is
    `vp_uniform_t` with sigma_max=10), `tuned:<file>` (a tuned grid's YAML, `load_tuned`), a
    callable, or an explicit descending sequence of times."""
    if callable(grid):
        ts = grid(process, steps, **kwargs)
    elif isinstance(grid, str) and grid.startswith(TUNED_PREFIX):
        ts = load_tuned(grid[len(TUNED_PREFIX):], steps)
    elif isinstance(grid, str):
        name, at, cap = grid.partition("@")
        if name not in GRIDS:
            raise ValueError(f"unknown grid {grid!r}; choose one of {sorted(GRIDS)}, <grid>@<sigma_max> or tuned:<file>")
        if at:
            capped = [g for g, fn in GRIDS.items() if "sigma_max" in inspect.signature(fn).parameters]
            if name not in capped:
                raise ValueError(f"grid {grid!r}: only {', '.join(capped)} take a σ̃ cap (@<sigma_max>); use grid={name}")
            try:
                kwargs = {**kwargs, "sigma_max": float(cap)}
            except ValueError:
                raise ValueError(f"grid {grid!r}: the σ̃ cap after @ must be a number, e.g. {name}@10") from None
        ts = GRIDS[name](process, steps, **kwargs)
    else:
        ts = torch.as_tensor(grid, dtype=torch.float64).flatten()
    ts = torch.as_tensor(ts, dtype=torch.float64)
    if ts.numel() < 2:
        raise ValueError(f"a time grid needs at least 2 points (steps >= 1), got {ts.numel()}")
    if bool((ts[1:] > ts[:-1]).any()):
        raise ValueError("a time grid must be non-increasing (from t_max towards t_min)")
    lo, hi = float(ts.min()), float(ts.max())
    if lo < process.t_min - 1e-9 or hi > process.t_max + 1e-9:
        raise ValueError(f"grid times must lie in [t_min, t_max] = [{process.t_min:g}, {process.t_max:g}], got [{lo:g}, {hi:g}]")
    return ts
