"""Sweeps: a grid whose jobs would repeat (a group nobody reads) or cannot be built is refused
before any job; each job's directory is named after its overrides (Hydra compose API, no training)."""
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from difflab.cli.common import CONFIG_DIR, UsageError
from difflab.cli.sweep_check import check_sweep, check_sweep_argv
from difflab.studies.sweeps import multirun_overrides


def test_a_sweep_over_a_group_the_config_does_not_read_is_refused():
    # difflab-train reads its sampler group only to evaluate (eval_at_end or callbacks=eval)
    with pytest.raises(UsageError, match=r"sampler is not read.*drop sampler from the sweep"):
        check_sweep("train", ["experiment=gmm", "sampler=ddim,pc"])
    assert check_sweep("train", ["experiment=gmm", "sampler=ddim,pc", "eval_at_end=[swd]"]) == 2


def test_a_schedule_sweep_builds_distinct_processes():
    assert check_sweep("train", ["experiment=gmm", "schedule=linear,cosine"]) == 2


def test_a_job_whose_process_cannot_be_built_is_refused_naming_the_fix():
    with pytest.raises(UsageError, match=r"job process=ddpm,schedule=learned: .*process=continuous_snr"):
        check_sweep("train", ["process=ddpm", "schedule=linear,learned"])


def test_an_unknown_option_is_one_line():
    with pytest.raises(UsageError, match=r"Could not find 'process/typo'.*continuous_snr") as e:
        check_sweep("train", ["process=typo,vp"])
    assert "\n" not in str(e.value)


def test_argv_entry_exits_2_under_multirun_only(capsys):
    check_sweep_argv("train", "difflab-train", ["sampler=ddim,pc"])  # no -m: nothing to check
    check_sweep_argv("train", "difflab-train", ["-m", "--cfg", "job", "sampler=ddim,pc"])  # prints only
    with pytest.raises(SystemExit) as e:
        check_sweep_argv("train", "difflab-train", ["-m", "experiment=gmm", "sampler=ddim,pc"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("difflab-train: error: the sweep repeats a job") and "\n" not in err
    assert multirun_overrides(["--multirun", "--config-name", "x", "a=1,2", "hydra/launcher=slurm"]) == (
        True, ["a=1,2", "hydra/launcher=slurm"], "x", None)


def test_job_directories_are_named_after_their_overrides():
    """hydra.sweep.subdir = the job's overrides sorted by key, without output and paths."""
    job = ["output=/tmp/sweep", "weighting=elbo", "schedule=cosine", "data=mnist", "data.root=/x/y", "seed=3"]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=job, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    assert cfg.hydra.sweep.dir == "/tmp/sweep"
    assert cfg.hydra.sweep.subdir == "data=mnist,schedule=cosine,seed=3,weighting=elbo"


def subdirs(argv):
    """Each job's hydra.sweep.subdir for `difflab-train <argv>`, as the -m run composes it."""
    from difflab.cli.sweep_check import checked_jobs
    from difflab.studies.sweeps import multirun_overrides

    dirname = check_sweep_argv("train", "difflab-train", argv)
    jobs = checked_jobs("train", multirun_overrides(argv)[1])
    hydra = [o for o in argv if o.startswith("hydra")]
    names = []
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        for job in jobs:
            cfg = compose("train", overrides=[*job, *hydra, *([dirname] if dirname else [])], return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            names.append(cfg.hydra.sweep.subdir)
    return names


def test_job_directories_name_only_the_swept_overrides():
    argv = ["-m", "experiment=gmm", "process=continuous_snr", "schedule=linear,cosine", "weighting=elbo,simple",
            "output=runs/study", "hydra/launcher=basic", "+trainer.enable_progress_bar=false"]
    assert sorted(subdirs(argv)) == ["schedule=cosine,weighting=elbo", "schedule=cosine,weighting=simple",
                                     "schedule=linear,weighting=elbo", "schedule=linear,weighting=simple"]
    # nothing swept: the one job writes into output itself; a command line that names them keeps its names
    assert subdirs(["-m", "experiment=gmm", "seed=3", "output=runs/one"]) == [""]
    own = ["-m", "experiment=gmm", "seed=1,2", "hydra.job.config.override_dirname.exclude_keys=[output]"]
    assert check_sweep_argv("train", "difflab-train", own) is None
    assert sorted(subdirs(own)) == ["experiment=gmm,seed=1", "experiment=gmm,seed=2"]


def test_a_long_or_path_job_name_becomes_a_hash():
    from difflab.studies.overrides import job_dirname

    long = ",".join(f"data.means=[[{i},0],[3,{i}]]" for i in range(20))
    names = [job_dirname(n) for n in (long, long + "x", "data.root=/a/b", "data.root=/a/c")]
    assert len(set(names)) == 4 and all(n.startswith("overrides-") and "/" not in n and len(n) < 64 for n in names)
    assert job_dirname(long) == job_dirname(long)  # a rerun finds the same directory
    assert job_dirname("schedule=cosine,weighting=elbo") == "schedule=cosine,weighting=elbo"
