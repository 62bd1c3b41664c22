"""Through the whole platform (Hydra config → DiffusionModule → Lightning Trainer →
EMA denoiser → sampler): the CPU recipes `experiment=edm_gmm` (EDM's preconditioning, loss weight and
log-normal noise levels, Karras et al. 2022) and `experiment=flow_gmm` (rectified flow / flow matching,
Lipman et al. 2023) each train on the 2-D mixture of data=gmm in about a minute on one core and sample
it within 2× of the sliced Wasserstein distance that the exact GMM oracle reaches on the same process
with the same sampler and NFE (the recipe's own: EDM's Heun on the ρ = 7 grid).

Both sides are averaged over 3 prior seeds × 4 reference sets of 4096 exact samples (one set's distance
is heavy-tailed); an untrained network is far outside the bound (checked below), so the test cannot
pass by chance."""
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from difflab.cli.common import CONFIG_DIR
from difflab.cli.train import train
from difflab.metrics.distances import sliced_wasserstein
from difflab.models import GMMOracle
from difflab.samplers import sample

pytestmark = pytest.mark.slow

N, SEEDS = 4096, (1, 2, 3)


def compose_train(*overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


@pytest.mark.parametrize("recipe", ["edm_gmm", "flow_gmm"])
def test_cpu_recipe_samples_within_2x_of_the_oracle(recipe, tmp_path):
    torch.set_num_threads(1)
    cfg = compose_train(f"experiment={recipe}", f"output={tmp_path / 'run'}", "logger=none", "callbacks=none",
                        "+trainer.enable_progress_bar=false", "trainer.enable_model_summary=false")
    oracle = GMMOracle(cfg.data.means, cfg.data.stds, cfg.data.weights)
    refs = [oracle.sample(N, generator=torch.Generator().manual_seed(1000 + k)) for k in range(4)]

    def distance(den, process):
        vals = []
        for s in SEEDS:
            with torch.no_grad():
                x = sample(den, process, (N, 2), cfg.sampler.name, cfg.sampler.steps, grid=cfg.sampler.grid,
                           generator=torch.Generator().manual_seed(s)).samples
            vals += [sliced_wasserstein(x, r, 128, torch.Generator().manual_seed(7)) for r in refs]
        return sum(vals) / len(vals)

    module, trainer, _ = train(cfg, tmp_path / "run")
    assert trainer.global_step == cfg.trainer.max_steps
    den = module.denoiser(use_ema=True).cpu()
    process = den.process
    model_d, exact_d = distance(den, process), distance(oracle.denoiser(process), process)
    print(f"\n{recipe}: SWD model {model_d:.4f}, oracle {exact_d:.4f} ({cfg.sampler.name}, {cfg.sampler.steps} steps)")
    assert model_d <= 2 * exact_d, f"{recipe}: SWD {model_d:.4f} > 2 x oracle's {exact_d:.4f}"
    untrained = module.denoiser(use_ema=False).cpu()
    with torch.no_grad():
        for p in untrained.model.parameters():
            p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
    assert distance(untrained, process) > 4 * exact_d, "the bound must be out of reach of an untrained network"
