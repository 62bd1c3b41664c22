"""Feature networks for FID / KID / IS.

- `InceptionFeatures`: torch-fidelity's Inception-v3 port of the TF graph used in papers
  (2048-d pool features + 1008 logits), fed uint8 images resized TF1-style: the standard
  protocol. Its weights must be on disk (they cannot be downloaded here): see
  `find_inception_weights`.
- `LearnedFeatures`: a small MLP trained in seconds on the *real* data (a classifier on the
  labels, or on k-means pseudo-labels when there are none), cached on disk. For offline and
  small data (sklearn digits, toy 2-D mixtures) it makes FID/KID/IS meaningful without
  downloads. Numbers computed with it are named `fid_learned_…`: they are comparable only
  with each other, never with Inception FIDs from papers.

Every extractor runs with autocast off and returns float32 features, so mixed precision
never reaches the metric statistics (docs/pitfalls.md, bf16 FID).
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import Tensor, nn

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE


class MissingWeightsError(FileNotFoundError):
    """The Inception weights are not on this machine."""


def cache_dir() -> Path:
    """$DIFFLAB_CACHE, else ~/.cache/difflab (feature nets and reference statistics)."""
    return Path(os.environ.get("DIFFLAB_CACHE", Path.home() / ".cache" / "difflab"))


def find_inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights: `path`, else $DIFFLAB_INCEPTION_WEIGHTS, else the torch hub cache
    ($TORCH_HOME/hub/checkpoints/<file>, where torch-fidelity and torchmetrics look)."""
    candidates = []
    if path:
        candidates.append(Path(path).expanduser())
    if os.environ.get("DIFFLAB_INCEPTION_WEIGHTS"):
        candidates.append(Path(os.environ["DIFFLAB_INCEPTION_WEIGHTS"]).expanduser())
    candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise MissingWeightsError(
        f"Inception weights for FID/KID/IS not found (looked in: {', '.join(str(c) for c in candidates)}). "
        f"They cannot be downloaded from here: on a machine with network access download {INCEPTION_URL} "
        f"and copy it to {candidates[-1]} (or pass its path as inception_weights=PATH / set "
        "DIFFLAB_INCEPTION_WEIGHTS); for small offline data use features=learned instead"
    )


