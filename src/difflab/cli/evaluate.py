"""`difflab-eval`: likelihoods and sample quality of a checkpoint or of the GMM oracle.

    difflab-eval model=oracle data=gmm metrics=[nll_ode,nll_elbo,swd,mmd] output=runs/eval
    difflab-eval ckpt_path=runs/x/checkpoints/last.ckpt metrics=[fid,kid,bpd_ode] output=runs/eval

Writes `<output>/metrics.json`: every Monte Carlo estimate with `<metric>_se` beside it
(nats/dim for nll_*, bits/dim in 8-bit space for bpd_*), FIDs named by protocol with their
real-vs-real floor, `nfe` of the sampler, and for data=gmm the exact `nll` of the mixture.
"""
from __future__ import annotations

import math
import time
import warnings
from pathlib import Path

import torch

from .common import UsageError, build_oracle, build_parameterization, build_process, hydra_entry, instantiate, is_oracle, resolve_device, write_json

METRICS = ("nll_ode", "nll_elbo", "bpd_ode", "bpd_elbo", "swd", "mmd", "fid", "kid", "is")


def _plain(node):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if node is not None else None


def _user_chose(group: str) -> bool:
    """Whether `group=` was given on the command line (not just the default)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            return any(o.split("=")[0].lstrip("+~") == group for o in HydraConfig.get().overrides.task)
    except Exception:  # noqa: BLE001
        pass
    return False


def _target_name(spec) -> str:
    return str((spec or {}).get("_target_", "?")).rsplit(".", 1)[-1]


class Model:
    """What is evaluated: denoiser + process + data module + (for gmm) the exact mixture."""

    def __init__(self, denoiser, process, data_spec: dict, data_shape, oracle=None, is_oracle: bool = False):
        self.denoiser, self.process, self.data_spec, self.data_shape, self.oracle = denoiser, process, data_spec, tuple(data_shape), oracle
        self.is_oracle = is_oracle  # the denoiser *is* the mixture's exact posterior mean (runs in float64)
        self._dm = None

    def datamodule(self):
        if self._dm is None:
            self._dm = instantiate(self.data_spec, "data")
            if hasattr(self._dm, "prepare_data"):
                self._dm.prepare_data()
        return self._dm

    def real(self, n: int, seed: int, split: str = "train") -> torch.Tensor:
        """n real examples: fresh mixture samples for gmm, else the data set's split."""
        if self.oracle is not None:
            return self.oracle.sample(n, generator=torch.Generator().manual_seed(seed)).reshape(n, *self.data_shape)
        dm = self.datamodule()
        if split == "train" and hasattr(dm, "train_tensor"):
            return dm.train_tensor(n)
        loader = dm.val_dataloader() if split == "val" else dm.train_dataloader()
        xs, total = [], 0
        for batch in loader or []:
            x = batch[0] if isinstance(batch, (list, tuple)) else batch
            xs.append(x)
            total += x.shape[0]
            if total >= n:
                break
        if not xs:
            raise UsageError(f"data split {split!r} is empty; use split=train")
        return torch.cat(xs)[:n]


def load_model(cfg, device) -> Model:
    oracle = None
    if cfg.get("ckpt_path"):
        try:
            from ..lit_module import load_denoiser
        except ImportError as e:
            raise UsageError(f"ckpt_path needs difflab.lit_module.load_denoiser, which is not available ({e})") from None
        loaded = load_denoiser(cfg.ckpt_path, device=device, use_ema=bool(cfg.get("use_ema", True)))
        data_spec = dict(loaded.data_config or {})
        if _user_chose("data"):
            asked = _plain(cfg.data)
            if _target_name(asked) != _target_name(data_spec):
                raise UsageError(
                    f"the checkpoint was trained on data {_target_name(data_spec)} but data={_target_name(asked)} was asked; "
                    "drop the data= override (the checkpoint's own data is used) or pass a checkpoint trained on that data"
                )
            data_spec = asked
        if not data_spec:
            raise UsageError("the checkpoint holds no data config; pass data=... matching what it was trained on")
        if "means" in data_spec:
            from ..models import GMMOracle

            oracle = GMMOracle(data_spec["means"], data_spec["stds"], data_spec.get("weights"))
        den = loaded.denoiser.to(device).eval()
        if oracle is not None and oracle.dim != math.prod(loaded.data_shape):
            raise UsageError(f"the checkpoint models data of shape {tuple(loaded.data_shape)}, but the mixture has {oracle.dim} dims")
        return Model(den, loaded.process, data_spec, loaded.data_shape, oracle)
    if not is_oracle(cfg):
        raise UsageError("nothing to evaluate: pass ckpt_path=<run>/checkpoints/last.ckpt or model=oracle (with data=gmm)")
    oracle = build_oracle(cfg.data)
    process = build_process(cfg).to(device)
    den = oracle.to(device).denoiser(process, build_parameterization(cfg))
    return Model(den, process, _plain(cfg.data), (oracle.dim,), oracle, is_oracle=True)


