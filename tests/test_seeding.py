"""One seeding rule everywhere (difflab.evaluation.seeding): sample i depends only on (seed, i).

The same `seed` and sampler give identical samples from difflab-sample, from difflab-eval (the
samples it scores) and from the EvalCallback, with 1 or 2 processes (ddp_spawn, gloo) and with
any batch size."""
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from difflab.callbacks.eval import EvalCallback
from difflab.evaluation import SEED_CHUNK, SamplerChoice, chunk_generator, draw_samples, rank_chunks

ROOT = Path(__file__).resolve().parents[1]
SAMPLER = ["sampler=ancestral", "sampler.steps=10"]  # stochastic: noise at every step, not only the prior draw
N, SEED = 100, 3


def compose(config: str, *overrides):
    from hydra import compose as _compose, initialize_config_dir

    from difflab.cli.common import CONFIG_DIR

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return _compose(config, overrides=list(overrides))


def oracle_target():
    from difflab.evaluation import build_target

    cfg = compose("sample", "process=vp", *SAMPLER)
    return build_target(cfg, torch.device("cpu")), SamplerChoice.from_config(cfg.sampler)


def run_cli(module: str, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"), HYDRA_FULL_ERROR="0", OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def test_chunk_generators_depend_on_seed_and_chunk_only():
    a = torch.randn(4, generator=chunk_generator(0, 5))
    assert torch.equal(a, torch.randn(4, generator=chunk_generator(0, 5)))
    assert not torch.equal(a, torch.randn(4, generator=chunk_generator(0, 6)))
    assert not torch.equal(a, torch.randn(4, generator=chunk_generator(1, 5)))
    # each chunk belongs to exactly one rank, whatever the number of ranks
    for world in (1, 2, 3, 8):
        owned = sorted(c for r in range(world) for c in rank_chunks(1000, r, world))
        assert owned == list(range(-(-1000 // SEED_CHUNK)))


def test_batch_size_ranks_and_num_samples_never_change_sample_i():
    t, s = oracle_target()
    ref, nfe = draw_samples(t.denoiser, t.process, t.data_shape, N, SEED, s, batch_size=32)
    assert ref.shape == (N, 2) and nfe == 10
    for bs in (64, 96, 1024):
        assert torch.equal(draw_samples(t.denoiser, t.process, t.data_shape, N, SEED, s, batch_size=bs)[0], ref), bs
    # two ranks, each its own chunks, put back in chunk order
    r0, _ = draw_samples(t.denoiser, t.process, t.data_shape, N, SEED, s, rank=0, world=2, batch_size=64)
    r1, _ = draw_samples(t.denoiser, t.process, t.data_shape, N, SEED, s, rank=1, world=2, batch_size=64)
    chunks = {c: x for r, xs in ((0, r0), (1, r1)) for c, x in zip(rank_chunks(N, r, 2), xs.split(SEED_CHUNK))}
    assert torch.equal(torch.cat([chunks[c] for c in sorted(chunks)])[:N], ref)
    # more samples: the first N are the same ones
    more, _ = draw_samples(t.denoiser, t.process, t.data_shape, 3 * N, SEED, s, batch_size=256)
    assert torch.equal(more[:N], ref)
    other, _ = draw_samples(t.denoiser, t.process, t.data_shape, N, SEED + 1, s)
    assert not torch.allclose(other, ref)


class OracleModule(L.LightningModule):
    """The training module's interface (`.denoiser(use_ema)`, `.process`) around the exact
    denoiser of the same config difflab-sample builds for model=oracle process=vp."""

    def __init__(self):
        super().__init__()
        self.target, _ = oracle_target()
        self.process = self.target.process
        self.w = nn.Parameter(torch.zeros(2))

    def denoiser(self, use_ema: bool = True):
        return self.target.denoiser

    def training_step(self, batch, batch_idx):
        return ((self.w - batch[0]) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def train_dataloader(self):
        return DataLoader(TensorDataset(torch.zeros(8, 2)), batch_size=4)


class SaveSamples(EvalCallback):
    """The EvalCallback, saving the samples it scored from rank 0 (the workers of ddp_spawn
    return nothing to the test process)."""

    def __init__(self, path, **kwargs):
        super().__init__(**kwargs)
        self.path = path

    def evaluate(self, trainer, pl_module):
        out = super().evaluate(trainer, pl_module)
        if trainer.is_global_zero:
            np.save(self.path, self.last_samples.numpy())
        return out


def saving_callback(path: Path):
    cfg = compose("train", "callbacks=eval", "output=unused", *SAMPLER, f"seed={SEED}")
    from hydra.utils import instantiate

    spec = dict(instantiate(cfg.callbacks.eval, _partial_=True).keywords)
    spec.update(num_samples=N, batch_size=64, metrics=["swd"], real_data=torch.randn(N, 2))
    return SaveSamples(path, **spec)


@pytest.mark.slow
def test_sample_eval_and_callback_draw_identical_samples(tmp_path):
    run_cli("difflab.cli.sample", "model=oracle", "process=vp", *SAMPLER, f"num_samples={N}", f"seed={SEED}", "batch_size=32", f"output={tmp_path / 's'}")
    sampled = np.load(tmp_path / "s" / "samples.npz")["samples"]
    run_cli("difflab.cli.evaluate", "process=vp", *SAMPLER, f"num_samples={N}", f"seed={SEED}", "batch_size=1024", "metrics=[swd]",
            "threads=1", f"output={tmp_path / 'e'}")
    scored = np.load(tmp_path / "e" / "samples.npz")["samples"]
    assert sampled.shape == (N, 2) and np.array_equal(sampled, scored)

    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        out = tmp_path / f"cb{devices}.npy"
        trainer = L.Trainer(callbacks=[saving_callback(out)], max_epochs=1, accelerator="cpu", devices=devices, strategy=strategy,
                            logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                            default_root_dir=tmp_path)
        trainer.fit(OracleModule())
        assert np.array_equal(np.load(out).reshape(sampled.shape), sampled), f"EvalCallback with {devices} process(es)"


def test_auto_sampling_batch_is_small_for_images_on_a_cpu_and_large_elsewhere():
    """batch_size=auto: ~65k input values per batch on a CPU (large batches of images page-fault
    their activations afresh), whole 32-sample chunks, 1024 on an accelerator."""
    from difflab.evaluation.sampling import resolve_batch_size

    assert resolve_batch_size("auto", (1, 28, 28), "cpu") == 64
    assert resolve_batch_size("auto", (3, 32, 32), "cpu") == 32
    assert resolve_batch_size("auto", (2,), "cpu") == resolve_batch_size("auto", (64,), "cpu") == 1024
    assert resolve_batch_size("auto", (3, 32, 32), "meta") == 1024
    assert resolve_batch_size(100, (1, 28, 28), "cpu") == 100
    with pytest.raises(ValueError, match="auto"):
        resolve_batch_size(0, (2,), "cpu")


def test_evaluate_leaves_the_global_rng_alone():
    """evaluate() draws from generators seeded by its `seed`; the caller's global RNG state is the
    same after it, and the metrics do not depend on that state."""
    import torch

    from difflab.evaluation import evaluate, from_exact_model
    from difflab.models import GMMOracle
    from difflab.parameterizations import Epsilon
    from difflab.processes import VPSDE

    def run():
        target = from_exact_model(GMMOracle([[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5]), VPSDE(), Epsilon(), {}, (2,))
        return evaluate(target, ["swd"], seed=3, sampling={"num_samples": 64, "sampler": None})[0]

    torch.manual_seed(123)
    before = torch.get_rng_state()
    first = run()
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(999)
    assert run()["swd"] == first["swd"]
