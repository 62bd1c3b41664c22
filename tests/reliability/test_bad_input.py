"""Bad input through the real CLIs: exit 2, one line naming the fix, nothing written (no
config.yaml, .hydra/, log file, lock or empty directory), never a traceback, never a silent
wrong run, and an earlier result is never overwritten."""
import pytest

from .conftest import TINY, error_line, run_main, snapshot

pytestmark = pytest.mark.slow

CASES = [
    # unknown option or experiment
    ("train", ["experiment=gmn"], "Could not find 'experiment/gmn'"),
    ("train", ["experiment=nope"], "Available options in 'experiment': ddpm_cifar10, digits, edm_cifar10, edm_gmm, flow_gmm, gmm"),
    ("train", ["process=foo"], "process/foo"),
    ("train", ["model=transformer"], "model/transformer"),
    ("train", ["weighting=elbow"], "weighting/elbow"),
    ("sample", ["model=oracle", "sampler=nope"], "sampler/nope"),
    ("sample", ["model=oracle", "process=vpp"], "process/vpp"),
    ("eval", ["metrics=[nll_ode,fidd]"], "unknown metrics ['fidd']"),
    # misspelled key
    ("train", ["trainer.max_step=10"], "did you mean trainer.max_steps?"),
    ("train", ["optim.lrr=1"], "did you mean optim.lr?"),
    ("sample", ["model=oracle", "sampler.stepz=3"], "did you mean sampler.steps?"),
    ("sample", ["model=oracle", "+sampler.temperature=2"], "has no option temperature"),
    ("eval", ["mc_sample=10"], "did you mean mc_samples?"),
    # a key added with + (or ++) that nothing reads: Hydra's own advice for a key not in the config
    ("train", ["max_steps=100"], "is not in struct; did you mean trainer.max_steps?"),  # and not Hydra's "+max_steps"
    ("train", ["+max_steps=100"], "nothing reads max_steps; did you mean trainer.max_steps=100?"),
    ("train", ["++max_steps=100"], "nothing reads max_steps; did you mean trainer.max_steps=100?"),
    ("train", ["+ema.decy=0.9"], "nothing reads ema.decy; did you mean ema.decay=0.9?"),
    ("train", ["+lr=0.1"], "nothing reads lr; did you mean optim.lr=0.1?"),
    ("eval", ["+evaluation.num_samples=8"], "nothing reads evaluation.num_samples; did you mean num_samples=8?"),
    # wrong type
    ("train", ["trainer.max_steps=abc"], "trainer.max_steps=abc: expected an integer"),
    ("train", ["optim.lr=abc"], "optim.lr=abc: expected a number"),
    ("train", ["ema.warmup=maybe"], "ema.warmup=maybe: expected true or false"),
    ("train", ["checkpoint_every=1.5"], "checkpoint_every=1.5: expected an integer"),
    ("sample", ["model=oracle", "sampler.steps=abc"], "sampler.steps=abc: expected an integer"),
    ("sample", ["model=oracle", "num_samples=many"], "num_samples=many: expected an integer"),
    ("eval", ["mc_samples=lots"], "mc_samples=lots: expected an integer"),
    # out-of-range numbers
    ("train", ["checkpoint_every=-10"], "checkpoint_every must be >= 0"),
    ("train", ["ema.decay=1.5"], "ema.decay must be in [0, 1)"),
    ("sample", ["model=oracle", "sampler.steps=0"], "steps must be an integer >= 1"),
    ("sample", ["model=oracle", "num_samples=0"], "num_samples must be >= 1"),
    ("sample", ["model=oracle", "batch_size=-4"], "batch_size must be >= 1"),
    ("sample", ["model=oracle", "sampler=ddim", "sampler.eta=2"], "eta must lie in [0, 1]"),
    ("eval", ["mc_samples=1"], "mc_samples must be >= 2"),
    ("eval", ["num_samples=1", "metrics=[swd]"], "num_samples must be >= 2"),
    # shapes and options that do not fit together
    ("train", ["experiment=gmm", "model=unet_tiny"], "UNet has no option model.hidden"),
    ("train", ["data=digits", "model.dim=2"], "does not fit data of shape (1, 8, 8)"),
    ("train", ["data=gmm", "data.means=[[0,0,0],[1,1,1]]", "data.stds=[1,1]", "data.weights=[1,1]"], "data.dim=3"),
    ("sample", ["model=oracle", "data=digits"], "could not build model"),
    ("sample", ["model=mlp"], "is an untrained network"),
    ("sample", ["model=oracle", "+data.shape=[3]"], "has 3 entries but the model has 2 dims"),
    ("eval", ["metrics=[bpd_ode]", "num_eval=8"], "8-bit image data"),
    ("train", ["experiment=gmm", "data.means=[[nan,0],[1,1]]", "data.stds=[1,1]", "data.weights=[1,1]"], "means must be finite"),
    # missing data or checkpoint
    ("train", ["data=cifar10", "data.root=/nonexistent/cifar"], "data.root=/nonexistent/cifar"),
    ("train", ["ckpt_path=/nonexistent.ckpt"], "ckpt_path=/nonexistent.ckpt does not exist"),
    ("train", ["resume=/nonexistent/run"], "does not exist"),
    ("sample", ["ckpt_path=/nonexistent.ckpt"], "does not exist"),
    ("eval", ["ckpt_path=/nonexistent.ckpt"], "does not exist"),
    ("eval", ["samples=/nonexistent/samples.npz", "metrics=[swd]"], "no samples.npz there"),
]


@pytest.mark.parametrize("prog,args,expect", CASES, ids=[f"{p}:{' '.join(a)}" for p, a, _ in CASES])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, monkeypatch, prog, args, expect):
    out = tmp_path / "out"
    code, err = run_main(prog, [*args, f"output={out}", "threads=1"], capsys, monkeypatch)
    lines = error_line(err)
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith(f"difflab-{prog}: error: "), err[-2000:]
    assert expect in lines[0], lines[0]
    assert "To append to your config" not in lines[0]  # Hydra's advice adds a key nothing reads
    assert "Traceback" not in err
    assert not out.exists(), sorted(p.name for p in out.rglob("*"))


EXISTING = [("sample", "samples.npz", ["model=oracle"]), ("eval", "metrics.json", ["metrics=[swd]"]), ("train", "config.yaml", TINY)]


@pytest.mark.parametrize("prog,result,args", EXISTING, ids=[e[0] for e in EXISTING])
def test_existing_results_are_never_overwritten(tmp_path, capsys, monkeypatch, prog, result, args):
    out = tmp_path / "out"
    out.mkdir()
    (out / result).write_bytes(b"an earlier result\n")
    before = snapshot(out)
    code, err = run_main(prog, [*args, f"output={out}", "threads=1"], capsys, monkeypatch)
    assert code == 2 and len(error_line(err)) == 1, err[-2000:]
    assert "overwrite=true" in err or "already holds a training run" in err
    assert snapshot(out) == before


def test_overwrite_true_replaces_a_sample_result(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["model=oracle", "num_samples=32", "sampler.steps=2", f"output={out}"]
    assert run_main("sample", args, capsys, monkeypatch)[0] == 0
    first = (out / "samples.npz").read_bytes()
    assert run_main("sample", [*args, "seed=1"], capsys, monkeypatch)[0] == 2
    assert (out / "samples.npz").read_bytes() == first
    code, err = run_main("sample", [*args, "seed=1", "overwrite=true"], capsys, monkeypatch)
    assert code == 0, err
    assert (out / "samples.npz").read_bytes() != first  # seed 1's samples replaced seed 0's