def _sampler_args(cfg) -> dict:
    spec = _plain(cfg.get("sampler")) or {"name": "ode_heun", "steps": 50}  # no sampler group: Heun's PF-ODE
    spec = {k: v for k, v in spec.items() if k != "_target_"}
    name = spec.pop("name", None) or spec.pop("sampler", None)
    if name is None:
        raise UsageError("the sampler config has no name; pick one with sampler=ode_heun")
    return {"sampler": name, **spec}


def generate(model: Model, num: int, seed: int, chunk_size: int, sampler_args: dict, device) -> tuple[torch.Tensor, int]:
    """num samples in fixed chunks, chunk c seeded by (seed, c) as in EvalCallback."""
    from ..callbacks.eval import chunk_generator, chunk_sizes
    from ..samplers import sample

    out, nfe = [], 0
    for c, n in enumerate(chunk_sizes(num, chunk_size)):
        res = sample(model.denoiser, model.process, (n, *model.data_shape), generator=chunk_generator(seed, c, device), device=device,
                     **sampler_args)
        out.append(getattr(res, "samples", res).detach().float().cpu())
        nfe = int(getattr(res, "nfe", 0))
    return torch.cat(out), nfe


def _dequantizer(bits: int):
    from ..likelihood import dequantize

    def deq(x, g):
        try:
            return dequantize(x, generator=g, bits=bits)
        except ValueError as e:
            raise UsageError(f"bpd_* metrics need {bits}-bit image data ({e}); use nll_ode / nll_elbo for continuous data") from None

    return deq


def likelihood_metrics(cfg, model: Model, metrics, device) -> dict:
    from ..likelihood import estimate_from_values, nll_elbo, nll_ode

    out: dict = {}
    seed = int(cfg.seed)
    bits = int(cfg.bits)
    d = math.prod(model.data_shape)
    ode = dict(_plain(cfg.ode))
    ode_batch = int(ode.pop("batch_size", 1024))
    elbo = dict(_plain(cfg.elbo))
    num_steps = elbo.pop("num_steps", None)
    dtype = torch.float64 if model.is_oracle else torch.float32
    if model.is_oracle:
        model.denoiser, model.process = model.denoiser.to(dtype), model.process.to(dtype)

    if "nll_ode" in metrics or "bpd_ode" in metrics:
        x = model.real(int(cfg.num_eval), seed + 1, split=cfg.split).to(device, dtype)
        for name in ("nll_ode", "bpd_ode"):
            if name not in metrics:
                continue
            g = torch.Generator(device=device).manual_seed(seed + 2)
            xin = _dequantizer(bits)(x, g) if name == "bpd_ode" else x
            t0 = time.perf_counter()
            est = nll_ode(model.denoiser, model.process, xin, batch_size=ode_batch, generator=g, **ode)
            mean, se = est.per_dim if name == "nll_ode" else est.bits_per_dim(math.log2(2**bits / 2.0))
            out[name], out[name + "_se"], out[name + "_seconds"] = mean, se, time.perf_counter() - t0
            out[name + "_num_samples"] = est.num_draws
            if name == "nll_ode" and model.oracle is not None:
                exact = -model.oracle.log_prob(x).to(torch.float64).cpu()
                gap = estimate_from_values(est.values - exact, d)
                out["nll_ode_gap"], out["nll_ode_gap_se"] = gap.per_dim  # paired with the exact NLL of the same points

    for name in ("nll_elbo", "bpd_elbo"):
        if name not in metrics:
            continue
        g = torch.Generator(device=device).manual_seed(seed + 3)
        discrete = elbo.get("decoder") == "discretized"
        if model.oracle is not None:  # a mixture: fresh exact samples for every draw
            oracle = model.oracle

            def data(n, gen, _o=oracle):
                return _o.sample(n, generator=gen).to(device, dtype).reshape(n, *model.data_shape)
        else:
            data = model.real(int(cfg.num_eval), seed + 1, split=cfg.split).to(device)
        if name == "bpd_elbo" and not discrete:
            deq, base = _dequantizer(bits), data

            def data(n, gen, _b=base, _deq=deq):  # fresh dequantisation noise for every draw
                xb = _b(n, gen) if callable(_b) else _b[torch.randint(0, _b.shape[0], (n,), generator=gen, device=gen.device).to(_b.device)]
                return _deq(xb, gen)
        t0 = time.perf_counter()
        opts = {k: v for k, v in elbo.items() if k != "decoder" or v is not None}
        if name == "bpd_elbo":
            opts["bits"] = bits
        est = nll_elbo(model.denoiser, model.process, data, num_draws=int(cfg.mc_samples), batch_size=int(cfg.mc_batch_size),
                       num_steps=num_steps, generator=g, **opts)
        if name == "nll_elbo":
            mean, se = est.per_dim
        else:
            mean, se = est.bits_per_dim(0.0 if discrete else math.log2(2**bits / 2.0))
        out[name], out[name + "_se"], out[name + "_seconds"] = mean, se, time.perf_counter() - t0
        out[name + "_num_samples"] = est.num_draws

    if model.oracle is not None and any(m.startswith("nll") for m in metrics):
        nll, nll_se = model.oracle.nll(num_samples=int(min(cfg.mc_samples, 2_000_000)), seed=seed + 4)
        out["nll"], out["nll_se"] = nll, nll_se
    return out


