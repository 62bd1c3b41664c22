"""Checking that a network fits the data before training starts."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def check_model_fits(model: nn.Module, data_shape: Sequence[int]) -> None:
    """Run the network once on zeros shaped like the data; raise a ValueError naming the
    fix if it cannot take that shape or returns another shape."""
    x = torch.zeros(2, *data_shape)
    c = torch.full((2,), 0.5)
    name = type(model).__name__
    hint = ("choose a model whose input matches the data (MLP: model.dim = number of features; "
            "UNet: model.in_channels and model.image_size), or data.flatten=true for an MLP on digits")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x, c)
    except Exception as e:  # shape errors surface as RuntimeError/ValueError/AssertionError
        raise ValueError(f"model {name} does not fit data of shape {tuple(data_shape)} ({str(e).splitlines()[0][:160]}); {hint}") from None
    finally:
        model.train(was_training)
    if tuple(out.shape) != tuple(x.shape):
        raise ValueError(f"model {name} maps data of shape {tuple(data_shape)} to {tuple(out.shape[1:])}; {hint}")
