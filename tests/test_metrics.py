"""FID / KID / IS against the peers (torchmetrics, torch-fidelity) and against what an FID
must do (zero for identical sets, rising with corruption)."""
import math
import warnings

import pytest
import torch

from difflab.metrics import (
    FeatureStats,
    MissingWeightsError,
    extract,
    fid,
    find_inception_weights,
    inception_score,
    kid,
    protocol_key,
    reference_stats,
    sample_quality,
    train_feature_net,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.as_tensor(d.images, dtype=torch.float32)[:, None] / 16 * 2 - 1  # [1797, 1, 8, 8] in [-1, 1]
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(0))
    return x[perm], torch.as_tensor(d.target)[perm]


@pytest.fixture(scope="module")
def net(digits, tmp_path_factory):
    x, y = digits
    return train_feature_net(x, y, steps=300, cache=tmp_path_factory.mktemp("cache"))


def test_fid_real_vs_real_zero_and_monotone_in_noise(digits, net):
    """Must show: FID(real, real) ≈ 0, and it rises monotonically as Gaussian noise of
    growing size is added to one side."""
    x, _ = digits
    a, b = x[:800], x[800:1600]
    fa = extract(net, a)
    assert abs(fid(fa, fa)) < 1e-6
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(b.shape, generator=g)
    values = [fid(fa, extract(net, b + s * noise)) for s in (0.0, 0.1, 0.2, 0.4, 0.8, 1.6)]
    assert all(v2 > v1 for v1, v2 in zip(values, values[1:])), values
    assert values[0] < 0.1 * values[-1]  # disjoint real halves: only the small-sample floor


