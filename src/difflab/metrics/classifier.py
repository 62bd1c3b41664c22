"""`features=classifier`: a small convolutional classifier of a labelled image data set (MNIST),
trained deterministically on its training split, cached on disk, and used as the feature network
of FID / KID / IS and for the classifier scores (confidence, class coverage).

This is the MNIST protocol of TF-GAN's `mnist_frechet_distance` and of papers that compare
MNIST models in the features of an MNIST classifier rather than Inception's: FIDs computed with
it are named `fid_classifier_…` and are comparable only with each other.

Network (LeNet-style): conv5×5(16) → ReLU → maxpool 2 → conv5×5(32) → ReLU → maxpool 2 →
Linear(128) → ReLU (the features) → Linear(num_classes) (the logits). On MNIST, 4 epochs of Adam
(batch 128, cosine-decayed lr 2e-3) give ≥ 99% test accuracy (tests/test_mnist.py).
"""
from __future__ import annotations

import hashlib
import math
import os
import time

import torch
from torch import Tensor, nn
from torch.nn import functional as F

CONFIDENCE = 0.9


class ConvClassifier(nn.Module):
    """forward(x) → [B, num_features] penultimate features; logits(x) → [B, num_classes].
    x: images [B, C, H, W] in [−1, 1] (any float dtype; computed in float32, autocast off)."""

    name = "classifier"

    def __init__(self, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 16,
                 num_features: int = 128):
        super().__init__()
        self.config = dict(in_channels=int(in_channels), image_size=int(image_size), num_classes=int(num_classes),
                           width=int(width), num_features=int(num_features))
        self.num_features, self.num_classes = int(num_features), int(num_classes)
        self.conv1 = nn.Conv2d(in_channels, width, 5, padding=2)
        self.conv2 = nn.Conv2d(width, 2 * width, 5, padding=2)
        s = image_size // 4
        self.fc = nn.Linear(2 * width * s * s, num_features)
        self.head = nn.Linear(num_features, num_classes)

    def _h(self, x: Tensor) -> Tensor:
        c, s = self.config["in_channels"], self.config["image_size"]
        if x.ndim != 4 or tuple(x.shape[1:]) != (c, s, s):
            raise ValueError(f"the classifier was trained on images [B, {c}, {s}, {s}], got shape {tuple(x.shape)}")
        with torch.autocast(device_type=x.device.type, enabled=False):
            h = F.max_pool2d(F.relu(self.conv1(x.float().clamp(-1, 1))), 2)
            h = F.max_pool2d(F.relu(self.conv2(h)), 2)
            return F.relu(self.fc(h.flatten(1)))

    def forward(self, x: Tensor) -> Tensor:
        return self._h(x).float()

    def logits(self, x: Tensor) -> Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(self._h(x)).float()


def _to_unit(x: Tensor) -> Tensor:
    """uint8 images (0..255) → [−1, 1]; float images are taken as already in [−1, 1]."""
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()


def _fingerprint(x: Tensor, y: Tensor, extra: str) -> str:
    h = hashlib.sha1()
    h.update(x.contiguous().numpy().tobytes())
    h.update(y.to(torch.int64).contiguous().numpy().tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]