def sample_metrics(cfg, model: Model, metrics, device) -> dict:
    out: dict = {}
    seed = int(cfg.seed)
    n = int(cfg.num_samples)
    fake, nfe = generate(model, n, seed, int(cfg.chunk_size), _sampler_args(cfg), device)
    out["nfe"] = nfe
    real = model.real(max(n, int(cfg.num_reference)), seed + 5, split="train").float().cpu()
    if "swd" in metrics or "mmd" in metrics:
        from ..metrics.distances import mmd, sliced_wasserstein

        ref = real[:n].flatten(1)
        if "swd" in metrics:
            out["swd"] = float(sliced_wasserstein(fake.flatten(1), ref, int(cfg.num_projections), torch.Generator().manual_seed(seed)))
            # the same distance between two real sets of the same size: the floor
            other = model.real(n, seed + 6, split="train").float().cpu().flatten(1)
            out["swd_floor"] = float(sliced_wasserstein(other, ref, int(cfg.num_projections), torch.Generator().manual_seed(seed)))
        if "mmd" in metrics:
            out["mmd"] = float(mmd(fake.flatten(1), ref))
    quality = [m for m in ("fid", "kid", "is") if m in metrics]
    if quality:
        from ..metrics import extract, feature_id, reference_stats, sample_quality
        from ..metrics.features import InceptionFeatures, train_feature_net

        if cfg.features == "learned":
            net = train_feature_net(real, seed=seed)
        elif cfg.features == "inception":
            net = InceptionFeatures(cfg.get("inception_weights"))
        else:
            raise UsageError(f"features must be learned or inception, got {cfg.features}")
        net = net.to(device)
        real_f = extract(net, real)
        stats = reference_stats(real_f, _target_name(model.data_spec).lower(), "train", feature_id(net))
        logits = extract(net, fake, logits=True) if "is" in quality else None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out.update(sample_quality(real_f, extract(net, fake), quality, features=str(cfg.features), fake_logits=logits,
                                      real_stats=stats))
        for w in caught:
            print(f"difflab-eval: warning: {w.message}")
            out.setdefault("warnings", []).append(str(w.message))
    return out


def run(cfg, output_dir: Path) -> dict:
    metrics = list(cfg.metrics)
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown:
        raise UsageError(f"unknown metrics {unknown}; choose from {list(METRICS)}")
    if int(cfg.mc_samples) < 2 or int(cfg.num_eval) < 2 or int(cfg.num_samples) < 2:
        raise UsageError("mc_samples, num_eval and num_samples must be >= 2 (a standard error needs two draws)")
    torch.manual_seed(int(cfg.seed))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    model = load_model(cfg, device)
    out: dict = {"data_shape": list(model.data_shape)}
    out.update(likelihood_metrics(cfg, model, metrics, device))
    if any(m in metrics for m in ("swd", "mmd", "fid", "kid", "is")):
        out.update(sample_metrics(cfg, model, metrics, device))
    write_json(Path(output_dir) / "metrics.json", out)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in out.items() if isinstance(v, float) and not k.endswith("_seconds"))
    print(f"difflab-eval: wrote {Path(output_dir) / 'metrics.json'}: {shown}")
    return out


main = hydra_entry("eval", "difflab-eval")(run)

if __name__ == "__main__":
    main()