def test_fid_equals_torchmetrics(digits, net):
    """Must show: our FID equals torchmetrics' FrechetInceptionDistance given the same
    feature network (passed as a custom nn.Module)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    x, _ = digits
    real, fake = x[:700], (x[700:1400] + 0.3 * torch.randn(700, 1, 8, 8, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    tm = FrechetInceptionDistance(feature=net, normalize=True)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    ours = fid(extract(net, real), extract(net, fake))
    assert ours > 1e-3
    assert ours == pytest.approx(float(tm.compute()), rel=1e-4)


def test_kid_and_is_equal_torchmetrics(digits, net):
    from torchmetrics.image.inception import InceptionScore
    from torchmetrics.image.kid import KernelInceptionDistance

    x, _ = digits
    real, fake = x[:300], (x[300:600] + 0.5 * torch.randn(300, 1, 8, 8, generator=torch.Generator().manual_seed(0)))
    tm = KernelInceptionDistance(feature=net, subsets=1, subset_size=300, normalize=True)
    tm.update(real, real=True)
    tm.update(fake, real=False)
    ours, _ = kid(extract(net, real), extract(net, fake), subsets=1, subset_size=300)
    assert ours == pytest.approx(float(tm.compute()[0]), rel=1e-4, abs=1e-7)

    class Logits(torch.nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.logits(x).double()  # torchmetrics takes the softmax in the input dtype

    tis = InceptionScore(feature=Logits(net), splits=1, normalize=False)  # True would cast to bytes
    tis.update(fake)
    ours_is, _ = inception_score(extract(net, fake, logits=True), splits=1)
    assert ours_is == pytest.approx(float(tis.compute()[0]), rel=1e-4)
    # a classifier that is sure and uses all 10 classes evenly has IS near 10
    assert 5 < inception_score(extract(net, real, logits=True), splits=1)[0] <= 10


def test_features_fp32_under_autocast(digits, net):
    x, _ = digits
    with torch.autocast("cpu", dtype=torch.bfloat16):
        f = net(x[:16])
        lg = net.logits(x[:16])
    assert f.dtype == torch.float32 and lg.dtype == torch.float32
    torch.testing.assert_close(f, net(x[:16]))


def test_sample_quality_names_protocol_and_warns(digits, net):
    x, _ = digits
    fr, ff = extract(net, x[:1000]), extract(net, x[1000:1500])
    lg = extract(net, x[1000:1500], logits=True)
    with pytest.warns(UserWarning, match="500 samples"):
        out = sample_quality(fr, ff, ("fid", "kid", "is"), features="learned", fake_logits=lg, kid_subsets=5)
    assert set(out) == {"fid_learned_n500", "fid_learned_n500_floor", "num_real_floor", "kid_learned_n500",
                        "kid_learned_n500_std", "kid_learned_n500_floor", "kid_learned_n500_floor_std",
                        "is_learned_n500", "is_learned_n500_std"}
    # no held-out features: the last 500 of the 1000 real ones are held out, the rest is the floor's reference
    assert out["fid_learned_n500_floor"] == pytest.approx(fid(fr[:500], fr[500:1000])) and out["num_real_floor"] == 500
    assert protocol_key("fid", 2000) == "fid_n2k" and protocol_key("fid", 50000) == "fid_n50k"
    assert protocol_key("kid", 2048, "learned") == "kid_learned_n2048"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sample_quality(torch.randn(4200, 3, dtype=torch.float64), torch.randn(2100, 3, dtype=torch.float64), ("fid",))


def _gaussian_draws(generator: torch.Generator, d: int = 8):
    """Draws from one fixed, non-isotropic Gaussian: fake, held-out and reference sets from it are exchangeable."""
    scale = torch.linspace(0.5, 2.0, d, dtype=torch.float64)
    return lambda m: torch.randn(m, d, generator=generator, dtype=torch.float64) * scale + 1.0


def test_fid_floor_is_a_perfect_models_fid_under_the_same_protocol():
    """The floor is the FID a perfect model would score under this very protocol: n fresh real
    examples against the same reference set. Samples of a perfect model and such held-out
    examples are exchangeable, so E[fid - floor] = 0 exactly; a floor from two halves of the
    reference (m vs m vectors) has a larger small-sample bias (≈ (1/N + 1/n) vs 2/m per
    dimension) and would sit systematically above a perfect model's FID."""
    N, n, reps = 1000, 250, 60
    diffs = []
    for r in range(reps):
        draw = _gaussian_draws(torch.Generator().manual_seed(r))
        ref, fake, held = draw(N), draw(n), draw(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 250 < 2048 samples: said, and beside the point here
            out = sample_quality(ref, fake, ("fid",), features="x", held_features=held)
        assert out["fid_x_n250_floor"] == pytest.approx(fid(ref, held))  # the reference the samples were scored against
        assert out["num_real_floor"] == n
        diffs.append(out["fid_x_n250"] - out["fid_x_n250_floor"])
    d = torch.tensor(diffs)
    mean, se = float(d.mean()), float(d.std() / math.sqrt(reps))
    assert abs(mean) < 3 * se, f"E[fid - floor] = {mean:.4f} ± {se:.4f}, expected 0"


def test_kid_floor_is_a_perfect_models_kid_under_the_same_protocol():
    """KID (Bińkowski et al. 2018) is an unbiased estimate of the squared MMD, so a perfect model's KID and
    the floor (the held-out real examples against the same reference) both average 0: E[kid - floor] = 0,
    and the floor itself is 0 within noise."""
    N, n, reps = 600, 200, 30
    diffs, floors = [], []
    for r in range(reps):
        draw = _gaussian_draws(torch.Generator().manual_seed(100 + r))
        ref, fake, held = draw(N), draw(n), draw(n)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = sample_quality(ref, fake, ("kid",), features="x", held_features=held, kid_subsets=20)
        assert out["kid_x_n200_floor"] == pytest.approx(kid(ref, held, subsets=20)[0])
        diffs.append(out["kid_x_n200"] - out["kid_x_n200_floor"])
        floors.append(out["kid_x_n200_floor"])
    for name, v in (("kid - floor", torch.tensor(diffs)), ("floor", torch.tensor(floors))):
        mean, se = float(v.mean()), float(v.std() / math.sqrt(reps))
        assert abs(mean) < 3 * se, f"E[{name}] = {mean:.5f} ± {se:.5f}, expected 0"
    # a model off by a shift scores far above its floor
    draw = _gaussian_draws(torch.Generator().manual_seed(7))
    out = sample_quality(draw(N), draw(n) + 0.5, ("kid",), features="x", held_features=draw(n), kid_subsets=20)
    assert out["kid_x_n200"] > out["kid_x_n200_floor"] + 5 * out["kid_x_n200_std"]


def test_fid_floor_without_held_out_data_holds_out_part_of_the_reference():
    """Without held-out examples the last k = min(n, N // 2) reference vectors stand in for them
    (the rest is the floor's reference); fewer than n is said, with the number, and no floor is
    reported then (a floor from fewer examples sits above a perfect model's FID, so beside the metric
    it would mislead): `<key>_floor` is None and `<key>_floor_unavailable`
    gives the reason."""
    draw = _gaussian_draws(torch.Generator().manual_seed(0))
    ref, fake = draw(1000), draw(200)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = sample_quality(ref, fake, ("fid",), features="x")
    assert out["fid_x_n200_floor"] == pytest.approx(fid(ref[:800], ref[800:]))
    assert out["num_real_floor"] == 200
    assert not any("floor" in str(w.message) and "held-out" in str(w.message) for w in caught)
    assert "fid_x_n200_floor_unavailable" not in out
    with pytest.warns(UserWarning, match=r"floor from 150 held-out real examples \(< 200 samples\) not reported"):
        out = sample_quality(ref[:300], fake, ("fid",), features="x")
    assert out["fid_x_n200_floor"] is None and out["num_real_floor"] == 150
    assert out["fid_x_n200_floor_unavailable"] == "only 150 held-out examples for 200 samples"
    assert out["fid_x_n200"] == pytest.approx(fid(ref[:300], fake))  # the metric itself is still there
    with pytest.warns(UserWarning, match=r"floor from 120 held-out real examples \(< 200 samples\) not reported"):
        out = sample_quality(ref, fake, ("fid",), features="x", held_features=draw(120))
    assert out["fid_x_n200_floor"] is None and out["fid_x_n200_floor_unavailable"] == "only 120 held-out examples for 200 samples"
    # more held-out examples than samples: the first n are used, as many as the samples
    out = sample_quality(ref, fake, ("fid",), features="x", held_features=draw(500))
    assert out["num_real_floor"] == 200
    # precomputed reference statistics: the floor is scored against them too
    held = draw(200)
    stats = FeatureStats.from_features(ref)
    out = sample_quality(ref, fake, ("fid",), features="x", real_stats=stats, held_features=held)
    assert out["fid_x_n200_floor"] == pytest.approx(fid(stats, held))


def test_reference_stats_cached(tmp_path, monkeypatch):
    f = torch.randn(100, 4, dtype=torch.float64)
    s1 = reference_stats(f, "toy", "train", "feat", cache=tmp_path)
    assert list((tmp_path / "refstats").glob("toy-train-feat-n100.npz"))
    monkeypatch.setattr(FeatureStats, "from_features", classmethod(lambda cls, f: (_ for _ in ()).throw(AssertionError("recomputed"))))
    s2 = reference_stats(f, "toy", "train", "feat", cache=tmp_path)
    torch.testing.assert_close(s1.mean, s2.mean)
    torch.testing.assert_close(s1.cov, s2.cov)
    with pytest.raises(FileNotFoundError, match="reference statistics"):
        FeatureStats.load(tmp_path / "nope.npz")


def test_feature_net_cached_and_deterministic(tmp_path):
    x = torch.randn(200, 2)
    n1 = train_feature_net(x, steps=20, cache=tmp_path)
    files = list((tmp_path / "features").glob("*.pt"))
    assert len(files) == 1
    n2 = train_feature_net(x, steps=20, cache=tmp_path)
    n3 = train_feature_net(x, steps=20, cache=False)
    for a, b, c in zip(n1.parameters(), n2.parameters(), n3.parameters()):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_missing_inception_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("DIFFLAB_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(MissingWeightsError, match="download https://.*weights-inception.*features=learned"):
        find_inception_weights()
    p = tmp_path / "w.pth"
    p.write_bytes(b"x")
    assert find_inception_weights(p) == p


def test_fid_rejects_mismatched_features():
    with pytest.raises(ValueError, match="feature sizes differ"):
        fid(torch.randn(10, 3), torch.randn(10, 4))
    with pytest.raises(ValueError, match="at least 2"):
        fid(torch.randn(1, 3), torch.randn(10, 3))


@pytest.mark.slow
def test_inception_features_from_a_local_weights_file(tmp_path, monkeypatch):
    """The Inception path end to end with a stand-in weights file (random weights, the real
    architecture): found on disk, uint8 by rounding, grayscale to RGB, 2048 features + 1008 logits."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    from difflab.metrics import InceptionFeatures
    from difflab.metrics.features import to_uint8

    with monkeypatch.context() as m:  # build the architecture once without any download
        m.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None)
        torch.manual_seed(0)
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    path = tmp_path / "weights-inception-2015-12-05-6726825d.pth"
    torch.save(net.state_dict(), path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    feats = InceptionFeatures(weights_path=path)
    x = torch.rand(3, 1, 16, 16) * 2 - 1
    f, lg = feats(x), feats.logits(x)
    assert f.shape == (3, 2048) and lg.shape == (3, 1008) and f.dtype == torch.float32
    u = to_uint8(torch.tensor([-1.0, -0.999, 0.0, 1.0]).reshape(1, 1, 2, 2))
    assert u.shape == (1, 3, 2, 2) and u[0, 0].flatten().tolist() == [0, 0, 128, 255]  # rounding, not truncation