def train_classifier(x: Tensor, labels: Tensor, *, epochs: int = 4, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, width: int = 16, num_features: int = 128, cache: bool | str | os.PathLike = True,
                     progress: bool = True) -> ConvClassifier:
    """Train (or load from the cache) a `ConvClassifier` on labelled images x [N, C, H, W]
    (uint8 or float in [−1, 1]). Deterministic for a seed: fixed initialisation and batch order,
    one CPU thread-independent optimiser (Adam, cosine lr decay over all steps). The cache key is
    a hash of the images, labels and these options (`$DIFFLAB_CACHE/features/classifier-<hash>.pt`)."""
    from .features import cached_net_path, load_cached_net, save_cached_net

    x, labels = x.detach().cpu(), torch.as_tensor(labels).detach().cpu().long()
    if x.ndim != 4 or x.shape[-1] != x.shape[-2] or x.shape[0] != labels.shape[0]:
        raise ValueError(f"train_classifier needs square images [N, C, H, W] and N labels, got {tuple(x.shape)} and "
                         f"{tuple(labels.shape)}")
    num_classes = int(labels.max()) + 1
    extra = f"e{epochs}-b{batch_size}-lr{lr}-s{seed}-w{width}-f{num_features}-c{num_classes}"
    path = cached_net_path(cache, f"classifier-{_fingerprint(x, labels, extra)}") if cache else None
    cached = load_cached_net(path, ConvClassifier)
    if cached is not None:
        return cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ConvClassifier(x.shape[1], x.shape[-1], num_classes, width, num_features)
    g = torch.Generator().manual_seed(seed)
    steps_per_epoch = x.shape[0] // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    t0 = time.time()
    if progress:
        print(f"classifier features: training a {sum(p.numel() for p in net.parameters()) / 1e3:.0f}k-parameter "
              f"classifier on {x.shape[0]} labelled images ({epochs} epochs, ~{total} steps; cached for reuse)", flush=True)
    net.train()
    for epoch in range(epochs):
        perm = torch.randperm(x.shape[0], generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size:(i + 1) * batch_size]
            loss = F.cross_entropy(net.logits(_to_unit(x[idx])), labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if progress:
            print(f"classifier features: epoch {epoch + 1}/{epochs}  loss {float(loss.detach()):.4f}  "
                  f"{time.time() - t0:.0f}s", flush=True)
    net.eval()
    save_cached_net(path, net.config, net)
    return net


@torch.no_grad()
def predict(net: ConvClassifier, x: Tensor, batch_size: int = 1000) -> Tensor:
    """Class probabilities [N, num_classes] of images x (uint8 or [−1, 1]), float64 on the CPU."""
    dev = next(net.parameters()).device
    out = [F.softmax(net.logits(_to_unit(xb).to(dev)), -1).double().cpu() for xb in x.split(batch_size)]
    return torch.cat(out) if out else torch.empty(0, net.num_classes, dtype=torch.float64)


def accuracy(net: ConvClassifier, x: Tensor, labels: Tensor) -> float:
    return float((predict(net, x).argmax(1) == torch.as_tensor(labels).long()).double().mean())


def classifier_scores(probs: Tensor, threshold: float = CONFIDENCE) -> dict:
    """From class probabilities [N, K]: `confident` (the fraction with max p ≥ threshold), the
    class histogram and fractions of the argmax labels, `classes_covered`, and `class_fraction_min`
    / `class_fraction_max`."""
    n, k = probs.shape
    labels = probs.argmax(1)
    hist = torch.bincount(labels, minlength=k)
    frac = hist.double() / max(n, 1)
    return {"confident": float((probs.max(1).values >= threshold).double().mean()), "confidence_threshold": threshold,
            "classes_covered": int((hist > 0).sum()), "class_histogram": hist.tolist(),
            "class_fraction_min": float(frac.min()), "class_fraction_max": float(frac.max())}


def nearest_neighbour_ratio(samples: Tensor, train: Tensor, unseen: Tensor, batch_size: int = 1024) -> float:
    """Copying check: median_i min_j ‖s_i − x_j‖ over median_k min_j ‖u_k − x_j‖ (x: training
    images, u: real images the model never saw). ≈ 1: samples are as novel as fresh real images;
    near 0: the model reproduces its training set."""
    train = _to_unit(train).flatten(1)

    def nn_dist(a: Tensor) -> Tensor:
        a = _to_unit(a).flatten(1)
        return torch.cat([torch.cdist(b, train).min(1).values for b in a.split(batch_size)]).median()

    return float(nn_dist(samples) / nn_dist(unseen))
