"""Initialisers: shape, range, class statistics, caching (samplers/initializers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustgen.kernel.data import ImageDataset
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models import build_model
from samplers import InitConfig, fit_initializer
from samplers.initializers.base import class_pixels


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _flat(x):
    return x.reshape(len(x), -1).double()


@pytest.mark.parametrize("kind", ["uniform", "gaussian", "pca", "local-pca"])
def test_shape_range_and_seed(digits, kind):
    init = fit_initializer(InitConfig(kind=kind), digits, 3)
    x = init.draw(50, _gen(1))
    assert x.shape == (50, 1, 8, 8) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.equal(x, init.draw(50, _gen(1)))  # same generator state, same draws
    assert not torch.equal(x, init.draw(50, _gen(2)))


def test_class_statistics_match_the_class(digits):
    """gaussian and pca draws are centred on their class (closer to its mean than to any other class's)."""
    means = torch.stack([torch.from_numpy(class_pixels(digits, c)).double().mean(0) for c in range(10)])
    for kind in ("gaussian", "pca", "local-pca"):
        for cls in (3, 7):
            m = _flat(fit_initializer(InitConfig(kind=kind, scale=1.0), digits, cls).draw(400, _gen())).mean(0)  # unclipped spread
            dists = (means - m).norm(dim=1)
            assert int(dists.argmin()) == cls, (kind, cls, dists)
            assert float(dists[cls]) < 0.35 * float(dists.sort().values[1]), (kind, cls)


def _small_dataset(n_per_class: int, d_side: int = 4, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    x = (rng.normal(128, 12, size=(2 * n_per_class, d_side, d_side, 1))).clip(0, 255).astype(np.uint8)
    y = np.repeat([0, 1], n_per_class).astype(np.int64)
    return ImageDataset("toy", x, y, x[:2], y[:2], ("a", "b"), crop_padding=0, flip=False)


@pytest.mark.parametrize("n_per_class", [8, 200])  # fewer images than pixels (data factor) / more (Cholesky)
def test_gaussian_covariance_is_class_covariance_plus_ridge(n_per_class):
    data = _small_dataset(n_per_class)
    ridge = 1e-3
    x = _flat(fit_initializer(InitConfig(kind="gaussian", ridge=ridge), data, 0).draw(40000, _gen()))
    pixels = torch.from_numpy(class_pixels(data, 0)).double()
    expected = torch.cov(pixels.T) + ridge * torch.eye(pixels.shape[1], dtype=torch.float64)
    assert torch.allclose(torch.cov(x.T), expected, atol=4e-4), float((torch.cov(x.T) - expected).abs().max())


def test_pca_keeps_variance_fraction_and_scales_in_std_units(digits):
    init = fit_initializer(InitConfig(kind="pca", variance=0.8), digits, 3)
    pixels = torch.from_numpy(class_pixels(digits, 3)).double()
    total = torch.cov(pixels.T).trace()
    kept = init.stds.double().square().sum()
    dropped_last = kept - init.stds[-1].double() ** 2
    assert kept / total >= 0.8 > dropped_last / total  # the fewest components that reach 80%
    zero = fit_initializer(InitConfig(kind="pca", scale=0.0, variance=0.8), digits, 3).draw(3, _gen())
    assert torch.allclose(_flat(zero), pixels.mean(0).clamp(0, 1).expand(3, -1), atol=1e-5)
    half = _flat(fit_initializer(InitConfig(kind="pca", scale=0.5, components=5), digits, 3).draw(4000, _gen()))
    coords = (half - pixels.mean(0)) @ torch.as_tensor(init.components[:5]).double().T
    ratio = coords.std(0) / init.stds[:5].double()
    assert torch.all((ratio > 0.38) & (ratio < 0.55)), ratio  # 0.5 std, a little less where clipping bites


def test_local_pca_samples_stay_near_their_anchor_neighbourhood(digits):
    """The paper's point: local-pca starts each chain in one region of the class, pca anywhere in it."""
    local = fit_initializer(InitConfig(kind="local-pca", k=10), digits, 3)
    x_local, anchors = local.draw(300, _gen(), return_anchors=True)
    neighbourhood_means = local.pixels[local.neighbours[anchors]].double().mean(1)
    x_pca = fit_initializer(InitConfig(kind="pca"), digits, 3).draw(300, _gen())
    d_local = (_flat(x_local) - neighbourhood_means).norm(dim=1).mean()
    d_pca = (_flat(x_pca) - neighbourhood_means).norm(dim=1).mean()
    assert d_local < 0.75 * d_pca, (float(d_local), float(d_pca))
    assert torch.equal(local.neighbours[:, 0], torch.arange(len(local.pixels)))  # anchor is its own first neighbour
    at_mean = fit_initializer(InitConfig(kind="local-pca", k=10, scale=0.0), digits, 3)
    x0, a0 = at_mean.draw(5, _gen(), return_anchors=True)
    assert torch.allclose(_flat(x0), at_mean.pixels[at_mean.neighbours[a0]].double().mean(1).clamp(0, 1), atol=1e-5)


def test_local_pca_feature_space_uses_the_model_and_caches_per_model(digits, tmp_path):
    def model(seed):
        torch.manual_seed(seed)
        return build_model("preact-resnet18", num_classes=10, in_channels=1, width=4).eval()

    cache = tmp_path / "c"
    config = InitConfig(kind="local-pca", k=8, neighbour_space="features")
    a = fit_initializer(config, digits, 2, model=model(0), cache_dir=cache)
    b = fit_initializer(config, digits, 2, model=model(1), cache_dir=cache)
    pixel = fit_initializer(InitConfig(kind="local-pca", k=8), digits, 2, cache_dir=cache)
    assert len(list((cache / "init").glob("local-pca-*.npz"))) == 3  # one fit per model and space
    assert not torch.equal(a.neighbours, pixel.neighbours) and not torch.equal(a.neighbours, b.neighbours)
    again = fit_initializer(config, digits, 2, model=model(0), cache_dir=cache)
    assert torch.equal(again.neighbours, a.neighbours)
    assert a.draw(4, _gen()).shape == (4, 1, 8, 8)


def test_fit_is_cached_on_disk_and_keyed_by_options(digits, tmp_path, monkeypatch):
    cache = tmp_path / "c"
    first = fit_initializer(InitConfig(kind="pca", variance=0.9), digits, 4, cache_dir=cache)
    import samplers.initializers.pca as pca_module

    monkeypatch.setattr(pca_module, "pca_fit", lambda x: (_ for _ in ()).throw(AssertionError("refitted")))
    second = fit_initializer(InitConfig(kind="pca", variance=0.9, scale=2.0), digits, 4, cache_dir=cache)  # scale is not a fit option
    assert torch.equal(first.components, second.components)
    with pytest.raises(AssertionError, match="refitted"):
        fit_initializer(InitConfig(kind="pca", variance=0.5), digits, 4, cache_dir=cache)


def test_uniform_and_errors(digits):
    x = fit_initializer(InitConfig(kind="uniform"), digits, 0).draw(2000, _gen())
    assert abs(float(x.mean()) - 0.5) < 0.01
    one = ImageDataset("one", digits.x_train[:11], np.arange(11) % 10, digits.x_test, digits.y_test % 10, digits.classes, crop_padding=0, flip=False)
    with pytest.raises(RobustgenError, match="needs at least 2"):
        fit_initializer(InitConfig(kind="pca"), one, 1)  # class 1 has one image (indices 1)
    with pytest.raises(RobustgenError, match="out of range"):
        fit_initializer(InitConfig(kind="pca"), digits, 10)
    with pytest.raises(RobustgenError, match="variance"):
        fit_initializer(InitConfig(kind="pca", variance=1.5), digits, 1)
