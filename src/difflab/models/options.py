"""Speed options of a model config that are not constructor arguments of the network:

    model.compile: false | true | auto | {mode, backend, fullgraph, dynamic}   (torch.compile options;
                   auto = compile when training on a GPU, stay eager on a CPU, where compiling
                   takes minutes)
    model.channels_last: false | true   (NHWC weights and inputs for convolutional networks)

`compile` uses `nn.Module.compile()`, which compiles the module's forward *in place*: the
parameters keep their names, so a checkpoint trained with compile holds no `_orig_mod.` keys
and loads into an uncompiled network, and the reverse (docs/pitfalls.md).
"""
from __future__ import annotations

import copy
from typing import Any, Mapping

import torch
from torch import nn

from ..compat import compiled_forward, compiled_forwards_detached

MODEL_OPTIONS = ("compile", "channels_last")


def split_model_options(spec: Mapping) -> tuple[dict, dict]:
    """(constructor spec, speed options) of a `model` config."""
    spec = dict(spec)
    options = {k: spec.pop(k) for k in MODEL_OPTIONS if k in spec}
    return spec, options


def compile_options(value: Any) -> dict | None:
    """`model.compile` → keyword arguments of torch.compile, or None when off."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if isinstance(value, str):
        return {"mode": value}
    if isinstance(value, Mapping):
        return dict(value)
    raise ValueError(f"model.compile must be true, false, a mode name or a dict of torch.compile options, got {value!r}")


def apply_model_options(net: nn.Module, compile: Any = False, channels_last: bool = False,
                        device: torch.device | str | None = None) -> nn.Module:
    """channels_last (4-D weights only: a no-op for an MLP), then compile in place
    (compile=auto: only when `device`, where the network will run, is a GPU; without a
    `device`, when a GPU is present)."""
    if compile == "auto":
        compile = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if channels_last:
        net.to(memory_format=torch.channels_last)
    opts = compile_options(compile)
    if opts is not None:
        if not hasattr(net, "compile"):  # pragma: no cover - torch < 2.2
            raise ValueError("model.compile=true needs torch >= 2.2 (nn.Module.compile); set model.compile=false")
        net.compile(**opts)
        net._difflab_compile_options = dict(opts)  # for copies that must compile alike (`network_copy`)
    return net


def is_compiled(net: nn.Module) -> bool:
    return any(compiled_forward(m) is not None for m in net.modules())


def uncompiled_copy(net: nn.Module) -> nn.Module:
    """A deep copy of `net` that runs eagerly (the compiled forward is not copied)."""
    with compiled_forwards_detached(net):
        return copy.deepcopy(net)


def network_copy(net: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """A deep copy of `net`, its floating-point weights and buffers cast to `dtype`, compiled
    again with the options `net` was compiled with (a compiled forward is bound to the module
    it was made for, so it cannot be copied). `net` itself is left untouched."""
    new = uncompiled_copy(net)
    if dtype is not None:
        new.to(dtype)
    if compiled_forward(net) is not None:
        new.compile(**getattr(net, "_difflab_compile_options", {}))
    return new
