"""Tuned time grids (`difflab.evaluation.tuning`, `grid="tuned:<file>"`, `difflab-tune-grid`).

Theory: with the exact GMM oracle the probability-flow ODE maps the prior onto the mixture exactly,
so Φ_ref (a fine solve) is an exact sample from the same noise, and W₂(law Φ_K, mixture) ≤
√(E‖Φ_K − Φ_ref‖²) + W₂(law Φ_ref, mixture). A grid that brings the K-step output closer to Φ_ref on
noise it was not tuned on must therefore also bring the samples closer to the mixture; both are
checked against the sampler's default grid. The compass search itself is checked on a quadratic
whose minimiser is known."""
import math

import pytest
import torch

from difflab.models import GMMOracle
from difflab.processes import VESDE, VPSDE
from difflab.evaluation import tuning
from difflab.samplers import grids, sample

ORACLE = GMMOracle([[-2.0, 0.0, 1.0], [2.0, 0.5, -1.0], [0.0, 2.5, 0.0], [0.5, -2.0, 1.5], [-1.0, -1.0, -2.0]],
                   [0.4, 0.3, 0.5, 0.35, 0.45], [0.3, 0.25, 0.2, 0.15, 0.1])


def mixture_gap(x: torch.Tensor, ref_stats) -> float:
    """Total variation of the component weights (each point to its most likely component) plus
    Σ_k w_k |spread_k − spread_k^exact|, spread_k the RMS distance to μ_k over s_k √D."""
    def stats(y):
        y = y.double()
        k = ORACLE.responsibilities(y, 1.0, 0.0).argmax(1)
        counts = torch.bincount(k, minlength=ORACLE.num_components).double()
        d2 = (y - ORACLE.means[k]).pow(2).sum(1) / (ORACLE.stds[k] ** 2 * ORACLE.dim)
        spread = torch.zeros(ORACLE.num_components, dtype=torch.float64).index_add_(0, k, d2)
        return counts / len(y), (spread / counts.clamp_min(1)).sqrt()

    w, s = stats(x)
    return float(0.5 * (w - ref_stats[0]).abs().sum() + (ref_stats[0] * (s - ref_stats[1]).abs()).sum())


def test_compass_search_finds_the_minimiser_of_a_quadratic():
    target = torch.tensor([0.0, 0.7, 1.3, 4.0, 4.5, 10.0], dtype=torch.float64)  # increasing, ends = the start's ends
    start = torch.linspace(0.0, 10.0, 6, dtype=torch.float64)
    seen = []
    lam, best, first, evals = tuning.compass_search(lambda v: float((v - target).pow(2).sum()), start, 2000, min_step=1e-6,
                                                    callback=lambda e, b: seen.append(b))
    assert first == float((start - target).pow(2).sum()) and evals <= 2000
    assert torch.allclose(lam, target, atol=1e-4), lam
    assert lam[0] == 0.0 and lam[-1] == 10.0 and bool((lam[1:] > lam[:-1]).all())
    assert all(b2 <= b1 for b1, b2 in zip(seen, seen[1:])) and len(seen) == evals


@pytest.fixture(scope="module")
def exact_stats():
    x = ORACLE.sample(200_000, generator=torch.Generator().manual_seed(5)).double()
    k = ORACLE.responsibilities(x, 1.0, 0.0).argmax(1)
    counts = torch.bincount(k, minlength=ORACLE.num_components).double()
    d2 = (x - ORACLE.means[k]).pow(2).sum(1) / (ORACLE.stds[k] ** 2 * ORACLE.dim)
    spread = torch.zeros(ORACLE.num_components, dtype=torch.float64).index_add_(0, k, d2)
    return counts / len(x), (spread / counts).sqrt()


