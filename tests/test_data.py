"""Dataset registry: the embedded default, real file formats written small, offline errors."""

import pickle
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch

from robustgen.kernel.data import augment, dataset_names, load_dataset, to_float, to_uint8
from robustgen.kernel.errors import RobustgenError

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
    data = load_dataset("cifar10", root=tmp_path, download=False, verify=False)  # made-up files: not the published MD5s
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
    data = load_dataset("svhn", root=tmp_path, download=False, verify=False)
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


# --------------------------------------------------------------------------- third-party files are checked, never trusted


def test_cifar10_files_on_disk_must_match_the_published_md5s(tmp_path):
    _write_cifar10(tmp_path, np.random.default_rng(0))
    with pytest.raises(RobustgenError, match=r"data_batch_1 is not the published file \(md5 .*expected c99cafc1.*delete .*cifar-10-batches-py"):
        load_dataset("cifar10", root=tmp_path, download=False)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(RobustgenError, match="data_batch_3 is missing: .*delete"):
        load_dataset("cifar10", root=tmp_path, download=False, verify=False)


class _Py2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 `str` (BINSTRING), as the cPickle that made the CIFAR files did."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_bytes(self, obj):
        self.write(pickle.BINSTRING + len(obj).to_bytes(4, "little") + obj)
        self.memoize(obj)

    dispatch[bytes] = save_bytes


def _py2_pickle(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")  # numpy 1 module path


def test_python2_cifar_batches_load_through_the_restricted_unpickler(tmp_path):
    import pickletools

    rng = np.random.default_rng(1)
    base = tmp_path / "cifar-10-batches-py"
    base.mkdir()
    names = [f"class{i}" for i in range(10)]
    (base / "batches.meta").write_bytes(_py2_pickle({"label_names": names, "num_cases_per_batch": 4, "num_vis": 3072}))
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        entry = {"batch_label": name, "labels": [int(v) for v in rng.integers(0, 10, 4)], "filenames": ["a.png"] * 4,
                 "data": rng.integers(0, 256, (4, 3072), dtype=np.uint8)}
        (base / name).write_bytes(_py2_pickle(entry))
    raw = (base / "data_batch_1").read_bytes()
    found = {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}
    assert found == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}  # what the real batches name
    data = load_dataset("cifar10", root=tmp_path, download=False, verify=False)
    assert data.x_train.shape == (20, 32, 32, 3) and data.classes[9] == "class9"


