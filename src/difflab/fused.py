"""Switch torch's Adam/AdamW to their fused (single-kernel) CUDA implementation after
construction, so the training step can skip a non-finite update on the device.

The fused kernels take a `found_inf` flag (the mechanism AMP's GradScaler uses) and leave
weights, moments and the step count untouched when it is set: the non-finite guard of
`DiffusionModule` then needs no host sync. This is the same optimiser (same update rule and
state), only its implementation changes; the state's `step` counters move to the parameters'
device as the fused kernel expects (a resumed run loaded them on the CPU).
"""
from __future__ import annotations

import torch


def use_fused_step(optimizer) -> bool:
    """Make a CUDA Adam/AdamW fused in place; True when the optimiser is (now) fused."""
    if optimizer.defaults.get("fused"):
        return True
    if type(optimizer) not in (torch.optim.Adam, torch.optim.AdamW):
        return False
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not params or any(p.device.type != "cuda" or not p.is_floating_point() for p in params):
        return False
    if any(g.get("differentiable") or g.get("capturable") for g in optimizer.param_groups):
        return False
    optimizer.defaults.update(fused=True, foreach=None)
    for group in optimizer.param_groups:
        group.update(fused=True, foreach=None)
        for p in group["params"]:
            state = optimizer.state.get(p)
            if state and "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(p.device)
    optimizer._step_supports_amp_scaling = True
    return True


def use_multi_tensor_step(optimizer) -> bool:
    """Give an optimiser whose `foreach` is unset (None: torch's default, the per-parameter
    Python loop off CUDA) the multi-tensor (`torch._foreach_*`) implementation. Same update
    rule and state; on the CPU it removes a Python loop over every parameter per step (for the
    gmm MLP's 36 tensors: 1.6 → 1.1 ms per Adam step). An explicit `foreach: false` is kept."""
    if "foreach" not in optimizer.defaults or optimizer.defaults.get("fused") or optimizer.defaults["foreach"] is not None:
        return bool(optimizer.defaults.get("foreach"))
    if any(g.get("differentiable") for g in optimizer.param_groups):
        return False
    optimizer.defaults["foreach"] = True
    for group in optimizer.param_groups:
        if group.get("foreach") is None:
            group["foreach"] = True
    return True