@pytest.mark.parametrize("process_name,sampler,steps", [("vp", "ddim", 10), ("vp", "dpm_solver", 5), ("ve", "ode_euler", 10)])
def test_tuned_grid_beats_the_default_on_held_out_noise(exact_stats, process_name, sampler, steps):
    torch.set_num_threads(1)
    process = {"vp": VPSDE(), "ve": VESDE()}[process_name]
    den = ORACLE.denoiser(process)
    tuned = tuning.tune_grid(den, process, sampler, steps, (3,), n=256, seed=0, max_evals=150)
    ts = tuned.ts
    assert ts.shape == (steps + 1,) and ts[0] == process.t_max and ts[-1] == process.t_min
    assert bool((ts[1:] < ts[:-1]).all())
    assert torch.equal(tuned.initial_ts, grids.make_grid(process, steps, tuning.sampler_spec(sampler).default_grid))
    # the reported losses are the grid errors on the tuning noise, recomputed here independently
    # (that the search improved on its start holds by construction and proves nothing)
    x_tune = tuning.prior_noise(process, (3,), 256, seed=0)
    ref_tune = tuning.solve(den, process, x_tune, *tuning.REFERENCE)
    assert math.isclose(tuned.initial_loss, tuning.grid_error(den, process, sampler, tuned.initial_ts, x_tune, ref_tune), rel_tol=1e-6)
    assert math.isclose(tuned.loss, tuning.grid_error(den, process, sampler, ts, x_tune, ref_tune), rel_tol=1e-6)

    x_held = tuning.prior_noise(process, (3,), 4096, seed=1)
    ref = tuning.solve(den, process, x_held, *tuning.REFERENCE)
    err_default = tuning.grid_error(den, process, sampler, tuned.initial_ts, x_held, ref)
    err_tuned = tuning.grid_error(den, process, sampler, ts, x_held, ref)
    assert err_tuned < 0.75 * err_default, (err_default, err_tuned)

    gap_default = mixture_gap(tuning.solve(den, process, x_held, sampler, steps, tuned.initial_ts), exact_stats)
    gap_tuned = mixture_gap(tuning.solve(den, process, x_held, sampler, steps, ts), exact_stats)
    gap_ref = mixture_gap(ref, exact_stats)
    assert gap_tuned < 0.8 * gap_default, (gap_default, gap_tuned, gap_ref)


def test_saved_grid_round_trips_through_tuned_prefix(tmp_path):
    process = VPSDE()
    den = ORACLE.denoiser(process)
    tuned = tuning.tune_grid(den, process, "dpm_solver", 4, (3,), n=64, max_evals=20)
    path = tmp_path / "grid.yaml"
    tuning.save(tuned, path, "a comment\nover two lines")
    assert path.read_text().startswith("# a comment\n# over two lines\n")
    assert torch.equal(grids.make_grid(process, 4, f"tuned:{path}"), tuned.ts)
    x_T = tuning.prior_noise(process, (3,), 64, seed=3)
    a = sample(den, process, (64, 3), "dpm_solver", 4, x_T=x_T, grid=f"tuned:{path}").samples
    b = sample(den, process, (64, 3), "dpm_solver", 4, x_T=x_T, grid=tuned.ts).samples
    assert torch.equal(a, b)


@pytest.mark.parametrize("text,msg", [
    ("grid: [1.0, 0.5, 0.001]\n", "holds 3 times, a grid for steps=2, but steps=4"),
    ("name: ddim\nsteps: 4\n", "holds no list of times"),
    ("grid: [1.0, oops]\n", "holds no list of times"),
    ("grid: [1.0, 0.5\n", "is not valid YAML"),
])
def test_bad_tuned_grid_file_is_refused_in_one_line(tmp_path, text, msg):
    path = tmp_path / "g.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        grids.make_grid(VPSDE(), 4, f"tuned:{path}")
    assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="cannot read"):
        grids.make_grid(VPSDE(), 4, f"tuned:{tmp_path / 'missing.yaml'}")


@pytest.mark.parametrize("sampler,options,msg", [("ddim", {"eta": 1.0}, "draws noise"), ("ancestral", {}, "draws noise"),
                                                 ("ode_rk45", {}, "chooses its own steps")])
def test_stochastic_or_adaptive_sampler_is_refused(sampler, options, msg):
    process = VPSDE()
    with pytest.raises(ValueError, match=msg):
        tuning.tune_grid(ORACLE.denoiser(process), process, sampler, 4, (3,), n=8, max_evals=2, options=options)


def test_prior_noise_is_difflab_sample_s_noise():
    """Row i of prior_noise(seed) is the x_T that sample i of `difflab-sample seed=<seed>` starts from."""
    from difflab.evaluation import SamplerChoice, draw_samples

    process = VPSDE()
    den = ORACLE.denoiser(process)
    drawn, _ = draw_samples(den, process, (3,), 40, 7, SamplerChoice("ddim", 3))
    x_T = tuning.prior_noise(process, (3,), 40, 7)
    assert torch.allclose(drawn, tuning.solve(den, process, x_T, "ddim", 3, None), atol=1e-6)
    assert not math.isclose(float(x_T.std()), 0.0)


def test_a_user_sampler_function_can_be_tuned():
    """The extension path (`sampler._target_: my_pkg.my_sampler`): a deterministic user function is tuned too."""
    from difflab.samplers import ode_euler

    def my_euler(model, process, x, ts, callback=None, generator=None):
        return ode_euler(model, process, x, ts, callback, generator)

    process = VPSDE()
    tuned = tuning.tune_grid(ORACLE.denoiser(process), process, my_euler, 4, (3,), n=32, max_evals=30)
    assert tuned.sampler == "my_euler" and tuned.loss < tuned.initial_loss