def test_cifar100_reader_and_a_refused_global(tmp_path):
    rng = np.random.default_rng(2)
    base = tmp_path / "cifar-100-python"
    base.mkdir()
    (base / "meta").write_bytes(_py2_pickle({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": ["c"] * 20}))
    for split, n in (("train", 5), ("test", 3)):
        entry = {"fine_labels": [int(v) for v in rng.integers(0, 100, n)], "coarse_labels": [0] * n,
                 "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8)}
        (base / split).write_bytes(_py2_pickle(entry))
    data = load_dataset("cifar100", root=tmp_path, download=False, verify=False)
    assert data.num_classes == 100 and data.x_test.shape == (3, 32, 32, 3)
    (base / "test").write_bytes(pickle.dumps({"data": np.zeros(3, dtype=object)}, protocol=2))  # object array
    with pytest.raises(RobustgenError, match="asks to build an object dtype.*refuses it"):
        load_dataset("cifar100", root=tmp_path, download=False, verify=False)
    (base / "test").write_bytes(b"\x80\x02}q\x00(X\x04")  # truncated
    with pytest.raises(RobustgenError, match="cannot read .*test .*damaged"):
        load_dataset("cifar100", root=tmp_path, download=False, verify=False)


def test_svhn_files_are_checked(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    for split in ("train", "test"):
        scipy_io.savemat(tmp_path / f"{split}_32x32.mat", {"X": np.zeros((32, 32, 3, 2), dtype=np.float64), "y": np.array([[1], [2]])})
    with pytest.raises(RobustgenError, match="train_32x32.mat is not the published file"):
        load_dataset("svhn", root=tmp_path, download=False)
    with pytest.raises(RobustgenError, match="no uint8 X array"):
        load_dataset("svhn", root=tmp_path, download=False, verify=False)
    (tmp_path / "train_32x32.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(RobustgenError, match="cannot read .* as a MATLAB file"):
        load_dataset("svhn", root=tmp_path, download=False, verify=False)


def test_tiny_imagenet_cache_that_does_not_fit_is_rebuilt(tmp_path):
    test_tiny_imagenet_reader_follows_the_distributed_layout(tmp_path)
    cache = tmp_path / "tiny-imagenet-200" / "robustgen-cache.npz"
    expected = load_dataset("tiny-imagenet", root=tmp_path, download=False).fingerprint()
    np.savez(cache, x_train=np.zeros(2, dtype=object), y_train=np.zeros(2), x_test=np.zeros(2), y_test=np.zeros(2))
    assert load_dataset("tiny-imagenet", root=tmp_path, download=False).fingerprint() == expected
    cache.write_bytes(b"PK\x03\x04 truncated")
    assert load_dataset("tiny-imagenet", root=tmp_path, download=False).fingerprint() == expected


# --------------------------------------------------------------------------- the one image reader


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IEND", b""))


def test_read_images_handles_grayscale_modes_like_the_scorer(tmp_path):
    from PIL import Image

    from robustgen.kernel.data import read_images

    gray = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(gray, "L").save(tmp_path / "l.png")
    Image.fromarray(gray, "L").convert("LA").save(tmp_path / "la.png")
    Image.fromarray(gray, "L").convert("P").save(tmp_path / "p.png")  # palette of grays
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "i16.png")  # 16-bit PNG: scaled, not clipped
    stack, converted = read_images([tmp_path / n for n in ("l.png", "la.png", "p.png", "i16.png")], source="test")
    assert stack.shape == (4, 4, 4, 1) and converted == 0
    assert all(np.array_equal(img[..., 0], gray) for img in stack)
    Image.new("RGBA", (4, 4), (10, 20, 30, 40)).save(tmp_path / "rgba.png")
    Image.new("RGB", (4, 4), (200, 0, 0)).convert("P").save(tmp_path / "color-p.png")
    color, converted = read_images([tmp_path / "rgba.png", tmp_path / "color-p.png"], source="test")
    assert color.shape == (2, 4, 4, 3) and tuple(color[0, 0, 0]) == (10, 20, 30) and converted == 0


def test_read_images_converts_the_minority_to_the_majority_channel_count(tmp_path):
    from PIL import Image

    from robustgen.kernel.data import read_images

    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, (4, 4), dtype=np.uint8)
    colour = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    for i in range(2):
        Image.fromarray(colour, "RGB").save(tmp_path / f"c{i}.png")
    paths = [tmp_path / n for n in ("c0.png", "g.png", "c1.png")]
    images, converted = read_images(paths, source="test")  # 2 colour vs 1 gray: RGB, the gray one repeated
    assert images.shape == (3, 4, 4, 3) and converted == 1
    assert np.array_equal(images[1], np.repeat(gray[..., None], 3, -1)) and np.array_equal(images[0], colour)
    images, converted = read_images(paths, source="test", channels=1)  # asked for: the colour ones become luminance, as Pillow's "L"
    assert images.shape == (3, 4, 4, 1) and converted == 2
    assert np.array_equal(images[0, ..., 0], np.asarray(Image.fromarray(colour).convert("L"))) and np.array_equal(images[1, ..., 0], gray)
    tie, converted = read_images(paths[:2], source="test")  # one of each: colour keeps what gray would lose
    assert tie.shape[-1] == 3 and converted == 1
    with pytest.raises(RobustgenError, match="--channels 2: use 1 .* or 3"):
        read_images(paths, source="test", channels=2)


def test_read_images_refuses_bombs_and_non_raster_formats(tmp_path):
    from robustgen.kernel.data import read_images

    _png_header_only(tmp_path / "big.png", 5000, 5000)  # above robustgen's limit, below Pillow's
    with pytest.raises(RobustgenError, match="5000x5000 pixels, larger than robustgen decodes.*resize it"):
        read_images([tmp_path / "big.png"], source="test")
    _png_header_only(tmp_path / "bomb.png", 50_000, 50_000)  # above Pillow's limit too
    with pytest.raises(RobustgenError, match="bomb.png claims a huge size, larger than robustgen decodes"):
        read_images([tmp_path / "bomb.png"], source="test")
    # EPS is decoded by running Ghostscript; content sniffing must not reach that plugin, whatever the suffix.
    (tmp_path / "eps.png").write_text("%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nshowpage\n")
    with pytest.raises(RobustgenError, match="eps.png is not a readable image"):
        read_images([tmp_path / "eps.png"], source="test")
    with pytest.raises(RobustgenError, match="no images found"):
        read_images([], source="test")


def test_npz_labels_accept_whole_floats_and_classes_allow_gaps(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "f.npz", x_train=x, y_train=np.array([0.0, 1.0, 2.0, 0.0, 1.0, 2.0]), x_test=x[:2], y_test=np.array([1.0, 2.0]))
    data = load_dataset(f"npz:{tmp_path / 'f.npz'}")
    assert data.y_train.dtype == np.int64 and data.y_train.tolist() == [0, 1, 2, 0, 1, 2] and data.num_classes == 3
    names = np.array([f"c{i}" for i in range(15)])
    np.savez(tmp_path / "g.npz", x_train=x, y_train=np.arange(5, 11), x_test=x[:2], y_test=np.array([14, 5]), classes=names)
    assert load_dataset(f"npz:{tmp_path / 'g.npz'}").num_classes == 15  # a classes array names the gaps
