"""difflab-eval's `samples=` finds a sweep's job directory whatever the order or quoting of its k=v
overrides (`samples=runs/nfe/sampler=ddim,sampler.steps=10` names the directory that Hydra
wrote as `sampler.steps=10,sampler=ddim`)."""
import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from difflab.cli.common import CONFIG_DIR, UsageError
from difflab.scoring import find_job_dir, job_pairs, load_samples


def _job(sweep, name, n=8, nfe=10):
    d = sweep / name
    d.mkdir(parents=True)
    np.savez(d / "samples.npz", samples=np.full((n, 2), float(n), dtype=np.float32), nfe=nfe)
    return d


def test_job_pairs_is_a_set_of_unquoted_pairs():
    assert job_pairs("sampler=ddim,sampler.steps=10") == job_pairs("sampler.steps=10,sampler=ddim") \
        == {("sampler", "ddim"), ("sampler.steps", "10")}
    assert job_pairs("sampler='ddim',sampler.steps=\"10\"") == job_pairs("sampler=ddim,sampler.steps=10")
    # commas inside brackets and quotes belong to the value; '+' of an appended key is no part of the key
    assert job_pairs("eval_at_end=[nll_elbo,swd],+x='a,b'") == {("eval_at_end", "[nll_elbo,swd]"), ("x", "a,b")}
    assert job_pairs("samples") is None and job_pairs("a=1,b") is None and job_pairs("=1") is None
    assert job_pairs("a=1,b=2") != job_pairs("a=1,b=3")


def test_a_reordered_job_directory_is_found(tmp_path):
    sweep = tmp_path / "nfe"
    job = _job(sweep, "sampler.steps=10,sampler=ddim")
    _job(sweep, "sampler.steps=20,sampler=ddim", n=4)
    _job(sweep, "sampler.steps=10,sampler=dpm_solver", n=6)
    assert find_job_dir(sweep / "sampler=ddim,sampler.steps=10") == job
    assert find_job_dir(sweep / "sampler.steps=10,sampler=ddim") == job  # as written: itself
    assert find_job_dir(sweep / "sampler=ddim,sampler.steps=10" / "samples.npz") == job / "samples.npz"
    samples, nfe = load_samples(sweep / "sampler=ddim,sampler.steps=10")
    assert samples.shape == (8, 2) and nfe == 10
    samples, _ = load_samples(f"{sweep}/sampler='dpm_solver',sampler.steps=10/samples.npz")  # quoted value, the file
    assert samples.shape == (6, 2)
    samples, _ = load_samples(f'"{sweep}/sampler=ddim,sampler.steps=20"')  # the whole path in quotes
    assert samples.shape == (4, 2)


def test_a_job_directory_that_is_not_there_names_those_that_are(tmp_path):
    sweep = tmp_path / "nfe"
    _job(sweep, "sampler.steps=10,sampler=ddim")
    with pytest.raises(FileNotFoundError, match=r"no samples.npz there.*job directories of .*nfe: sampler.steps=10,sampler=ddim"):
        load_samples(sweep / "sampler=ddim,sampler.steps=50")
    with pytest.raises(FileNotFoundError, match="no samples.npz there"):  # no sweep at all: the plain message
        load_samples(tmp_path / "nowhere" / "sampler=ddim")
    assert find_job_dir(tmp_path / "plain") == tmp_path / "plain"  # not a k=v name: left to the caller


def test_two_directories_with_the_same_overrides_are_refused(tmp_path):
    sweep = tmp_path / "nfe"
    _job(sweep, "a=1,b=2")
    _job(sweep, "b=2,a='1'")
    with pytest.raises(UsageError, match="2 job directories hold these overrides"):
        find_job_dir(sweep / "b=2,a=\"1\"")


def test_the_quoted_command_line_form_reaches_samples_whole():
    """`'samples="runs/nfe/sampler=ddim,sampler.steps=10"'` (the README's form) composes to the path as
    written; unquoted, Hydra's grammar refuses the '=' of the job directory's name."""
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("eval", overrides=['samples="runs/nfe/sampler=ddim,sampler.steps=10"'])
        assert cfg.samples == "runs/nfe/sampler=ddim,sampler.steps=10"
        with pytest.raises(Exception, match="mismatched input '='"):
            compose("eval", overrides=["samples=runs/nfe/sampler=ddim,sampler.steps=10"])
