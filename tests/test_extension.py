"""docs/architecture.md's promise: a new process, sampler, weighting or metric is one class (or
function) plus one YAML. Here each lives outside difflab (tests/extension/), is found through the
user's own config directory (`hydra.searchpath`) and a `_target_` (the weighting: its dotted path
in `weighting:`) alone, and runs through the real difflab-sample, difflab-train and difflab-eval."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXT = Path(__file__).resolve().parent / "extension"
MIX = ["data.means=[[-2,0],[2,0]]", "data.stds=[0.5,0.5]", "data.weights=[0.3,0.7]"]


TINY = ["data=gmm", "data.num_train=64", "data.num_val=16", "data.batch_size=16", "model.hidden=16", "model.depth=1",
        "trainer=cpu", "trainer.val_check_interval=2", "logger=csv", "callbacks=none", "+trainer.enable_progress_bar=false"]


def run_cli(module, *args, timeout=300):
    """A console script (`python -m difflab.cli.<module>`) with the user's config directory and
    module on the path, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), str(EXT)]), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", f"difflab.cli.{module}", f"hydra.searchpath=[file://{EXT / 'conf'}]", *args],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)


def run_sample(tmp_path, *args):
    return run_cli("sample", "model=oracle", *MIX, *args, "num_samples=2000", f"output={tmp_path}")


@pytest.fixture
def toy_ext(monkeypatch):
    """The user's module, importable in this process too; the parts it registered are removed after."""
    from difflab.evaluation.metrics import METRICS
    from difflab.losses import WEIGHTINGS

    before = {r: r.names() for r in (METRICS, WEIGHTINGS)}
    monkeypatch.syspath_prepend(str(EXT))
    import toy_ext

    yield toy_ext
    for registry, names in before.items():
        for name in set(registry.names()) - set(names):
            registry.unregister(name)


@pytest.mark.slow
def test_user_process_and_sampler_through_target_alone(tmp_path):
    r = run_sample(tmp_path / "a", "process=trig_vp", "sampler=toy_ddim")
    assert r.returncode == 0, r.stderr
    f = np.load(tmp_path / "a" / "samples.npz")
    x, nfe = f["samples"], int(f["nfe"])
    assert x.shape == (2000, 2) and nfe == 40  # one network evaluation per step of the user's sampler
    # the exact denoiser + the user's process and sampler recover the mixture: weight 0.7 on the
    # right (binomial SE 0.01), component spread 0.5
    assert abs((x[:, 0] > 0).mean() - 0.7) < 0.04
    assert abs(x[x[:, 0] > 0, 1].std() - 0.5) < 0.05
    # the user's process with a shipped sampler, and the user's option reaching the function
    assert run_sample(tmp_path / "b", "process=trig_vp", "sampler=dpm_solver", "sampler.steps=20").returncode == 0
    r = run_sample(tmp_path / "c", "process=trig_vp", "sampler=toy_ddim", "sampler.squeeze=0.0")
    assert r.returncode == 0, r.stderr
    squeezed = np.load(tmp_path / "c" / "samples.npz")["samples"]
    assert squeezed[:, 1].std() < 0.5 * x[:, 1].std()  # ε̂ dropped: samples collapse towards the means
    # a misspelled option of the user's sampler: one line, exit 2
    r = run_sample(tmp_path / "d", "process=trig_vp", "sampler=toy_ddim", "+sampler.sqeeze=1")
    assert r.returncode == 2 and "has no option sqeeze" in r.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_user_weighting_trains_through_one_function_and_one_yaml(tmp_path, toy_ext):
    """weighting=toy_sigmoid (tests/extension/conf/weighting/toy_sigmoid.yaml) trains with the
    user's function and the YAML's option bias=2: the trained module's loss on a fixed batch is
    ½ sigmoid(b − λ)(−λ') · (t_max − t_min) · ‖ε − ε̂‖² / D, Kingma & Gao 2023's sigmoid weighting
    estimated at given t (a given t counts as drawn uniformly: 1/p = t_max − t_min)."""
    import torch

    from difflab.lit_module import load_denoiser

    out = tmp_path / "train"
    r = run_cli("train", "experiment=gmm", "weighting=toy_sigmoid", *TINY, "trainer.max_steps=3", f"output={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    loaded = load_denoiser(out / "checkpoints" / "last.ckpt", use_ema=False)
    assert loaded.global_step == 3
    loss_fn, den, proc = loaded.module.loss_fn, loaded.denoiser, loaded.process
    assert loss_fn.weighting == "toy_ext.sigmoid_weighting" and loss_fn.weighting_options["bias"] == 2.0
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(64, 2, generator=g), torch.randn(64, 2, generator=g)
    t = torch.linspace(proc.t_min, proc.t_max, 64)
    loss = loss_fn.loss(den, x, t=t, noise=eps)
    with torch.no_grad():
        alpha, sigma = proc.alpha_sigma(t)
        eps_hat = den(alpha[:, None] * x + sigma[:, None] * eps, t).eps
        lam, dlam = proc.log_snr(t), proc.dlog_snr_dt(t)
        closed = 0.5 * torch.sigmoid(2.0 - lam) * -dlam * (proc.t_max - proc.t_min) * ((eps - eps_hat) ** 2).sum(1) / 2
    torch.testing.assert_close(loss.detach(), closed.float(), rtol=1e-5, atol=1e-7)
    # a misspelled option of the user's weighting: one line, exit 2, naming it
    r = run_cli("train", "experiment=gmm", "weighting=toy_sigmoid", "+weighting.bais=1", *TINY, "trainer.max_steps=1",
                f"output={tmp_path / 'bad'}")
    assert r.returncode == 2 and "has no option weighting.bais" in r.stderr.strip().splitlines()[-1], r.stderr[-2000:]


def test_user_metric_through_one_function_and_one_yaml(tmp_path, toy_ext):
    """metric/toy_radius.yaml (`_target_: toy_ext.mean_radius`, kind, option scale=2) in the
    user's config directory is registered by `discover_metrics` and scored by `evaluate` beside the
    built-in ones: its value is the function's on the samples evaluated."""
    import torch

    from difflab.evaluation import SamplerChoice, evaluate, from_exact_model
    from difflab.evaluation.metrics import METRICS, SAMPLE_METRICS, discover_metrics
    from difflab.models import GMMOracle
    from difflab.parameterizations import Epsilon
    from difflab.processes import VPSDE

    assert discover_metrics([EXT / "conf"]) == ["toy_radius"]
    assert "toy_radius" in METRICS and "toy_radius" in SAMPLE_METRICS
    target = from_exact_model(GMMOracle([[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5], [0.3, 0.7]), VPSDE(), Epsilon(), {}, (2,))
    sampler = SamplerChoice.from_config({"name": "ddim", "steps": 10})
    out, samples = evaluate(target, ["swd", "toy_radius"], sampling=dict(num_samples=256, num_reference=256, sampler=sampler))
    assert out["toy_radius"] == pytest.approx(2.0 * float(samples.double().norm(dim=1).mean()), rel=1e-12)
    assert "swd" in out  # the built-in metrics alongside
    with pytest.raises(ValueError, match="unknown metrics .*choose from .*toy_radius"):
        evaluate(target, ["toy_radiuss"])


@pytest.mark.slow
def test_user_metric_through_difflab_eval(tmp_path, toy_ext):
    """difflab-eval metrics=[swd,toy_radius]: metrics.json holds the user's metric, equal to the
    function's value on the samples.npz it scored."""
    out = tmp_path / "eval"
    r = run_cli("evaluate", "model=oracle", *MIX, "metrics=[swd,toy_radius]", "num_samples=256", "num_reference=256",
                f"output={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    value = json.loads((out / "metrics.json").read_text())["toy_radius"]
    x = np.load(out / "samples.npz")["samples"].astype(np.float64)
    assert value == pytest.approx(2.0 * np.linalg.norm(x, axis=1).mean(), rel=1e-9)


def test_registered_user_weighting_is_a_name_like_the_built_in_ones(toy_ext):
    """`register_weighting` gives a user's function a short name: it joins WEIGHTINGS (and the
    list an unknown name is refused with), and DiffusionLoss takes it and its options by name."""
    import torch

    from difflab.losses import WEIGHTINGS, DiffusionLoss, register_weighting, weighting_factor
    from difflab.parameterizations import Epsilon
    from difflab.processes import VPSDE

    register_weighting("toy_sigmoid_fn")(toy_ext.sigmoid_weighting)
    assert WEIGHTINGS[-1] == "toy_sigmoid_fn" and "edm" in WEIGHTINGS
    loss = DiffusionLoss(VPSDE(), Epsilon(), weighting="toy_sigmoid_fn", bias=1.0)
    assert loss.weighting_options["bias"] == 1.0 and "bias=1" in repr(loss)
    lam, dlam = torch.linspace(-5, 5, 11), -torch.ones(11)
    torch.testing.assert_close(weighting_factor("toy_sigmoid_fn", lam, dlam, 1.0, bias=1.0), 0.5 * torch.sigmoid(1.0 - lam))
    with pytest.raises(ValueError, match="weighting must be one of .*'toy_sigmoid_fn'.*got 'nope'"):
        DiffusionLoss(VPSDE(), Epsilon(), weighting="nope")
    with pytest.raises(ValueError, match=r"has no option weighting.bais .*; it takes .*, bias$"):
        DiffusionLoss(VPSDE(), Epsilon(), weighting="toy_sigmoid_fn", bais=1.0)


def test_eval_callback_takes_a_users_metric_by_dotted_path(toy_ext):
    """EvalCallback(metrics=[..., "toy_ext.mean_radius"]): the path registers the user's function
    before the callback checks its metric names (it was refused as unknown)."""
    from difflab.callbacks.eval import EvalCallback

    cb = EvalCallback(metrics=["swd", "toy_ext.mean_radius"], num_samples=16)
    assert cb.metrics == ("swd", "toy_ext.mean_radius")
    with pytest.raises(ValueError, match="unknown metrics"):
        EvalCallback(metrics=["toy_ext.no_such_metric"], num_samples=16)
