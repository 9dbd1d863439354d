"""Sampling at ImageNet size: lazy ImageFolders read per class, feature-space neighbours, the reduced-resolution Gaussian.

Real formats, built in the test: 224x224 PNG class folders and a randomly initialised
torchvision state dict loaded through `torchvision:ARCH=PATH`.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import robustgen.kernel.data.folders as folders_module
from robustgen.cli import main
from robustgen.kernel.data import ImageDataset, LazyImageFolder, load_dataset
from robustgen.kernel.errors import RobustgenError
from samplers import InitConfig, SamplerConfig, StopConfig, fit_initializer, sample
from samplers.config import RunOptions
from samplers.initializers import local_pca
from samplers.initializers.base import class_pixels


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTGEN_CACHE", str(tmp_path / "cache"))


def _write_folder(root, *, classes=("1", "207"), train=3, test=1, size=(224, 224), seed=0):
    from PIL import Image

    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", test)):
        for cls in classes:
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return root


@pytest.fixture
def folder(tmp_path):
    return _write_folder(tmp_path / "imagenet-2")


@pytest.fixture
def reads(monkeypatch):
    """Every image file decoded by robustgen.kernel.data, in order."""
    seen = []
    original = folders_module.decode_image

    def counting(path, source):
        seen.append(path)
        return original(path, source)

    monkeypatch.setattr(folders_module, "decode_image", counting)
    return seen


class TinyNet(nn.Module):
    """[0, 1] images -> logits with `features`/`head`, cheap at 224x224 (4x4 average pooling then linear)."""

    def __init__(self, num_classes=2, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.body = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(48, 16), nn.Tanh())
        self.head = nn.Linear(16, num_classes)
        self.feature_dim = 16

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


# --------------------------------------------------------------------------- class_images and the lazy folder


def test_class_images_on_an_in_memory_dataset_is_the_old_indexing(digits):
    for cls in range(digits.num_classes):
        assert np.array_equal(digits.class_images(cls), digits.x_train[digits.y_train == cls])
        assert np.array_equal(digits.class_images(cls, "test"), digits.x_test[digits.y_test == cls])
        old = digits.x_train[digits.y_train == cls]
        old = np.ascontiguousarray(old.transpose(0, 3, 1, 2).reshape(len(old), -1), dtype=np.float32) / np.float32(255.0)
        assert np.array_equal(class_pixels(digits, cls), old)


def test_lazy_folder_reads_nothing_up_front_then_one_class(folder, reads):
    lazy = load_dataset(f"folder:{folder}")
    assert isinstance(lazy, LazyImageFolder) and reads == []
    assert lazy.image_shape == (3, 224, 224) and lazy.classes == ("1", "207") and lazy.class_index(1) == 1
    assert lazy.y_train.tolist() == [0, 0, 0, 1, 1, 1] and lazy.y_test.tolist() == [0, 1]
    fingerprint = lazy.fingerprint()
    assert reads == []  # the listing, not the pixels

    images = lazy.class_images(1)
    assert images.shape == (3, 224, 224, 3) and images.dtype == np.uint8
    assert [p.parent.name for p in reads] == ["207"] * 3 and lazy.images_read == 3
    eager = load_dataset(f"folder:{folder}", lazy=False)
    assert isinstance(eager, ImageDataset)
    for cls in range(2):
        for split in ("train", "test"):
            assert np.array_equal(lazy.class_images(cls, split), eager.class_images(cls, split))
    x, y = lazy.split("test")  # a small split may still be read whole (eval on a few classes)
    assert np.array_equal(x, eager.x_test) and np.array_equal(y, eager.y_test)

    (folder / "train" / "1" / "0.png").touch()
    import os

    os.utime(folder / "train" / "1" / "0.png", ns=(1, 1))
    assert load_dataset(f"folder:{folder}").fingerprint() != fingerprint  # a changed file changes the fingerprint


def test_lazy_folder_refuses_a_split_too_large_with_one_line(folder, monkeypatch):
    monkeypatch.setattr(folders_module, "WHOLE_SPLIT_BYTES", 1000)
    lazy = load_dataset(f"folder:{folder}")
    for access in (lambda: lazy.split("train"), lambda: lazy.x_train, lambda: lazy.x_test):
        with pytest.raises(RobustgenError, match="read one class at a time") as info:
            access()
        assert "\n" not in str(info.value) and "robustgen sample" in str(info.value)
    assert lazy.images_read == 0


def test_lazy_folder_sizes_grayscale_and_relabelling(tmp_path):
    from PIL import Image

    root = _write_folder(tmp_path / "f", classes=("a", "b"), train=1, test=1, size=(224, 224))
    Image.fromarray(np.full((300, 400, 3), 7, dtype=np.uint8)).save(root / "train" / "a" / "wide.png")
    Image.fromarray(np.full((224, 224), 9, dtype=np.uint8)).save(root / "train" / "b" / "gray.png")
    with pytest.raises(RobustgenError, match="resize all images to one size"):
        load_dataset(f"folder:{root}").class_images(0)
    lazy = load_dataset(f"folder:{root}", image_size=(224, 224))
    a, b = lazy.class_images(0), lazy.class_images(1)
    assert a.shape == (2, 224, 224, 3) and (a[1] == 7).all()  # 400x300 -> shorter side 256 -> centre 224x224
    assert b.shape == (2, 224, 224, 3) and (b[1] == 9).all()  # a grayscale file in a colour folder: three equal channels

    moved = lazy.relabel(np.array([5, 2]), tuple(str(i) for i in range(8)))
    assert moved.num_classes == 8 and sorted(set(moved.y_train.tolist())) == [2, 5]
    assert np.array_equal(moved.class_images(5), a) and moved.class_images(0).shape == (0, 224, 224, 3)
    small = _write_folder(tmp_path / "small", classes=("a",), train=2, test=1, size=(32, 32))
    assert isinstance(load_dataset(f"folder:{small}", image_size=(224, 224)), ImageDataset)  # never upscaled into a lazy folder


# --------------------------------------------------------------------------- initialisers at 224x224


def test_automatic_choices_depend_on_the_image_size():
    auto = InitConfig()
    assert auto.neighbour_space == "auto" and auto.resolution is None
    small, large = auto.resolved((3, 32, 32)), auto.resolved((3, 224, 224))
    assert (small.neighbour_space, small.resolution) == ("pixel", None)  # CIFAR, digits, Tiny ImageNet: unchanged
    assert auto.resolved((3, 64, 64)).neighbour_space == "pixel"
    assert (large.neighbour_space, large.resolution) == ("features", 56)  # Santurkar et al.: 224 / 4
    assert auto.resolved((3, 224, 224), model_has_features=False).neighbour_space == "pixel"
    assert InitConfig(neighbour_space="pixel", resolution=500).resolved((3, 224, 224)).resolution == 224
    assert InitConfig(kind="gaussian", resolution=56).fit_options() == {"ridge": 1e-3, "resolution": 56}
    assert InitConfig(kind="gaussian").resolved((3, 32, 32)).fit_options() == {"ridge": 1e-3}  # CIFAR cache keys unchanged
    with pytest.raises(RobustgenError, match="--resolution 0"):
        InitConfig(resolution=0).validate()


def test_gaussian_at_reduced_resolution_is_blockwise_and_fits_the_downsampled_class(folder):
    lazy = load_dataset(f"folder:{folder}")
    init = fit_initializer(InitConfig(kind="gaussian"), lazy, 0, cache_dir=False)
    assert init.fit_shape == (3, 56, 56) and init.factor.shape[1] == 3 * 56 * 56
    x = init.draw(8, torch.Generator().manual_seed(0))
    assert x.shape == (8, 3, 224, 224) and 0 <= float(x.min()) and float(x.max()) <= 1
    blocks = x.view(8, 3, 56, 4, 56, 4)
    assert torch.equal(blocks, blocks[:, :, :, :1, :, :1].expand_as(blocks))  # nearest upsampling: constant 4x4 blocks
    images = torch.from_numpy(lazy.class_images(0)).permute(0, 3, 1, 2).double() / 255
    block_means = images.view(3, 3, 56, 4, 56, 4).mean((3, 5)).flatten(1).mean(0)
    assert torch.allclose(init.mean.double(), block_means, atol=1e-5)


def test_local_pca_keeps_uint8_images_and_chunked_draws_are_the_same(folder, monkeypatch):
    lazy = load_dataset(f"folder:{folder}")
    model = TinyNet()
    init = fit_initializer(InitConfig(), lazy, 1, model=model, cache_dir=False)  # auto: feature neighbours at 224x224
    assert init.images.dtype == torch.uint8 and init.images.shape == (3, 224, 224, 3)
    whole = init.draw(20, torch.Generator().manual_seed(1))
    monkeypatch.setattr(local_pca, "DRAW_VALUES", 3 * 150528 * 9)  # 9 draws per chunk: 20 rows -> 9 + 11
    assert local_pca._chunks(20, 9) == [slice(0, 9), slice(9, 20)]
    assert torch.equal(init.draw(20, torch.Generator().manual_seed(1)), whole)
    assert whole.shape == (20, 3, 224, 224)


def test_sample_builds_each_class_when_its_chains_start_and_matches_an_in_memory_folder(folder, reads):
    lazy = load_dataset(f"folder:{folder}")
    model = TinyNet()
    options = dict(classes=[0, 1], run=RunOptions(n=6, batch_size=2, precision="fp32"), sampler=SamplerConfig(steps=2), stop=StopConfig(),
                   cache_dir=False, progress=False)
    result = sample(model, lazy, **options)
    decoded = [(p.parent.parent.name, p.parent.name) for p in reads]
    assert all(split == "train" for split, _ in decoded)  # the test split is never read
    per_class = [cls for i, (_, cls) in enumerate(decoded) if i % 3 == 0]  # 3 files per class read
    # up front: class 0 fit + reference energies, class 1 fit + reference; then class 0 built, class 1 built: once each
    assert per_class == ["1", "1", "207", "207", "1", "207"]
    eager = sample(model, load_dataset(f"folder:{folder}", lazy=False), **options)
    assert np.array_equal(result.images, eager.images) and np.array_equal(result.labels, eager.labels)


def test_fitted_arrays_over_the_memory_budget_are_reloaded_per_class_with_the_same_images(folder, tmp_path, monkeypatch):
    import samplers.sampling as sample_module

    lazy, model = load_dataset(f"folder:{folder}"), TinyNet()
    options = dict(classes=[1, 0], run=RunOptions(n=5, batch_size=2, precision="fp32"), init=InitConfig(kind="gaussian"),
                   sampler=SamplerConfig(steps=1), stop=StopConfig(rule="fixed"), cache_dir=tmp_path / "c", progress=False)
    held = sample(model, lazy, **options)
    reloaded = []
    original = sample_module.fitted_arrays
    monkeypatch.setattr(sample_module, "HOLD_FITTED_BYTES", 0)
    monkeypatch.setattr(sample_module, "fitted_arrays", lambda *a, **kw: reloaded.append(a[2]) or original(*a, **kw))
    spilled = sample(model, lazy, **options)
    assert reloaded == [1, 0, 1, 0]  # fitted (from the cache) up front, then reloaded when each class's chains start
    assert np.array_equal(held.images, spilled.images)


# --------------------------------------------------------------------------- through the CLI, with a torchvision state dict


@pytest.mark.slow
def test_cli_samples_224_images_from_a_lazy_folder_with_local_pca_and_gaussian(folder, tmp_path, reads):
    import torchvision

    torch.manual_seed(0)
    weights = tmp_path / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    spec = f"torchvision:resnet18={weights}"

    def run(*args):
        result = CliRunner().invoke(main, ["sample", "--checkpoint", spec, "--data", f"folder:{folder}", "--steps", 2, "-n", 4, "--json", *map(str, args)])
        assert result.exit_code == 0, result.output
        return json.loads(result.output[result.output.index("{"):])

    local = tmp_path / "local"
    assert run("--class", "207", "--out", local)["images"] == 4
    meta = json.loads((local / "meta.json").read_text())
    assert meta["init"]["kind"] == "local-pca" and meta["init"]["neighbour_space"] == "features"  # auto, recorded resolved
    with np.load(local / "samples.npz") as z:
        assert z["images"].shape == (4, 224, 224, 3) and set(z["labels"].tolist()) == {207}
    assert reads and all(p.parent.name == "207" and p.parent.parent.name == "train" for p in reads)  # one class, never a split

    gauss = tmp_path / "gauss"
    assert run("--init", "gaussian", "--out", gauss)["classes"] == [1, 207]
    assert json.loads((gauss / "meta.json").read_text())["init"]["resolution"] == 56
    with np.load(gauss / "samples.npz") as z:
        assert z["images"].shape == (4, 224, 224, 3)
    assert all(p.parent.parent.name == "train" for p in reads)

    bad = CliRunner().invoke(main, ["sample", "--checkpoint", spec, "--data", f"folder:{folder}", "--init", "gaussian", "--resolution", "0", "--out", tmp_path / "x"])
    assert bad.exit_code == 1 and bad.output.strip().splitlines() == ["Error: --resolution 0 must be at least 1 pixel (or omitted: automatic)"]