def to_uint8(x: Tensor) -> Tensor:
    """Images in [−1, 1] → uint8 by rounding (not truncation), grayscale → 3 channels."""
    x = ((x.float() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    if x.ndim != 4:
        raise ValueError(f"Inception features need images [B, C, H, W], got shape {tuple(x.shape)}; use features=learned for non-image data")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[1] != 3:
        raise ValueError(f"Inception features need 1 or 3 channels, got {x.shape[1]}")
    return x


class InceptionFeatures(nn.Module):
    """torch-fidelity's Inception-v3 (TF-compatible resize): features(x) → [B, 2048],
    logits(x) → [B, 1008] (the unbiased logits used for IS). x: images in [−1, 1]."""

    name = "inception"

    def __init__(self, weights_path: str | os.PathLike | None = None):
        super().__init__()
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        path = find_inception_weights(weights_path)
        self.net = FeatureExtractorInceptionV3(
            "inception-v3-compat", ["2048", "logits_unbiased"], feature_extractor_weights_path=str(path)
        )
        self.net.eval()
        self.num_features = 2048

    def _both(self, x: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast(device_type=x.device.type, enabled=False), torch.no_grad():
            f, logits = self.net(to_uint8(x))
        return f.float(), logits.float()

    def forward(self, x: Tensor) -> Tensor:
        return self._both(x)[0]

    def logits(self, x: Tensor) -> Tensor:
        return self._both(x)[1]


class LearnedFeatures(nn.Module):
    """MLP feature network x ↦ h (num_features) ↦ class logits, trained on the real data.

    Inputs are flattened; `forward` returns the penultimate features (used by FID/KID),
    `logits` the class scores (used by IS).
    """

    name = "learned"

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 128, num_features: int = 64):
        super().__init__()
        self.in_dim, self.num_classes, self.hidden, self.num_features = in_dim, num_classes, hidden, num_features
        self.body = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, num_features), nn.SiLU()
        )
        self.head = nn.Linear(num_features, num_classes)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("std", torch.ones(in_dim))

    def _h(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.reshape(x.shape[0], -1).float()
            if x.shape[1] != self.in_dim:
                raise ValueError(f"feature network was trained on data with {self.in_dim} features, got {x.shape[1]}")
            return self.body((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        return self._h(x).float()

    def logits(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(self._h(x)).float()


def cached_net_path(cache: bool | str | os.PathLike, name: str) -> Path | None:
    """<cache>/features/<name>.pt (cache=True: `cache_dir()`), or None when caching is off."""
    if not cache:
        return None
    return (cache_dir() if cache is True else Path(cache)) / "features" / f"{name}.pt"


def load_cached_net(path: Path | None, cls):
    """The network of class `cls` saved at `path` by `save_cached_net` (in eval mode), or None."""
    if path is None or not path.is_file():
        return None
    blob = torch.load(path, map_location="cpu", weights_only=True)
    net = cls(**blob["config"])
    net.load_state_dict(blob["state"])
    return net.eval()


def save_cached_net(path: Path | None, config: dict, net: nn.Module) -> None:
    """Save a network's constructor config and weights atomically (DDP ranks may write the same file at once)."""
    if path is None:
        return
    from ..utils import atomic_write

    with atomic_write(path, "wb") as f:
        torch.save({"config": config, "state": net.state_dict()}, f)


def _data_hash(x: Tensor, labels: Tensor | None, extra: str) -> str:
    h = hashlib.sha1()
    h.update(x.detach().to(torch.float32).cpu().contiguous().numpy().tobytes())
    if labels is not None:
        h.update(labels.detach().cpu().to(torch.int64).contiguous().numpy().tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]


def train_feature_net(
    x: Tensor,
    labels: Tensor | None = None,
    *,
    num_clusters: int = 10,
    steps: int = 300,
    batch_size: int = 128,
    hidden: int = 128,
    num_features: int = 64,
    seed: int = 0,
    cache: bool | str | os.PathLike = True,
) -> LearnedFeatures:
    """Train (or load from the cache) a `LearnedFeatures` net on real data x [N, ...].

    Targets: `labels` when given (e.g. digits classes), else k-means clusters of x
    (pseudo-labels: the net then separates the modes of the data, which is what FID on a
    toy mixture should see). Deterministic for a given seed; a few seconds on a CPU.
    """
    x = x.detach().reshape(x.shape[0], -1).float().cpu()
    extra = f"k{num_clusters}-s{steps}-b{batch_size}-h{hidden}-f{num_features}-seed{seed}"
    path = cached_net_path(cache, f"learned-{_data_hash(x, labels, extra)}") if cache else None
    cached = load_cached_net(path, LearnedFeatures)
    if cached is not None:
        return cached
    g = torch.Generator().manual_seed(seed)
    if labels is None:
        from sklearn.cluster import KMeans

        k = min(num_clusters, x.shape[0])
        labels = torch.as_tensor(KMeans(n_clusters=k, n_init=4, random_state=seed).fit_predict(x.double().numpy()))
    labels = torch.as_tensor(labels).long().cpu()
    classes, y = torch.unique(labels, return_inverse=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = LearnedFeatures(x.shape[1], len(classes), hidden, num_features)
    net.mean.copy_(x.mean(0))
    # constant inputs (digits' empty border pixels) must not blow up noise in samples
    net.std.copy_(x.std(0).clamp_min(max(1e-6, 0.1 * float(x.std()))))
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    net.train()
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
        loss = nn.functional.cross_entropy(net.logits(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    save_cached_net(path, dict(in_dim=net.in_dim, num_classes=net.num_classes, hidden=hidden, num_features=num_features), net)
    return net


@torch.no_grad()
def extract(net: nn.Module, x: Tensor, batch_size: int = 512, logits: bool = False, on_batch=None) -> Tensor:
    """Features (or logits) of x in batches, float64 on the CPU. `on_batch(n)`: called after
    each batch of n examples (progress)."""
    dev = next(net.parameters()).device
    fn = net.logits if logits else net
    out = []
    for xb in x.split(batch_size):
        out.append(fn(xb.to(dev)).to(torch.float64).cpu())
        if on_batch is not None:
            on_batch(xb.shape[0])
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)
