"""Time grids fitted to a model: the K-step grid of a deterministic sampler that brings its output
closest to a many-step solution of the probability-flow ODE from the same prior noise.

Objective (the global-error form of LD3, Tong et al. 2024, Eq. 6, without their slack ball; GITS,
Chen et al. 2024, and "Align Your Steps", Sabour et al. 2024, optimise local errors or a KL bound
instead):

    L(t_0 … t_K) = (1/n) Σ_i (1/D) ‖Φ_K(x_T^(i); t_0 … t_K) − Φ_ref(x_T^(i))‖²,

Φ_K the sampler on the grid, Φ_ref a fine solve (default: Heun, 256 steps on the EDM grid) of the
same ODE from the same x_T ~ prior. The ends t_0 = t_max and t_K = t_min stay fixed. The samplers
compute their coefficients in float64 Python numbers, so L is minimised without gradients: a
compass search (Kolda, Lewis & Torczon 2003) over the interior points in λ = log SNR, point j
moved to λ_{j−1} + f (λ_{j+1} − λ_{j−1}) with logit f ± s_j, which keeps the grid monotone;
s_j grows ×1.5 on success and halves when neither side helps. It starts at the sampler's default
grid and accepts only improvements, so the tuned grid is never worse on the tuning noise; judge
it on other noise (`grid_error` with `prior_noise(..., seed=other)`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

from ..progress import Progress
from ..samplers.core import SAMPLERS, check_sampler, sample, sampler_spec
from ..samplers.grids import _pin_ends, make_grid
from .seeding import SEED_CHUNK, chunk_generator, num_chunks

REFERENCE = ("ode_heun", 256, "edm")  # sampler, steps, grid of the reference solve


@dataclass
class TunedGrid:
    """The result of `tune_grid`: the tuned times, the start grid, and L on the tuning noise."""

    ts: Tensor
    initial_ts: Tensor
    loss: float
    initial_loss: float
    evals: int
    sampler: str
    steps: int
    options: dict = field(default_factory=dict)

    def sampler_node(self) -> dict:
        """A `sampler` config node that uses this grid (what `save` writes)."""
        return {"name": self.sampler, "steps": self.steps, "grid": [float(t) for t in self.ts], **self.options}


def prior_noise(process, data_shape, n: int, seed: int, device=None, dtype=torch.float32) -> Tensor:
    """n draws x_T of the prior, row i the one `difflab-sample seed=<seed>` starts sample i from
    (the 32-sample seeding chunks of `evaluation.seeding`)."""
    gens = [chunk_generator(seed, c, device) for c in range(num_chunks(n))]
    return torch.cat([process.prior_sample((SEED_CHUNK, *data_shape), generator=g, device=device, dtype=dtype) for g in gens])[:n]


def solve(denoiser, process, x_T: Tensor, sampler, steps: int, grid, options: dict | None = None, batch_size: int = 4096) -> Tensor:
    """The deterministic sampler run from x_T (in batches), no generator."""
    out = [sample(denoiser, process, tuple(x.shape), sampler, steps, x_T=x, grid=grid, **(options or {})).samples
           for x in x_T.split(batch_size)]
    return torch.cat(out)


def grid_error(denoiser, process, sampler, ts: Tensor, x_T: Tensor, reference: Tensor, options: dict | None = None) -> float:
    """L: the mean over samples of ‖Φ_K(x_T) − reference‖² / D (see the module docstring)."""
    x = solve(denoiser, process, x_T, sampler, len(ts) - 1, ts, options)
    err = (x.double() - reference.double()).pow(2).flatten(1).mean(1).mean()
    return float(err) if torch.isfinite(err) else math.inf


def check_deterministic(denoiser, process, sampler, steps: int, x_T: Tensor, options: dict) -> None:
    """Refuse a sampler whose output depends on drawn noise (its grid has no single target) or whose
    step count is adaptive."""
    name = _name(sampler)
    spec = sampler_spec(sampler)
    if spec.nfe_per_step is None and any(spec is s for s in SAMPLERS.values()):  # a user's function: unknown, so allowed
        raise ValueError(f"sampler {name} chooses its own steps; tune a fixed-step sampler (ddim, ode_euler, ode_heun, dpm_solver, unipc)")
    x = x_T[:4]
    runs = [sample(denoiser, process, tuple(x.shape), sampler, steps, x_T=x, generator=torch.Generator(x.device).manual_seed(s),
                   **options).samples for s in (1, 2)]
    if not torch.equal(*runs):
        raise ValueError(f"sampler {name} draws noise, so no one grid fits it; tune a deterministic one "
                         "(ddim with eta=0, ode_euler, ode_heun, dpm_solver, dpm_solver_3m, unipc)")


def _move(lam: Tensor, j: int, step: float) -> Tensor:
    """λ with interior point j moved by `step` in the logit of its place between its neighbours."""
    lo, hi = float(lam[j - 1]), float(lam[j + 1])
    f = min(max((float(lam[j]) - lo) / (hi - lo), 1e-9), 1 - 1e-9) if hi > lo else 0.5
    new = lam.clone()
    new[j] = lo + (hi - lo) / (1 + math.exp(-(math.log(f / (1 - f)) + step)))
    return new


def compass_search(loss: Callable[[Tensor], float], lam: Tensor, max_evals: int, step: float = 0.5, min_step: float = 1e-3,
                   callback: Callable[[int, float], None] | None = None) -> tuple[Tensor, float, float, int]:
    """Minimise loss(λ) over the interior points of λ (ends fixed) by compass search;
    → (λ, its loss, the loss at the start, evals)."""
    best, evals = loss(lam), 1
    first = best
    steps = [step] * len(lam)
    if callback:
        callback(evals, best)
    while evals < max_evals and max(steps[1:-1], default=0.0) >= min_step:
        for j in range(1, len(lam) - 1):
            if steps[j] < min_step:
                continue
            for sign in (1, -1):
                if evals >= max_evals:
                    break
                trial = _move(lam, j, sign * steps[j])
                val = loss(trial)
                evals += 1
                if callback:
                    callback(evals, min(best, val))
                if val < best:
                    lam, best = trial, val
                    steps[j] *= 1.5
                    break
            else:
                steps[j] *= 0.5
    return lam, best, first, evals


def tune_grid(denoiser, process, sampler, steps: int, data_shape, *, n: int = 256, seed: int = 0, grid=None,
              options: dict | None = None, reference: tuple = REFERENCE, max_evals: int = 400, device=None,
              callback: Callable[[int, float], None] | None = None, progress: bool | None = None) -> TunedGrid:
    """Fit the `steps`-step grid of a deterministic `sampler` to `denoiser` (module docstring).

    n, seed: the tuning noise (`prior_noise`). grid: the start (default: the sampler's own).
    reference: (sampler, steps, grid) of the many-step solve, computed once. max_evals: sampler
    runs on the n draws (each `steps` NFE, or 2·steps for Heun). callback(evals, best loss).
    progress: lines on stderr for the reference solve and the search once they run past a few
    seconds (`difflab.progress`; False: none).
    """
    options = dict(options or {})
    check_sampler(sampler, steps, options)
    if int(n) < 1 or int(max_evals) < 1:
        raise ValueError(f"n and max_evals must be >= 1, got n={n}, max_evals={max_evals}")
    x_T = prior_noise(process, tuple(data_shape), int(n), int(seed), device)
    check_deterministic(denoiser, process, sampler, steps, x_T, options)
    ref_sampler, ref_steps, ref_grid = reference
    with Progress(f"reference solve: {ref_sampler}, {ref_steps} steps", enabled=progress):
        x_ref = solve(denoiser, process, x_T, ref_sampler, int(ref_steps), ref_grid)
    if not torch.isfinite(x_ref).all():
        raise ValueError(f"the reference solve ({ref_sampler}, {ref_steps} steps) is not finite; give a reference with more steps")
    start = make_grid(process, int(steps), sampler_spec(sampler).default_grid if grid is None else grid)
    with torch.no_grad():
        lam0 = process.log_snr(start).to(torch.float64).cpu()

    def to_times(lam: Tensor) -> Tensor:
        return start if torch.equal(lam, lam0) else _pin_ends(process, process.t_from_log_snr(lam).to(torch.float64))

    def loss(lam: Tensor) -> float:
        return grid_error(denoiser, process, sampler, to_times(lam), x_T, x_ref, options)

    with Progress(f"tuning {_name(sampler)}, {steps} steps", int(max_evals), "runs", enabled=progress) as bar:
        def seen(evals: int, best: float) -> None:
            bar.set(evals)
            bar.note = f"distance {best:.3g}"
            if callback is not None:
                callback(evals, best)

        lam, best, first, evals = compass_search(loss, lam0, int(max_evals), callback=seen)
    return TunedGrid(to_times(lam), start, best, first, evals, _name(sampler), int(steps), options)


def _name(sampler) -> str:
    return sampler if isinstance(sampler, str) else getattr(sampler, "__name__", str(sampler))


def save(tuned: TunedGrid, path, comment: str = "") -> None:
    """Write the tuned grid as a `sampler` config node (YAML; usable as a conf/sampler/ option, and
    as `sampler.grid=tuned:<path>`), times in full float64 precision, `comment` as header lines."""
    import yaml

    from ..utils import write_text

    head = "".join(f"# {line}\n" for line in comment.strip().splitlines()) if comment.strip() else ""
    text = head + yaml.safe_dump(tuned.sampler_node(), sort_keys=False, default_flow_style=None)
    write_text(path, text)  # atomic: a reader sees the old grid or the new one
