"""The one module of difflab that touches private APIs of torch and Lightning.

Each function below uses one private attribute (a leading underscore) because no public API
does the job yet; its comment names the public alternative it waits for. `tests/test_compat.py`
pins, for the installed versions, that each attribute still exists and still does what difflab
relies on, so an upgrade that changes one fails there, loudly, instead of silently slowing or
changing training. `tests/test_architecture.py` fails on a private attribute of torch,
Lightning or Hydra used anywhere else in difflab (Hydra's private modules are not used at all).

Lightning is imported inside the functions only: `difflab.processes` imports this module, and
must stay importable without Lightning's import cost.
"""
from __future__ import annotations

import contextlib
import os
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

# ----------------------------------------------------------------------------- torch


def remember_no_cuda() -> bool:
    """On a machine where CUDA finds no device, remember that, as torch itself does once CUDA
    is initialised; returns True when it did.

    Importing Lightning sets PYTORCH_NVML_BASED_CUDA_CHECK=1, after which every
    `torch.cuda.is_available()` before CUDA initialisation asks NVML for the device count,
    loading its library with ctypes each time (torch caches the count only once CUDA is
    initialised, which never happens without a GPU). `torch.optim.Adam.step` calls it on every
    step (`_accelerator_graph_capture_health_check`): about 0.2-0.3 ms per training step on these
    CPU machines, a few per cent of a small model's step. Left alone where CUDA_VISIBLE_DEVICES
    is set (it may still change before initialisation) or torch has no such cache."""
    # private: torch.cuda._cached_device_count, the cache torch fills once CUDA is initialised.
    # Public alternative it waits for: none yet (torch caching a zero NVML count itself, or
    # optimisers not calling torch.cuda.is_available() on every step).
    cuda = getattr(torch, "cuda", None)
    if (cuda is None or not hasattr(cuda, "_cached_device_count") or cuda._cached_device_count is not None
            or os.environ.get("CUDA_VISIBLE_DEVICES") is not None or cuda.is_initialized()):
        return False
    if cuda.device_count() != 0:
        return False
    cuda._cached_device_count = 0
    return True


def native_bf16(device_type: str) -> bool:
    """Whether `device_type` ("cpu" or "cuda") computes bfloat16 in hardware, so that bf16
    autocast makes training faster rather than slower. On a CPU that means AVX-512 BF16 or AMX
    tiles: elsewhere oneDNN emulates bf16, and the MNIST recipe's network trained ~10x slower under
    autocast on such a machine (docs/mnist.md), against 1.7x faster with AVX-512 BF16. On CUDA,
    bf16 without emulation (Ampere and later)."""
    if device_type == "cuda":
        if not torch.cuda.is_available():
            return False
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch without the including_emulation argument
            return bool(torch.cuda.is_bf16_supported())
    if device_type != "cpu":
        return False
    # private: torch.cpu._is_avx512_bf16_supported / _is_amx_tile_supported, torch's own CPU
    # feature queries (cpuinfo). Public alternative it waits for: a public torch.cpu query of
    # native bf16 (torch.backends.mkldnn.is_bf16_supported() is not one: it is True wherever
    # oneDNN can emulate bf16, e.g. on plain AVX-512).
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, name, lambda: False)()) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def grad_norm(grads: Sequence[Tensor]) -> Tensor:
    """The 2-norm of all gradients together (float32, on the device: no sync), from one
    multi-tensor kernel of per-tensor norms."""
    # private: torch._foreach_norm. Public alternative it waits for: torch.nn.utils.get_total_norm
    # (torch >= 2.6; difflab supports 2.4), which keeps the per-tensor norms in the gradients'
    # dtype (an fp16 total overflows sooner than this float32 one).
    return torch.linalg.vector_norm(torch.stack([n.float() for n in torch._foreach_norm(list(grads))]))


def fused_kernel_devices() -> tuple[str, ...]:
    """Device types on which torch's optimisers have fused kernels ("cuda", and "cpu" on torch >= 2.4)."""
    # private: torch.utils._foreach_utils._get_fused_kernels_supported_devices. Public alternative
    # it waits for: none yet (a public query of fused-kernel support); without it: CUDA only.
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # pragma: no cover - a torch that moved the helper
        return ("cuda",)
    return tuple(_get_fused_kernels_supported_devices())


def allow_found_inf_skip(optimizer: torch.optim.Optimizer) -> None:
    """Mark an optimiser made fused after construction as one whose step takes AMP's `found_inf`
    flag, as `Adam(fused=True)` marks itself."""
    # private: Optimizer._step_supports_amp_scaling, set by torch's fused Adam/AdamW constructors
    # and read by GradScaler. Public alternative it waits for: none (constructing the optimiser with
    # fused=True, which difflab cannot do: it switches the one configure_optimizers returned).
    optimizer._step_supports_amp_scaling = True


def skips_found_inf(optimizer: torch.optim.Optimizer) -> bool:
    """Whether the optimiser's step takes a `found_inf` flag (`skip_next_step_if`) and skips on it."""
    return bool(optimizer.defaults.get("fused")) and bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def skip_next_step_if(optimizer: torch.optim.Optimizer, bad: Tensor) -> None:
    """Make the next step of a fused Adam/AdamW leave weights, moments and step count untouched
    when the device flag `bad` is set (no host sync: the kernel reads it)."""
    # AMP's GradScaler protocol: the fused kernels read `optimizer.found_inf` (a float tensor).
    # Public alternative it waits for: none (GradScaler sets it itself, only with loss scaling).
    optimizer.found_inf = bad.float()


