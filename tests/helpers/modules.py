"""A small DiffusionModule and its data (an MLP on a 2-component mixture) for Lightning-level tests."""
import lightning as L

from difflab.data import GMMDataModule
from difflab.lit_module import DiffusionModule

MIX = dict(means=[[-2.0, 0.0], [2.0, 1.0]], stds=[0.5, 0.3], weights=[0.4, 0.6])


def make_module(data_shape=(2,), **kw):
    spec = dict(
        model={"_target_": "difflab.models.MLP", "dim": 2, "hidden": 32, "depth": 2, "emb_dim": 16},
        process={"_target_": "difflab.processes.VPSDE"},
        parameterization={"_target_": "difflab.parameterizations.Epsilon"},
        loss={"_target_": "difflab.losses.DiffusionLoss", "weighting": "simple", "time_sampling": "uniform"},
        data_shape=data_shape, data_config={"_target_": "difflab.data.GMMDataModule", **MIX},
        denoiser={"conditioning": "log_snr"}, optim={"lr": 1e-2}, ema={"decay": 0.9, "warmup": False},
    )
    spec.update(kw)
    return DiffusionModule(**spec)


def make_data(num_train=64, batch_size=16):
    return GMMDataModule(**MIX, num_train=num_train, num_val=0, batch_size=batch_size)


def trainer(tmp_path, max_steps, **kw):
    """A bare CPU Trainer: no logger, checkpoints, progress bar or validation."""
    return L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                     limit_val_batches=0, num_sanity_val_steps=0, **kw)
