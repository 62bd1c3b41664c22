"""Exponential moving average of weights, kept in float32 beside the trained module.

    θ_ema ← d · θ_ema + (1 − d) · θ,   d = min(decay, (1 + n) / (10 + n)) with warm-up, else decay

(n = number of updates so far; the warm-up form is the one of TF's ExponentialMovingAverage
with num_updates, used by the score_sde and ADM code bases).

Why not Lightning's `EMAWeightAveraging` (docs/pitfalls.md): it keeps the average in the module's
own dtype (bf16/fp16 updates round to zero), writes the *average* into the checkpoint's
`state_dict` and copies it over the live weights when training ends, so the raw weights and
the average can no longer be told apart by a loader. Here the shadow weights are plain
float32 tensors held *outside* the (DDP-wrapped) module, saved as their own checkpoint entry
`{"decay", "warmup", "num_updates", "shadow"}` beside the raw `state_dict`, and restored
exactly on resume. Every DDP rank applies the same update to the same (all-reduced)
weights, so the average is identical on every rank without any communication.

The update is torch's own multi-tensor EMA step (`torch.optim.swa_utils.get_ema_multi_avg_fn`:
one lerp over all parameters, a few kernel launches per step instead of one per parameter).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import get_ema_multi_avg_fn


class ExponentialMovingAverage:
    """Float32 shadow copies of a module's floating-point parameters (buffers are copied raw)."""

    def __init__(self, module: nn.Module, decay: float = 0.9999, warmup: bool = False):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"ema.decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = float(decay), bool(warmup)
        self.num_updates = 0
        self._pairs: tuple | None = None  # (module, shadow list, parameter list), rebuilt when stale
        self._update_fn: tuple | None = None  # (decay, torch's multi-tensor EMA update for it)
        self.shadow: dict[str, Tensor] = {
            name: p.detach().to(torch.float32).clone() for name, p in module.named_parameters() if p.is_floating_point()
        }

    def current_decay(self) -> float:
        if self.warmup:
            return min(self.decay, (1.0 + self.num_updates) / (10.0 + self.num_updates))
        return self.decay

    def _tensor_lists(self, module: nn.Module) -> tuple[list[Tensor], list[Tensor]]:
        """(shadows, parameters) in matching order, cached per module; shadows follow the
        parameters' device."""
        if self._pairs is None or self._pairs[0] is not module:
            names, params = [], []
            for name, p in module.named_parameters():
                if name in self.shadow:
                    names.append(name)
                    params.append(p)
            for name, p in zip(names, params):
                if self.shadow[name].device != p.device:
                    self.shadow[name] = self.shadow[name].to(p.device)
            self._pairs = (module, [self.shadow[n] for n in names], params)
        return self._pairs[1], self._pairs[2]

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """θ_ema ← θ_ema + (1 − d)(θ − θ_ema) = d θ_ema + (1 − d) θ, in float32."""
        decay = self.current_decay()
        shadows, params = self._tensor_lists(module)
        if params and shadows[0].device != params[0].device:  # the module moved since the lists were built
            self._pairs = None
            shadows, params = self._tensor_lists(module)
        values = [p.detach().float() for p in params]  # no copy for float32 parameters
        if values:  # (no parameters: a multi-tensor op refuses empty lists)
            self._step(decay)(shadows, values, None)  # θ_ema.lerp_(θ, 1 − d), float32 shadows
        self.num_updates += 1

    def _step(self, decay: float):
        """torch's EMA update for this decay (rebuilt only when the decay changes: warm-up)."""
        if self._update_fn is None or self._update_fn[0] != decay:
            self._update_fn = (decay, get_ema_multi_avg_fn(decay))
        return self._update_fn[1]

    @torch.no_grad()
    def copy_to(self, module: nn.Module) -> None:
        """Write the averaged weights into `module` (cast to each parameter's dtype)."""
        for name, p in module.named_parameters():
            if name in self.shadow:
                p.copy_(self.shadow[name].to(device=p.device, dtype=p.dtype))

    def __getstate__(self) -> dict:  # pickling (ddp_spawn) and deepcopy leave the cache behind
        return {**self.__dict__, "_pairs": None, "_update_fn": None}

    def to(self, device, copy: bool = False) -> "ExponentialMovingAverage":
        """Move the shadow weights; `copy=True` gives each process private storage (tensors
        pickled to ddp_spawn workers arrive in shared memory, common to all ranks)."""
        self.shadow = {k: v.to(device, copy=copy) for k, v in self.shadow.items()}
        self._pairs = None
        return self

    def state_dict(self) -> dict:
        return {"decay": self.decay, "warmup": self.warmup, "num_updates": self.num_updates,
                "shadow": {k: v.detach().cpu().clone() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        missing = set(self.shadow) - set(state["shadow"])
        if missing:
            raise ValueError(f"EMA state lacks weights for {sorted(missing)[:3]}...; the checkpoint is from another model")
        self.decay, self.warmup = float(state["decay"]), bool(state["warmup"])
        self.num_updates = int(state["num_updates"])
        dev = {k: v.device for k, v in self.shadow.items()}
        self.shadow = {k: state["shadow"][k].to(device=dev[k], dtype=torch.float32).clone() for k in self.shadow}
        self._pairs = None
