"""Dataset registry: the embedded default, real file formats written small, offline errors."""

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from robustgen.data import augment, dataset_names, load_dataset, to_float, to_uint8
from robustgen.errors import RobustgenError

CIFAR_SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-subset.npz"


def test_digits_is_a_fixed_stratified_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert a.x_train.shape == (1437, 8, 8, 1) and a.x_test.shape == (360, 8, 8, 1)
    assert a.fingerprint() == b.fingerprint()
    assert np.bincount(a.y_test, minlength=10).min() >= 35  # every class in the test split
    assert a.x_train.max() == 255 and a.classes == tuple("0123456789")
    assert not a.flip  # digits are not mirror-symmetric


def _write_cifar10(root: Path, rng, per_batch=6):
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(base / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": names, "num_cases_per_batch": per_batch}, fh)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8), "labels": list(rng.integers(0, 10, per_batch))}
        with open(base / name, "wb") as fh:
            pickle.dump(entry, fh, protocol=2)
    return names


def test_cifar10_reader_parses_the_original_python_batches(tmp_path):
    rng = np.random.default_rng(0)
    names = _write_cifar10(tmp_path, rng)
    data = load_dataset("cifar10", root=tmp_path, download=False)
    assert data.x_train.shape == (30, 32, 32, 3) and data.x_test.shape == (6, 32, 32, 3)
    assert list(data.classes) == names and data.flip
    # Channel-planar rows become HWC: pixel (0, 0) of image 0 takes bytes 0, 1024, 2048.
    first = pickle.load(open(tmp_path / "cifar-10-batches-py" / "data_batch_1", "rb"), encoding="latin1")["data"][0]
    assert tuple(data.x_train[0, 0, 0]) == (first[0], first[1024], first[2048])


def test_svhn_reader_maps_label_10_to_digit_0(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    rng = np.random.default_rng(0)
    for split, n in (("train", 7), ("test", 3)):
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), "y": np.array([[10], [1], [2], [3], [4], [5], [6]][:n])})
    data = load_dataset("svhn", root=tmp_path, download=False)
    assert data.x_train.shape == (7, 32, 32, 3) and data.y_train[0] == 0 and data.y_train[1] == 1


def test_tiny_imagenet_reader_follows_the_distributed_layout(tmp_path):
    from PIL import Image

    base = tmp_path / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(wnids))
    (base / "words.txt").write_text("n01443537\tgoldfish, Carassius auratus\nn01629819\tEuropean fire salamander\n")
    lines = []
    for c, wnid in enumerate(wnids):
        (base / "train" / wnid / "images").mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (64, 64), (c * 100, i, 0)).save(base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
        Image.new("RGB", (64, 64), (c * 100, 0, 0)).save(base / "val" / "images" / f"val_{c}.JPEG")
        lines.append(f"val_{c}.JPEG\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines))
    data = load_dataset("tiny-imagenet", root=tmp_path, download=False)
    assert data.x_train.shape == (4, 64, 64, 3) and list(data.y_test) == [0, 1]
    assert data.classes == ("goldfish", "European fire salamander")
    assert (base / "robustgen-cache.npz").exists()  # decoded once, read from cache next time
    assert load_dataset("tiny-imagenet", root=tmp_path, download=False).fingerprint() == data.fingerprint()


def test_offline_download_failure_says_where_to_put_the_files(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    def no_network(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", no_network)
    with pytest.raises(RobustgenError, match=r"could not download .*cifar-10-batches-py/batches.meta.*--data-root"):
        load_dataset("cifar10", root=tmp_path)
    with pytest.raises(RobustgenError, match="downloads are off"):
        load_dataset("cifar100", root=tmp_path, download=False)


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(RobustgenError, match="unknown dataset 'cifar11'.*cifar10.*npz:PATH"):
        load_dataset("cifar11")
    assert "digits" in dataset_names()


def test_npz_dataset_and_its_errors(tmp_path):
    rng = np.random.default_rng(0)
    good = dict(x_train=rng.integers(0, 256, (10, 12, 12, 3), dtype=np.uint8), y_train=np.arange(10) % 3,
                x_test=rng.integers(0, 256, (4, 12, 12, 3), dtype=np.uint8), y_test=np.arange(4) % 3)
    np.savez(tmp_path / "good.npz", **good, classes=np.array(["a", "b", "c"]))
    data = load_dataset(f"npz:{tmp_path / 'good.npz'}")
    assert data.classes == ("a", "b", "c") and data.image_shape == (3, 12, 12)
    np.savez(tmp_path / "float.npz", **{**good, "x_train": good["x_train"] / 255.0})
    with pytest.raises(RobustgenError, match="store images as uint8"):
        load_dataset(f"npz:{tmp_path / 'float.npz'}")
    np.savez(tmp_path / "partial.npz", x_train=good["x_train"], y_train=good["y_train"])
    with pytest.raises(RobustgenError, match="missing arrays x_test, y_test"):
        load_dataset(f"npz:{tmp_path / 'partial.npz'}")
    with pytest.raises(RobustgenError, match="not found"):
        load_dataset(f"npz:{tmp_path / 'nope.npz'}")


def test_folder_dataset_and_its_errors(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for c in ("cat", "dog"):
            (tmp_path / "ok" / split / c).mkdir(parents=True)
            for i in range(2):
                Image.new("RGB", (10, 10), (i, 0, 0)).save(tmp_path / "ok" / split / c / f"{i}.png")
    data = load_dataset(f"folder:{tmp_path / 'ok'}")
    assert data.classes == ("cat", "dog") and data.x_test.shape == (4, 10, 10, 3)
    Image.new("RGB", (12, 10)).save(tmp_path / "ok" / "train" / "dog" / "big.png")
    with pytest.raises(RobustgenError, match="resize all images to one size"):
        load_dataset(f"folder:{tmp_path / 'ok'}")
    (tmp_path / "ok" / "train" / "dog" / "big.png").write_bytes(b"junk")
    with pytest.raises(RobustgenError, match="not a readable image"):
        load_dataset(f"folder:{tmp_path / 'ok'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RobustgenError, match="expected .*train"):
        load_dataset(f"folder:{tmp_path / 'empty'}")


@pytest.mark.skipif(not CIFAR_SUBSET.exists(), reason="CIFAR-10 subset not present (only on the build machine)")
def test_real_cifar10_subset_loads_through_npz():
    data = load_dataset(f"npz:{CIFAR_SUBSET}")
    assert data.x_train.shape == (5085, 32, 32, 3) and data.classes[3] == "cat"
    assert 0.4 < data.mean[0] < 0.55  # real CIFAR-10 statistics, not noise


def test_augment_keeps_pixels_and_shape():
    x = torch.rand(16, 3, 8, 8)
    out = augment(x, crop_padding=2, flip=True, generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    same = augment(x, crop_padding=0, flip=False)
    assert torch.equal(same, x)
    # With padding 0 and flips only, every image is itself or its mirror.
    flipped = augment(x, crop_padding=0, flip=True, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(f, o) or torch.equal(f, o.flip(2)) for f, o in zip(flipped, x))


def test_uint8_float_round_trip_is_exact():
    x = np.random.default_rng(0).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    assert np.array_equal(to_uint8(to_float(x)), x)
