"""difflab.studies.overrides: the one codec of a job's override string (Hydra's override_dirname,
`schedule=cosine,weighting=elbo`): join_overrides and split_overrides are each other's inverse,
and job_dirname names a job directory after it."""
import pytest

from difflab.studies.overrides import MAX_DIRNAME, job_dirname, join_overrides, split_overrides

CASES = [
    "schedule=cosine,weighting=elbo",
    "model.ch_mult=[1,2,2],lr=1e-3",
    "data.means=[[0,0],[3,1]],schedule=cosine",
    "sampler.options={eta:0.5,churn:[1,2]},steps=10",
    "optimizer.betas=(0.9,0.999),seed=0",
    "weighting=elbo",
]


@pytest.mark.parametrize("text", CASES)
def test_split_then_join_gives_the_string_back(text):
    parsed = split_overrides(text)
    assert parsed and join_overrides(parsed) == text
    assert job_dirname(text) == text  # short and no '/': the directory is the override string itself


@pytest.mark.parametrize("text", CASES)
def test_join_then_split_gives_the_mapping_back(text):
    parsed = split_overrides(text)
    assert split_overrides(join_overrides(parsed)) == parsed


def test_commas_inside_brackets_stay_in_their_value():
    assert split_overrides("model.ch_mult=[1,2,2],lr=1e-3") == {"model.ch_mult": "[1,2,2]", "lr": "1e-3"}
    assert split_overrides("a=x,y,b=1") == {"a": "x,y", "b": "1"}  # a bare comma: glued to the previous value


def test_not_an_override_string():
    assert split_overrides("7") == {} and split_overrides("") == {} and join_overrides({}) == ""


def test_a_plus_or_tilde_key_reads_as_the_key():
    """`+key=v` (Hydra's append) reads as key: the one place the codec is not an inverse."""
    assert split_overrides("+sampler=ddim,~ema=x") == {"sampler": "ddim", "ema": "x"}


def test_job_dirname_hashes_paths_and_long_names():
    assert job_dirname("data.root=/a/b").startswith("overrides-") and job_dirname("data.root=/a/b") != job_dirname("data.root=/a/c")
    long = ",".join(f"k{i}=v" for i in range(MAX_DIRNAME))
    assert job_dirname(long).startswith("overrides-") and job_dirname(long) == job_dirname(long)
    assert job_dirname("") == ""