def tensor_version(t: Tensor) -> int:
    """The version counter of a tensor: it changes with every in-place write."""
    # private: Tensor._version. Public alternative it waits for: none (torch documents it only as
    # autograd's internal counter).
    return t._version


def compiled_forward(module: nn.Module) -> Callable | None:
    """The forward `module.compile()` installed on this module, or None."""
    # private: nn.Module._compiled_call_impl, set by nn.Module.compile(). Public alternative it
    # waits for: none (nn.Module.compile has no query and no undo).
    return getattr(module, "_compiled_call_impl", None)


@contextlib.contextmanager
def compiled_forwards_detached(net: nn.Module) -> Iterator[None]:
    """Inside: `net` and its submodules run eagerly (their compiled forwards are taken off, so a
    deep copy holds no compiled code); restored after."""
    compiled = [(m, fn) for m in net.modules() if (fn := compiled_forward(m)) is not None]
    for m, _ in compiled:
        m._compiled_call_impl = None
    try:
        yield
    finally:
        for m, fn in compiled:
            m._compiled_call_impl = fn


def add_load_state_dict_pre_hook(module: nn.Module, hook: Callable) -> None:
    """Run `hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
    error_msgs)` before `module` loads its part of a state_dict (it may rename keys in place)."""
    # public since torch 2.5: nn.Module.register_load_state_dict_pre_hook. torch 2.4 (difflab's
    # floor) has only the private _register_load_state_dict_pre_hook(hook, with_module=True), the
    # same hook; the fallback goes with a torch >= 2.5 floor.
    register = getattr(module, "register_load_state_dict_pre_hook", None)
    if register is not None:
        register(hook)
    else:  # pragma: no cover - torch 2.4
        module._register_load_state_dict_pre_hook(hook, with_module=True)


#: the key prefix `torch.compile(module)` (an OptimizedModule) puts before every state_dict key
COMPILED_PREFIX = "_orig_mod."


def strip_compiled_prefix(state: dict) -> dict:
    """A state_dict saved from a `torch.compile`d module, with the keys of the module itself."""
    # private: OptimizedModule._orig_mod, the attribute whose name prefixes the keys. Public
    # alternative it waits for: none (OptimizedModule.state_dict does not strip it).
    return {k.replace(COMPILED_PREFIX, ""): v for k, v in state.items()}


# ----------------------------------------------------------------------------- Lightning


class CheapHookNameSetattr:
    """Mixin for a LightningModule (before it in the bases): the hook name Lightning sets ~46 times
    a training step is stored directly, without nn.Module's parameter/module/buffer checks
    (a str needs none); a few per cent of a small model's step on a CPU."""

    # private: LightningModule._current_fx_name, set by the trainer around every hook call.
    # Public alternative it waits for: none (Lightning keeping the hook name off nn.Module.__setattr__).
    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def logs_this_step(trainer) -> bool:
    """Whether the trainer's loggers write the metrics logged in the current training step
    (every `log_every_n_steps`, and when training stops): logging only then keeps the step free of
    host syncs."""
    # private: Trainer._logger_connector.should_update_logs. Public alternative it waits for: none
    # (Lightning decides inside its logger connector, from its private logging step counter).
    connector = getattr(trainer, "_logger_connector", None)
    return bool(getattr(connector, "should_update_logs", True))


def realign_logging_step(trainer) -> None:
    """A checkpoint taken between optimiser steps restores Lightning's logging step counter one
    ahead of the optimiser step (it counts the batch that was about to start): set it back to
    `global_step`, so a resumed run logs the same steps, under the same step numbers, as an
    uninterrupted one. Only without gradient accumulation (where the two count alike)."""
    # private: the fit loop's epoch_loop._batches_that_stepped (the step loggers write under).
    # Public alternative it waits for: none (Lightning restoring it equal to global_step for a
    # checkpoint saved in on_train_batch_start).
    loop = getattr(getattr(trainer, "fit_loop", None), "epoch_loop", None)
    if getattr(trainer, "accumulate_grad_batches", 1) == 1 and getattr(loop, "_batches_that_stepped", None) not in (None, trainer.global_step):
        loop._batches_that_stepped = trainer.global_step


def train_bar_description(describe: Callable[[object], str | None]):
    """Class decorator for a RichProgressBar subclass: `describe(bar)` names its training bar
    (None: Lightning's own "Epoch N/M")."""
    # private: RichProgressBar._get_train_description(current_epoch). Public alternative it waits
    # for: none (the rich bar has no public hook for its description).
    def decorate(cls):
        own = cls._get_train_description

        def _get_train_description(self, current_epoch: int) -> str:
            text = describe(self)
            return text if text is not None else own(self, current_epoch)

        cls._get_train_description = _get_train_description
        return cls

    return decorate


def started_experiment(logger):
    """The run (W&B run, CSV writer) a Lightning logger has started in this process, or None;
    unlike `logger.experiment`, starts none."""
    # private: Logger._experiment. Public alternative it waits for: none (the `experiment` property
    # starts a run on first access; nothing says whether one was started).
    return getattr(logger, "_experiment", None)


def forget_experiment(logger) -> None:
    """Let a logger forget its finished run, so nothing logs into it again."""
    # private: Logger._experiment (see started_experiment). Public alternative it waits for: none
    # (WandbLogger has no finish()).
    logger._experiment = None
