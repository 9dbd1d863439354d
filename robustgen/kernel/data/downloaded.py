"""The datasets robustgen downloads: CIFAR-10/100 (python batches), SVHN (.mat), Tiny ImageNet-200 (JPEG folders).

Readers parse the original file formats themselves so they can be tested offline on
small files in the real format; fetching uses torchvision's downloader. Third-party files
are data, never code: CIFAR batches go through an unpickler that only builds dicts, lists,
strings, numbers and plain numpy arrays; files found on disk are checked against their
published MD5s first (`verify=True`, the default).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Callable

import numpy as np

from robustgen.kernel.data import ImageDataset, register_dataset, with_channels
from robustgen.kernel.data.folders import read_labelled
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import atomic_path, download_dir, md5_file

_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)

_ARCHIVES = {
    "cifar10": ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    "cifar100": ("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"),
    "svhn-train": ("http://ufldl.stanford.edu/housenumbers/train_32x32.mat", "e26dedcc434d2e4c54c9b2d4a06d8373"),
    "svhn-test": ("http://ufldl.stanford.edu/housenumbers/test_32x32.mat", "eb5a983be6a315427106f1b164d9cef3"),
    "tiny-imagenet": ("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de"),
}

# MD5 of every file the readers open, as published with the original releases. Copied from
# torchvision 0.29 (torchvision/datasets/cifar.py: CIFAR10/CIFAR100 train_list, test_list, meta;
# torchvision/datasets/svhn.py: SVHN.split_list). Tiny ImageNet publishes only the archive's MD5.
FILE_MD5 = {
    "cifar10": {
        "data_batch_1": "c99cafc152244af753f735de768cd75f",
        "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
        "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
        "data_batch_4": "634d18415352ddfa80567beed471001a",
        "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
        "test_batch": "40351d587109b95175f43aff81a1287e",
        "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    },
    "cifar100": {
        "train": "16019d7e3df5f24257cddd939b257f8d",
        "test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
        "meta": "7973b15100ade9c7d40fb424638fde48",
    },
    "svhn": {
        "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
        "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
    },
}


def _fetch(key: str, *, root: Path, download: bool, expected: Path, extract: bool) -> None:
    """Download (and extract) one archive into `root`, or explain what to put where."""
    if expected.exists():
        return
    url, md5 = _ARCHIVES[key]
    where = f"put the files from {url} {'(extracted) ' if extract else ''}so that {expected} exists, or pass --data-root"
    if not download:
        raise RobustgenError(f"{key}: {expected} not found and downloads are off: {where}")
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    try:
        with download_dir(root):  # a failed download leaves no empty --data-root behind
            if extract:
                download_and_extract_archive(url, download_root=str(root), md5=md5)
            else:
                download_url(url, root=str(root), md5=md5)
    except RobustgenError:  # the root is not writable
        raise
    except Exception as exc:  # urllib, ssl, socket and md5 errors all mean the same to the user
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise RobustgenError(f"{key}: could not download ({reason}); on a machine without internet {where}") from None
    if not expected.exists():
        raise RobustgenError(f"{key}: downloaded, but {expected} is still missing: {where}")


def _check_files(dataset: str, folder: Path, names: list[str], *, verify: bool) -> list[Path]:
    """The files a reader opens: all present, and (verify) byte for byte the published ones."""
    paths = [folder / name for name in names]
    for path in paths:
        if not path.is_file():
            raise RobustgenError(
                f"{dataset}: {path} is missing: the extracted dataset in {folder} is incomplete; delete {folder} so robustgen downloads it again"
            )
    for path in paths if verify else []:
        expected = FILE_MD5[dataset][path.name]
        actual = md5_file(path)
        if actual != expected:
            raise RobustgenError(
                f"{dataset}: {path} is not the published file (md5 {actual}, expected {expected}): "
                f"delete {folder} so robustgen downloads it again (for data of your own, convert it to npz:PATH)"
            )
    return paths


class _RefusedPickle(pickle.UnpicklingError):
    pass


def _pickle_globals() -> dict[tuple[str, str], Callable]:
    """The only globals a CIFAR python batch references (numpy arrays), each as the real numpy object.

    The official files were written by Python 2 cPickle and name `numpy.core.multiarray._reconstruct`,
    `numpy.ndarray` and `numpy.dtype`; numpy 2 writes `numpy._core.multiarray`. Numpy scalars
    (`scalar`) and `_codecs.encode` (how Python 3 pickles bytes at protocol 2) appear in batches
    re-written by Python 3; both are allowed for plain numeric data only.
    """
    try:
        from numpy._core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct, scalar

    def plain_dtype(*args):
        dtype = np.dtype(*args)
        if dtype.hasobject:
            raise _RefusedPickle("an object dtype")
        return dtype

    def plain_scalar(dtype, *data):
        if not isinstance(dtype, np.dtype) or dtype.hasobject:
            raise _RefusedPickle("an object scalar")
        return scalar(dtype, *data)

    def latin1_encode(text, encoding="utf-8"):
        if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
            raise _RefusedPickle(f"_codecs.encode with {encoding!r}")
        return text.encode("latin1")

    allowed = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): plain_dtype, ("_codecs", "encode"): latin1_encode}
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = _reconstruct
        allowed[(module, "scalar")] = plain_scalar
    return allowed


class _DataUnpickler(pickle.Unpickler):
    """Builds only dicts, lists, tuples, strings, bytes, numbers and plain numpy arrays; refuses every other global."""

    _allowed = None

    def find_class(self, module, name):
        if _DataUnpickler._allowed is None:
            _DataUnpickler._allowed = _pickle_globals()
        found = self._allowed.get((module, name))
        if found is None:
            raise _RefusedPickle(f"{module}.{name}")
        return found

    def persistent_load(self, pid):
        raise _RefusedPickle("a persistent id")


def _unpickle(path: Path, dataset: str) -> dict:
    """Read one CIFAR python batch safely (encoding latin1, as the Python 2 files need)."""
    folder = path.parent
    try:
        with open(path, "rb") as fh:
            entry = _DataUnpickler(fh, encoding="latin1").load()
    except _RefusedPickle as exc:
        raise RobustgenError(
            f"{dataset}: {path} asks to build {exc}, which a CIFAR batch never holds (it may be crafted to run code), "
            f"so robustgen refuses it: delete {folder} and download the dataset again"
        ) from None
    except Exception as exc:  # truncated or foreign bytes: EOFError, UnpicklingError, ValueError, ...
        reason = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise RobustgenError(f"{dataset}: cannot read {path} ({reason}): the file is damaged; delete {folder} so robustgen downloads it again") from None
    if not isinstance(entry, dict):
        raise RobustgenError(f"{dataset}: {path} holds a {type(entry).__name__}, not a CIFAR batch dict: delete {folder} so robustgen downloads it again")
    return entry


def _cifar_batches(files: list[Path], label_key: str, dataset: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in files:
        entry = _unpickle(path, dataset)
        data, labels = entry.get("data"), entry.get(label_key)
        damaged = f"delete {path.parent} so robustgen downloads it again"
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            raise RobustgenError(f"{dataset}: {path} has no uint8 'data' array of 3072-byte rows: {damaged}")
        if not isinstance(labels, (list, np.ndarray)) or len(labels) != len(data):
            raise RobustgenError(f"{dataset}: {path} has no '{label_key}' list with one label per image: {damaged}")
        y = np.asarray(labels)
        if y.dtype.kind not in "iu" or (len(y) and (y.min() < 0 or y.max() >= num_classes)):
            raise RobustgenError(f"{dataset}: {path} holds labels outside 0..{num_classes - 1}: {damaged}")
        xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(y.astype(np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


def _class_names(path: Path, key: str, dataset: str, count: int) -> tuple[str, ...]:
    names = _unpickle(path, dataset).get(key)
    if not isinstance(names, list) or len(names) != count or not all(isinstance(n, str) for n in names):
        raise RobustgenError(f"{dataset}: {path} has no list of {count} class names under '{key}': delete {path.parent} so robustgen downloads it again")
    return tuple(names)


_CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]


@register_dataset("cifar10")
def _load_cifar10(*, root: Path, download: bool, verify: bool, channels: int | None) -> ImageDataset:
    base = root / "cifar-10-batches-py"
    _fetch("cifar10", root=root, download=download, expected=base / "batches.meta", extract=True)
    *batches, test, meta = _check_files("cifar10", base, _CIFAR10_FILES, verify=verify)
    classes = _class_names(meta, "label_names", "cifar10", 10)
    x_tr, y_tr = _cifar_batches(batches, "labels", "cifar10", 10)
    x_te, y_te = _cifar_batches([test], "labels", "cifar10", 10)
    return with_channels(ImageDataset("cifar10", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True, mean=_CIFAR_MEAN, std=_CIFAR_STD), channels)


@register_dataset("cifar100")
def _load_cifar100(*, root: Path, download: bool, verify: bool, channels: int | None) -> ImageDataset:
    base = root / "cifar-100-python"
    _fetch("cifar100", root=root, download=download, expected=base / "meta", extract=True)
    train, test, meta = _check_files("cifar100", base, ["train", "test", "meta"], verify=verify)
    classes = _class_names(meta, "fine_label_names", "cifar100", 100)
    x_tr, y_tr = _cifar_batches([train], "fine_labels", "cifar100", 100)
    x_te, y_te = _cifar_batches([test], "fine_labels", "cifar100", 100)
    dataset = ImageDataset("cifar100", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
    return with_channels(dataset, channels)


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """X (32, 32, 3, N) uint8 and y (N, 1) labels 1..10 from one SVHN .mat file.

    scipy.io.loadmat parses MAT v4/v5 itself (no pickle, no eval: MATLAB objects and
    function handles come back as inert arrays) and refuses v7.3/HDF5; only the two
    variables are read, and their dtypes and shapes are checked.
    """
    import scipy.io

    damaged = f"delete {path} so robustgen downloads it again"
    try:
        mat = scipy.io.loadmat(str(path), variable_names=["X", "y"], squeeze_me=False)
    except Exception as exc:  # MatReadError, ValueError, NotImplementedError (v7.3), zlib errors, ...
        reason = str(exc).strip().splitlines()[0][:80] if str(exc).strip() else type(exc).__name__
        raise RobustgenError(f"svhn: cannot read {path} as a MATLAB file ({reason}): {damaged}") from None
    x, y = mat.get("X"), mat.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise RobustgenError(f"svhn: {path} has no uint8 X array shaped (32, 32, 3, N): {damaged}")
    if not isinstance(y, np.ndarray) or y.dtype.kind not in "iuf" or y.size != x.shape[3]:
        raise RobustgenError(f"svhn: {path} has no numeric y array with one label per image: {damaged}")
    y = y.reshape(-1)
    if not np.isin(y, np.arange(1, 11)).all():
        raise RobustgenError(f"svhn: {path} holds labels outside 1..10: {damaged}")
    return np.ascontiguousarray(x.transpose(3, 0, 1, 2)), y.astype(np.int64)


@register_dataset("svhn")
def _load_svhn(*, root: Path, download: bool, verify: bool, channels: int | None) -> ImageDataset:
    arrays = {}
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        _fetch(f"svhn-{split}", root=root, download=download, expected=path, extract=False)
        _check_files("svhn", root, [path.name], verify=verify)
        x, y = _read_svhn_mat(path)
        arrays[split] = (x, np.where(y == 10, 0, y))  # SVHN stores digit 0 as label 10
    dataset = ImageDataset(
        "svhn", *arrays["train"], *arrays["test"], classes=tuple(str(i) for i in range(10)),
        crop_padding=4, flip=False, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    )
    return with_channels(dataset, channels)


@register_dataset("tiny-imagenet")
def _load_tiny_imagenet(*, root: Path, download: bool, verify: bool, channels: int | None) -> ImageDataset:
    """Tiny ImageNet-200 in its distributed layout; decoded once and cached as npz.

    train/<wnid>/images/*.JPEG, val/images/*.JPEG with val/val_annotations.txt (the test split),
    wnids.txt (the classes, in order) and words.txt (their names). Its few grayscale JPEGs are
    converted to RGB, the channel count of most of its images (`channels` overrides), and counted
    in `converted`. Only the archive has a published MD5 (checked on download); the JPEGs are
    decoded by `read_images` (plain raster decoders, pixel limit) and the cache is read with
    allow_pickle=False and checked, and rebuilt if it does not fit (another `channels` too).
    """
    base = root / "tiny-imagenet-200"
    _fetch("tiny-imagenet", root=root, download=download, expected=base / "wnids.txt", extract=True)
    wnids = [w.strip() for w in (base / "wnids.txt").read_text(errors="replace").split() if w.strip()]
    if not wnids:
        raise RobustgenError(f"tiny-imagenet: {base / 'wnids.txt'} lists no classes: delete {base} so robustgen downloads it again")
    cache = base / "robustgen-cache.npz"
    cached = _read_tiny_cache(cache, len(wnids), channels)
    if cached is None:
        train, val = _tiny_listing(base, wnids)
        x_tr, y_tr, converted = read_labelled(train, "tiny-imagenet", channels=channels)
        x_te, y_te, converted_test = read_labelled(val, "tiny-imagenet", channels=x_tr.shape[-1])
        cached = (x_tr, y_tr, x_te, y_te, converted + converted_test)
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te, converted=np.int64(cached[4]),
                         requested=np.int64(channels or 0))
    *arrays, converted = cached
    return ImageDataset("tiny-imagenet", *arrays, _tiny_classes(base, wnids), crop_padding=4, flip=True, converted=int(converted))


def _tiny_listing(base: Path, wnids: list[str]) -> tuple[list[tuple[Path, int]], list[tuple[Path, int]]]:
    """(train, val) lists of (JPEG path, class index) in the distributed layout."""
    redownload = f"delete {base} so robustgen downloads it again"
    index = {w: i for i, w in enumerate(wnids)}
    train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
    annotations = base / "val" / "val_annotations.txt"
    if not annotations.is_file():
        raise RobustgenError(f"tiny-imagenet: {annotations} is missing: {redownload}")
    val = []
    for line in annotations.read_text(errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            if parts[1] not in index:
                raise RobustgenError(f"tiny-imagenet: {annotations} names class {parts[1]!r}, which wnids.txt does not list: {redownload}")
            val.append((base / "val" / "images" / parts[0], index[parts[1]]))
    return train, val


def _tiny_classes(base: Path, wnids: list[str]) -> tuple[str, ...]:
    """Class names: the first name words.txt gives each wnid (the wnid itself where it gives none)."""
    words = {}
    if (base / "words.txt").is_file():
        for line in (base / "words.txt").read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    return tuple(words.get(w, w) for w in wnids)


def _read_tiny_cache(cache: Path, num_classes: int, channels: int | None) -> tuple | None:
    """(x_train, y_train, x_test, y_test, converted) from robustgen's own cache, or None if missing, not what
    robustgen writes, or decoded for another `channels` request."""
    if not cache.is_file():
        return None
    from robustgen.kernel.cache import read_npz

    found, _ = read_npz(cache)  # the one safe read: damaged, foreign or pickled reads as absent (rebuilt from the JPEGs)
    if found is None or any(k not in found for k in ("x_train", "y_train", "x_test", "y_test")):
        return None
    arrays = tuple(found[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    converted = int(found["converted"]) if "converted" in found else None
    requested = int(found["requested"]) if "requested" in found else None
    x_tr, y_tr, x_te, y_te = arrays
    same_request = requested == (channels or 0) or (requested == 0 and channels == x_tr.shape[-1])  # the majority was what is asked for
    if converted is None or not same_request:
        return None  # written before conversions were counted, or for another --channels
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),) or not len(x):
            return None
        if y.min() < 0 or y.max() >= num_classes:
            return None
    if x_tr.shape[1:] != x_te.shape[1:] or x_tr.shape[-1] not in (1, 3):
        return None
    return (*arrays, converted)
