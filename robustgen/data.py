"""Dataset registry: every dataset becomes uint8 NHWC arrays plus class names.

    load_dataset("digits")                       # scikit-learn's 8x8 digits, the embedded default
    load_dataset("cifar10", root="~/data")       # CIFAR-10 python batches (downloaded if missing)
    load_dataset("npz:path/data.npz")            # x_train y_train x_test y_test [classes]
    load_dataset("folder:path/imagefolder")      # train/ and test/ (or val/) class folders

    dataset.class_images(3)                      # uint8 NHWC training images of class 3 (both dataset types)

Images stay uint8 in memory (CIFAR-10 is 180 MB) and are turned into float
[0, 1] NCHW batches on the training device, where augmentation also runs
(random crop with zero padding, horizontal flip where it makes sense). Readers
parse the original file formats themselves (CIFAR pickles, SVHN .mat, Tiny
ImageNet folders) so they can be tested offline on small files in the real
format; fetching uses torchvision's downloader.

A `folder:` dataset of large images (more than 64x64x3 values each, e.g. an
ImageNet folder: 1.28M images of 224x224x3 would need 193 GB) is a
`LazyImageFolder`: only the file listing is read up front, and each class's
images are decoded when asked for (`class_images`), one class at a time. The
sampling path uses nothing else. Whole-split operations (`split()`, `x_train`:
evaluation, training) work while the split fits in `WHOLE_SPLIT_BYTES` and give
one line saying what to do otherwise.

Third-party files are data, never code: CIFAR batches go through an unpickler
that only builds dicts, lists, strings, numbers and plain numpy arrays; files
found on disk are checked against their published MD5s first (`verify=True`,
the default); .npz files are read with allow_pickle=False; images are decoded
only by Pillow's plain raster plugins, with a pixel limit.
"""

from __future__ import annotations

import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from robustgen.errors import RobustgenError
from robustgen.io import atomic_path, download_dir, md5_file, sha256_arrays

DEFAULT_ROOT = os.environ.get("ROBUSTGEN_DATA", str(Path("~/.cache/robustgen/data").expanduser()))


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """A labelled image dataset held in memory as uint8 NHWC arrays."""

    name: str  # registry spec it was loaded from, e.g. "cifar10" or "npz:/data/x.npz"
    x_train: np.ndarray  # (N, H, W, C) uint8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...]
    crop_padding: int  # pixels of zero padding for random-crop augmentation (0 = none)
    flip: bool  # random horizontal flips make sense for this data
    mean: tuple[float, ...] = field(default=())  # per-channel, in [0, 1] pixel units
    std: tuple[float, ...] = field(default=())

    def __post_init__(self):
        if not self.classes:
            raise RobustgenError(f"{self.name}: no classes: a dataset needs at least one class")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or x.dtype != np.uint8:
                raise RobustgenError(f"{self.name}: x_{split} must be uint8 images shaped (N, H, W, C), got {x.dtype} {x.shape}: store pixels as uint8 0..255")
            if len(x) == 0:
                raise RobustgenError(f"{self.name}: the {split} split holds no images: a dataset needs at least one train and one test image")
            if len(x) != len(y):
                raise RobustgenError(f"{self.name}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels: store one class index per image")
            if y.min() < 0 or y.max() >= len(self.classes):
                raise RobustgenError(
                    f"{self.name}: y_{split} holds labels {int(y.min())}..{int(y.max())} but there are {len(self.classes)} classes: labels must be class indices 0..{len(self.classes) - 1}"
                )
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise RobustgenError(
                f"{self.name}: train images are {self.x_train.shape[1:]} (H, W, C) but test images are {self.x_test.shape[1:]}: store both splits at one size and channel count"
            )
        if not self.mean:
            pixels = self.x_train.reshape(-1, self.x_train.shape[-1]).astype(np.float64) / 255.0
            object.__setattr__(self, "mean", tuple(float(v) for v in pixels.mean(0)))
            object.__setattr__(self, "std", tuple(float(max(v, 1e-3)) for v in pixels.std(0)))

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W), the shape the models see."""
        _, h, w, c = self.x_train.shape
        return (c, h, w)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        if split not in ("train", "test"):
            raise RobustgenError(f"unknown split {split!r}: use train or test")
        return getattr(self, f"x_{split}"), getattr(self, f"y_{split}")

    def fingerprint(self) -> str:
        """sha256 of all arrays: records exactly which data a run saw."""
        return sha256_arrays(self.x_train, self.y_train, self.x_test, self.y_test)

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by index ("3", 3) or by name ("cat")."""
        return _class_index(self, name_or_index)

    def class_images(self, cls: int, split: str = "train") -> np.ndarray:
        """uint8 NHWC images of class `cls` in `split`, in dataset order (the rows of x_<split> labelled cls)."""
        x, y = self.split(split)
        return x[y == cls]


def _class_index(dataset, name_or_index: str | int) -> int:
    if isinstance(name_or_index, int) or str(name_or_index).lstrip("-").isdigit():
        index = int(name_or_index)
        if not 0 <= index < dataset.num_classes:
            raise RobustgenError(f"class {index} is out of range: {dataset.name} has classes 0..{dataset.num_classes - 1}")
        return index
    if name_or_index in dataset.classes:
        return dataset.classes.index(name_or_index)
    shown = ", ".join(dataset.classes[:20]) + (f", ... ({dataset.num_classes} classes)" if dataset.num_classes > 20 else "")
    raise RobustgenError(f"unknown class {name_or_index!r}: {dataset.name} has {shown}")


# --------------------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[..., ImageDataset]] = {}


def register_dataset(name: str):
    def decorate(loader):
        _LOADERS[name] = loader
        return loader

    return decorate


def dataset_names() -> list[str]:
    return sorted(_LOADERS) + ["npz:PATH", "folder:PATH"]


def load_dataset(
    spec: str,
    *,
    root: str | os.PathLike | None = None,
    download: bool = True,
    verify: bool = True,
    image_size: tuple[int, int] | None = None,
    lazy: bool | None = None,
) -> ImageDataset | LazyImageFolder:
    """Load a dataset by registry name, `npz:PATH` or `folder:PATH`.

    verify: check downloaded files found under `root` against their published
    MD5s before reading them (CIFAR-10/100, SVHN). Turn it off only for files you
    made yourself in the original format (tests do); anything else is refused.
    folder: only: lazy (None: when the first training image is large, see
    `is_large`) reads classes on demand; image_size (H, W) brings a lazy folder's
    images to that size with ImageNet's evaluation preprocessing (see
    `LazyImageFolder`; ignored for folders read whole).
    """
    if not isinstance(spec, str) or not spec:
        raise RobustgenError(f"no dataset given: choose one of {', '.join(dataset_names())}")
    if spec.startswith("npz:"):
        return _load_npz(spec)
    if spec.startswith("folder:"):
        return _load_folder(spec, image_size=image_size, lazy=lazy)
    if spec not in _LOADERS:
        raise RobustgenError(f"unknown dataset {spec!r}: choose one of {', '.join(dataset_names())}")
    root = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    if root.exists() and not root.is_dir():
        raise RobustgenError(f"data root {root} is a file: point --data-root at a directory")
    return _LOADERS[spec](root=root, download=download, verify=verify)


# --------------------------------------------------------------------------- batches on a device


def to_float(x_uint8: np.ndarray | Tensor, device: torch.device | str = "cpu") -> Tensor:
    """uint8 NHWC -> float32 NCHW in [0, 1] on `device`."""
    x = torch.as_tensor(x_uint8).to(device)
    return x.permute(0, 3, 1, 2).float().div_(255.0).contiguous()


def to_uint8(x: Tensor) -> np.ndarray:
    """float NCHW in [0, 1] -> uint8 NHWC numpy (rounded, clipped)."""
    return x.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def augment(x: Tensor, *, crop_padding: int, flip: bool, generator: torch.Generator | None = None) -> Tensor:
    """Random crop with zero padding and random horizontal flip, on x's device."""
    n, _, h, w = x.shape
    if crop_padding > 0:
        padded = torch.nn.functional.pad(x, (crop_padding,) * 4)
        dy = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator).to(x.device)
        dx = torch.randint(0, 2 * crop_padding + 1, (n,), generator=generator).to(x.device)
        rows = (dy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * crop_padding)
        x = padded.gather(2, rows)
        cols = (dx.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
        x = x.gather(3, cols)
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask.view(n, 1, 1, 1), x.flip(3), x)
    return x


def iterate_batches(
    x: Tensor,
    y: Tensor,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
    drop_last: bool = False,
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (x, y) batches of tensors already on their device."""
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(x.device)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        idx = order[start : start + batch_size]
        yield x[idx], y[idx]


# --------------------------------------------------------------------------- embedded default


@register_dataset("digits")
def _load_digits(*, root: Path, download: bool, verify: bool) -> ImageDataset:
    """scikit-learn's 8x8 handwritten digits (ships with scikit-learn).

    Pixel values 0..16 are scaled to 0..255. Fixed stratified split: 1,437
    train / 360 test (random_state=0). No flips: digits are not mirror-symmetric.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(images, labels, test_size=360, stratify=labels, random_state=0)
    return ImageDataset(
        name="digits",
        x_train=np.ascontiguousarray(x_tr),
        y_train=y_tr,
        x_test=np.ascontiguousarray(x_te),
        y_test=y_te,
        classes=tuple(str(i) for i in range(10)),
        crop_padding=1,
        flip=False,
    )


# --------------------------------------------------------------------------- downloaded datasets

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
def _load_cifar10(*, root: Path, download: bool, verify: bool) -> ImageDataset:
    base = root / "cifar-10-batches-py"
    _fetch("cifar10", root=root, download=download, expected=base / "batches.meta", extract=True)
    *batches, test, meta = _check_files("cifar10", base, _CIFAR10_FILES, verify=verify)
    classes = _class_names(meta, "label_names", "cifar10", 10)
    x_tr, y_tr = _cifar_batches(batches, "labels", "cifar10", 10)
    x_te, y_te = _cifar_batches([test], "labels", "cifar10", 10)
    return ImageDataset("cifar10", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True, mean=_CIFAR_MEAN, std=_CIFAR_STD)


@register_dataset("cifar100")
def _load_cifar100(*, root: Path, download: bool, verify: bool) -> ImageDataset:
    base = root / "cifar-100-python"
    _fetch("cifar100", root=root, download=download, expected=base / "meta", extract=True)
    train, test, meta = _check_files("cifar100", base, ["train", "test", "meta"], verify=verify)
    classes = _class_names(meta, "fine_label_names", "cifar100", 100)
    x_tr, y_tr = _cifar_batches([train], "fine_labels", "cifar100", 100)
    x_te, y_te = _cifar_batches([test], "fine_labels", "cifar100", 100)
    return ImageDataset("cifar100", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


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
def _load_svhn(*, root: Path, download: bool, verify: bool) -> ImageDataset:
    arrays = {}
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        _fetch(f"svhn-{split}", root=root, download=download, expected=path, extract=False)
        _check_files("svhn", root, [path.name], verify=verify)
        x, y = _read_svhn_mat(path)
        arrays[split] = (x, np.where(y == 10, 0, y))  # SVHN stores digit 0 as label 10
    return ImageDataset(
        "svhn", *arrays["train"], *arrays["test"], classes=tuple(str(i) for i in range(10)),
        crop_padding=4, flip=False, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    )


@register_dataset("tiny-imagenet")
def _load_tiny_imagenet(*, root: Path, download: bool, verify: bool) -> ImageDataset:
    """Tiny ImageNet-200 in its distributed layout; decoded once and cached as npz.

    Only the archive has a published MD5 (checked on download); the JPEGs are
    decoded by `read_images` (plain raster decoders, pixel limit) and the cache is
    read with allow_pickle=False and checked, and rebuilt if it does not fit.
    """
    base = root / "tiny-imagenet-200"
    _fetch("tiny-imagenet", root=root, download=download, expected=base / "wnids.txt", extract=True)
    redownload = f"delete {base} so robustgen downloads it again"
    wnids = [w.strip() for w in (base / "wnids.txt").read_text(errors="replace").split() if w.strip()]
    if not wnids:
        raise RobustgenError(f"tiny-imagenet: {base / 'wnids.txt'} lists no classes: {redownload}")
    words = {}
    if (base / "words.txt").is_file():
        for line in (base / "words.txt").read_text(errors="replace").splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    classes = tuple(words.get(w, w) for w in wnids)
    cache = base / "robustgen-cache.npz"
    arrays = _read_tiny_cache(cache, len(wnids))
    if arrays is None:
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
        arrays = (*_read_images(train, "tiny-imagenet"), *_read_images(val, "tiny-imagenet"))
        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x_train=arrays[0], y_train=arrays[1], x_test=arrays[2], y_test=arrays[3])
    return ImageDataset("tiny-imagenet", *arrays, classes, crop_padding=4, flip=True)


def _read_tiny_cache(cache: Path, num_classes: int) -> tuple[np.ndarray, ...] | None:
    """The decoded arrays from robustgen's own cache, or None if missing or not what robustgen writes."""
    if not cache.is_file():
        return None
    try:
        with np.load(cache, allow_pickle=False) as z:
            arrays = tuple(z[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    except Exception:  # damaged, foreign, pickled: rebuild it from the JPEGs
        return None
    x_tr, y_tr, x_te, y_te = arrays
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != (len(x),) or not len(x):
            return None
        if y.min() < 0 or y.max() >= num_classes:
            return None
    return arrays


# --------------------------------------------------------------------------- image files

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
_IMAGE_SUFFIXES = IMAGE_SUFFIXES  # old name
# Pillow decoders allowed to open a file (by content, whatever its suffix): plain raster formats only.
# This keeps out e.g. EPS, which Pillow renders by running Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
MAX_IMAGE_PIXELS = 4096 * 4096  # per image; far above any dataset here, far below a decompression bomb
_GRAY_MODES = ("L", "1", "LA")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # 16/32-bit grayscale (16-bit PNG, TIFF)


def read_images(paths: list[Path], *, source: str) -> np.ndarray:
    """Decode image files into one uint8 NHWC array: (N, H, W, 1) if grayscale, else (N, H, W, 3).

    Grayscale means modes L, 1, LA, I;16*/I (16-bit: scaled to 0..255) and palette
    images whose palette is gray; everything else becomes RGB (alpha dropped).
    All images must have one size. `source` names where they came from in messages.
    """
    from PIL import Image

    if not paths:
        raise RobustgenError(f"{source}: no images found: put PNG/JPEG files there")
    arrays, first = [], None
    for path in paths:
        arr = _read_image(Path(path), source, Image)
        if first is None:
            first = (Path(path), arr.shape)
        elif arr.shape != first[1]:
            (h, w, c), (h0, w0, c0) = arr.shape, first[1]
            raise RobustgenError(
                f"{source}: {path} is {w}x{h}x{c} but {first[0]} is {w0}x{h0}x{c0}: resize all images to one size (and one channel count)"
            )
        arrays.append(arr)
    return np.stack(arrays)


def _read_image(path: Path, source: str, Image) -> np.ndarray:
    from PIL import UnidentifiedImageError

    unreadable = f"{source}: {path} is not a readable image: remove it or convert it to PNG/JPEG"
    too_large = f"larger than robustgen decodes ({MAX_IMAGE_PIXELS} pixels; a decompression bomb?): resize it or remove it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise RobustgenError(f"{source}: {path} is {width}x{height} pixels, {too_large}")
                arr = _image_array(img)
    except RobustgenError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own, larger limit
        raise RobustgenError(f"{source}: {path} claims a huge size, {too_large}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise RobustgenError(unreadable) from None
    if arr is None:
        raise RobustgenError(f"{source}: {path} is a floating-point image: convert it to 8-bit PNG")
    return arr[..., None] if arr.ndim == 2 else arr


def _image_array(img) -> np.ndarray | None:
    if img.mode in _WIDE_GRAY_MODES:
        wide = np.asarray(img).astype(np.int64)
        return ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)  # 0..65535 -> 0..255
    if img.mode == "F":
        return None
    gray = img.mode in _GRAY_MODES or (img.mode in ("P", "PA") and _palette_is_gray(img))
    return np.asarray(img.convert("L" if gray else "RGB"), dtype=np.uint8)


def _palette_is_gray(img) -> bool:
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def _read_images(items: list[tuple[Path, int]], what: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) for (path, label) pairs: `read_images` plus the labels."""
    return read_images([p for p, _ in items], source=what), np.asarray([label for _, label in items], dtype=np.int64)


# --------------------------------------------------------------------------- user data


def _load_folder(spec: str, *, image_size: tuple[int, int] | None = None, lazy: bool | None = None) -> ImageDataset | LazyImageFolder:
    """ImageFolder layout: PATH/train/<class>/*.png and PATH/test/ (or val/); large images are read lazily."""
    base, classes, train, test = _folder_listing(spec)
    if lazy is None:  # decided by the files' own size: image_size never turns small images into large ones
        lazy = is_large(_folder_image_shape(spec, train, None))
    if lazy:
        return LazyImageFolder(spec, base=base, classes=classes, train=train, test=test, image_size=image_size)
    x_tr, y_tr = _read_images(_flat_listing(train), spec)
    x_te, y_te = _read_images(_flat_listing(test), spec)
    channels = x_tr.shape[-1]
    return ImageDataset(spec, x_tr, y_tr, x_te, y_te, tuple(classes), crop_padding=max(1, x_tr.shape[1] // 8), flip=channels == 3)


def _flat_listing(per_class: list[list[Path]]) -> list[tuple[Path, int]]:
    return [(p, i) for i, paths in enumerate(per_class) for p in paths]


def _folder_listing(spec: str) -> tuple[Path, tuple[str, ...], list[list[Path]], list[list[Path]]]:
    """(base, classes, train paths per class, test paths per class) of an ImageFolder; reads no image."""
    base = Path(spec[len("folder:"):]).expanduser()
    if not base.is_dir():
        raise RobustgenError(f"{spec}: {base} is not a directory: point folder: at a folder holding train/ and test/ (or val/)")
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    if not (base / "train").is_dir() or test_dir is None:
        raise RobustgenError(f"{spec}: expected {base}/train/<class>/ and {base}/test/<class>/ (or val/) with images")
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if not classes:
        raise RobustgenError(f"{spec}: {base}/train holds no class folders")

    def listing(split_dir: Path) -> list[list[Path]]:
        unknown = sorted({d.name for d in split_dir.iterdir() if d.is_dir()} - set(classes))
        if unknown:
            raise RobustgenError(f"{spec}: {split_dir} has class folders not in train/: {', '.join(unknown)}")
        return [
            sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES) if (split_dir / c).is_dir() else []
            for c in classes
        ]

    return base, tuple(classes), listing(base / "train"), listing(test_dir)


def _folder_image_shape(spec: str, per_class: list[list[Path]], image_size: tuple[int, int] | None) -> tuple[int, int, int]:
    """(C, H, W) of a folder's images, from the first training image's header (no pixels decoded)."""
    first = next((paths[0] for paths in per_class if paths), None)
    if first is None:
        raise RobustgenError(f"{spec}: no images found: put PNG/JPEG files there")
    from PIL import Image, UnidentifiedImageError

    unreadable = f"{spec}: {first} is not a readable image: remove it or convert it to PNG/JPEG"
    too_large = f"larger than robustgen decodes ({MAX_IMAGE_PIXELS} pixels; a decompression bomb?): resize it or remove it"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(first, formats=IMAGE_FORMATS) as img:
                (width, height), mode = img.size, img.mode
                gray = mode in _GRAY_MODES + _WIDE_GRAY_MODES or (mode in ("P", "PA") and _palette_is_gray(img))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RobustgenError(f"{spec}: {first} claims a huge size, {too_large}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise RobustgenError(unreadable) from None
    if width * height > MAX_IMAGE_PIXELS:
        raise RobustgenError(f"{spec}: {first} is {width}x{height} pixels, {too_large}")
    height, width = image_size if image_size is not None else (height, width)
    return (1 if gray else 3, int(height), int(width))


# --------------------------------------------------------------------------- large image folders, read per class

LARGE_IMAGE_DIM = 64 * 64 * 3  # values per image above which images count as large (ImageNet-size behaviour)
WHOLE_SPLIT_BYTES = 2 << 30  # a lazy folder's whole split is decoded into memory only up to this size
IMAGENET_CROP = 0.875  # evaluation preprocessing: resize the shorter side to size / 0.875 (224 -> 256), centre crop
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_large(image_shape: tuple[int, int, int]) -> bool:
    """Images above 64x64x3 values: read lazily, neighbours in feature space, Gaussian at reduced resolution."""
    return int(np.prod(image_shape)) > LARGE_IMAGE_DIM


class LazyImageFolder:
    """An ImageFolder whose images are decoded one class at a time, when asked for.

    Holds the file listing and the labels (y_train, y_test: cheap), never the
    pixels: `class_images(cls, split)` decodes that class's files (Pillow's plain
    raster decoders with robustgen's pixel limit, as `read_images`); nothing is
    kept between calls. `fingerprint()` hashes the listing (relative paths, sizes,
    mtimes, labels, image shape), not the pixels. Grayscale files in a colour
    folder (ImageNet has a few) are repeated to three channels.

    image_size (H, W): images of another size get ImageNet's evaluation
    preprocessing (shorter side resized to H / 0.875 with bilinear filtering, then
    the centre H x W crop, as torchvision's Resize(256) + CenterCrop(224)); images
    already H x W are used as they are. Without it all images must share one size.

    mean/std are ImageNet's (measuring them would read every image); whole-split
    access (`split`, `x_train`, `x_test`) decodes the split while it fits in
    `WHOLE_SPLIT_BYTES` and refuses with one line otherwise.
    """

    def __init__(self, name: str, *, base: Path, classes: tuple[str, ...], train: list[list[Path]], test: list[list[Path]],
                 image_size: tuple[int, int] | None = None):
        self.name, self.base, self.classes = name, Path(base), tuple(classes)
        self.files = {"train": [list(p) for p in train], "test": [list(p) for p in test]}
        self.image_size = tuple(int(v) for v in image_size) if image_size is not None else None
        self.images_read = 0  # files decoded so far (tests and benchmarks check laziness with it)
        if not self.classes:
            raise RobustgenError(f"{name}: no classes: a dataset needs at least one class")
        for split in ("train", "test"):
            if len(self.files[split]) != len(self.classes):
                raise ValueError(f"{split}: one list of files per class expected")
            if not any(self.files[split]):
                raise RobustgenError(f"{name}: the {split} split holds no images: a dataset needs at least one train and one test image")
        self.y_train = self._labels("train")
        self.y_test = self._labels("test")
        c, h, w = _folder_image_shape(name, self.files["train"], self.image_size)
        self.image_shape = (c, h, w)
        self.crop_padding, self.flip = max(1, h // 8), c == 3
        self.mean = IMAGENET_MEAN if c == 3 else (0.449,)
        self.std = IMAGENET_STD if c == 3 else (0.226,)
        self._fingerprint: str | None = None
        self._whole: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _labels(self, split: str) -> np.ndarray:
        return np.concatenate([np.full(len(paths), i, dtype=np.int64) for i, paths in enumerate(self.files[split])])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by index ("3", 3) or by name ("n01440764")."""
        return _class_index(self, name_or_index)

    def class_images(self, cls: int, split: str = "train") -> np.ndarray:
        """uint8 NHWC images of class `cls` in `split`, decoded now (file order; (0, H, W, C) if none)."""
        paths = self._split_files(split)[cls]
        c, h, w = self.image_shape
        out = np.empty((len(paths), h, w, c), dtype=np.uint8)  # filled in place: no list of arrays plus a stacked copy
        from PIL import Image

        for row, path in enumerate(paths):
            out[row] = self._fit(path, _read_image(path, self.name, Image))
            self.images_read += 1
        return out

    def _fit(self, path: Path, image: np.ndarray) -> np.ndarray:
        """One decoded image brought to the folder's (H, W, C), or one line saying why it cannot be."""
        c, h, w = self.image_shape
        if image.shape[-1] != c:
            if c != 3:
                raise RobustgenError(f"{self.name}: {path} is a colour image in a grayscale folder: convert it to grayscale")
            image = np.repeat(image, 3, axis=-1)
        if image.shape[:2] != (h, w):
            if self.image_size is None:
                raise RobustgenError(
                    f"{self.name}: {path} is {image.shape[1]}x{image.shape[0]} but the folder's images are {w}x{h}: resize all images to one size"
                )
            image = _resize_centre_crop(image, h, w)
        return image

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split decoded (kept for later calls) while it fits in WHOLE_SPLIT_BYTES, else one line."""
        files = self._split_files(split)
        if split not in self._whole:
            n = sum(len(p) for p in files)
            need = n * int(np.prod(self.image_shape))
            if need > WHOLE_SPLIT_BYTES:
                c, h, w = self.image_shape
                raise RobustgenError(
                    f"{self.name}: the {split} split ({n} images of {w}x{h}x{c}, {need / 2**30:.1f} GiB) is too large to hold in memory: "
                    f"this folder is read one class at a time, which `robustgen sample` does; to evaluate or train, point folder: at a "
                    f"smaller folder (a few classes, under {WHOLE_SPLIT_BYTES / 2**30:.0f} GiB) or convert it to npz:PATH"
                )
            x = np.concatenate([self.class_images(i, split) for i in range(self.num_classes)])
            self._whole[split] = (x, self.y_train if split == "train" else self.y_test)
        return self._whole[split]

    def _split_files(self, split: str) -> list[list[Path]]:
        if split not in self.files:
            raise RobustgenError(f"unknown split {split!r}: use train or test")
        return self.files[split]

    @property
    def x_train(self) -> np.ndarray:
        return self.split("train")[0]

    @property
    def x_test(self) -> np.ndarray:
        return self.split("test")[0]

    def fingerprint(self) -> str:
        """sha256 of the listing: each file's split, label, relative path, size and mtime, plus the image shape."""
        if self._fingerprint is None:
            import hashlib

            digest = hashlib.sha256(f"lazy-folder {self.image_shape} {self.image_size}\n".encode())
            for split in ("train", "test"):
                for label, paths in enumerate(self.files[split]):
                    for path in paths:
                        stat = path.stat()
                        digest.update(f"{split}\0{label}\0{path.relative_to(self.base).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def relabel(self, mapping: np.ndarray, classes: tuple[str, ...]) -> LazyImageFolder:
        """The same files with class i relabelled mapping[i] among `classes` (classes no file maps to stay empty)."""
        mapping = np.asarray(mapping, dtype=np.int64)
        if len(mapping) != self.num_classes or len(set(mapping.tolist())) != len(mapping) or mapping.min() < 0 or mapping.max() >= len(classes):
            raise ValueError("mapping must send each class to a distinct index of `classes`")
        moved = {}
        for split, per_class in self.files.items():
            lists = [[] for _ in classes]
            for i, paths in enumerate(per_class):
                lists[int(mapping[i])] = paths
            moved[split] = lists
        return LazyImageFolder(self.name, base=self.base, classes=tuple(classes), train=moved["train"], test=moved["test"], image_size=self.image_size)

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"LazyImageFolder({self.name!r}, {len(self.y_train)} train / {len(self.y_test)} test images of {w}x{h}x{c}, {self.num_classes} classes)"


def _resize_centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """ImageNet evaluation preprocessing: shorter side to size / 0.875 (bilinear, antialiased), centre crop."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(height, width) / IMAGENET_CROP / min(h, w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    crop = resized[top : top + height, left : left + width]
    return crop[..., None] if crop.ndim == 2 else crop


_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_HOWTO = "save it with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"


def _load_npz(spec: str) -> ImageDataset:
    """A .npz with uint8 NHWC x_train/x_test, integer y_train/y_test, optional classes (names).

    Labels are class indices: integers, or floats holding whole numbers (3.0 is read as 3;
    2.5 or NaN is refused). Without a `classes` array the labels must be 0..K-1 with every
    class present (5..14 is refused, not silently made into 15 classes).
    """
    path = Path(spec[len("npz:"):]).expanduser()
    if path.is_dir():
        raise RobustgenError(f"{spec}: {path} is a directory: give npz:PATH to a .npz file holding x_train, y_train, x_test, y_test")
    if not path.is_file():
        raise RobustgenError(f"{spec}: file {path} not found: give npz:PATH to a .npz holding x_train, y_train, x_test, y_test")
    arrays, classes = _read_npz(spec, path)
    for key in ("x_train", "x_test"):
        arrays[key] = _npz_images(spec, key, arrays[key])
    for key in ("y_train", "y_test"):
        arrays[key] = _npz_labels(spec, key, arrays[key])
    classes = _npz_classes(spec, classes, np.concatenate([arrays["y_train"], arrays["y_test"]]))
    channels = arrays["x_train"].shape[-1]
    return ImageDataset(
        spec, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes,
        crop_padding=max(1, arrays["x_train"].shape[1] // 8), flip=channels == 3,
    )


def _read_npz(spec: str, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The four arrays (and classes) of an .npz, refusing anything else with one line."""
    import zipfile

    with open(path, "rb") as fh:
        head = fh.read(6)
    if head.startswith(b"\x93NUMPY"):
        raise RobustgenError(f"{spec}: {path} is a single .npy array, not an .npz: {_NPZ_HOWTO}")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise RobustgenError(f"{spec}: {path} is not an .npz file (not a zip archive): {_NPZ_HOWTO}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in _NPZ_KEYS if k not in z.files]
            if missing:
                raise RobustgenError(
                    f"{spec}: missing arrays {', '.join(missing)}: the .npz needs x_train, y_train, x_test, y_test (uint8 NHWC images, integer labels)"
                )
            arrays = {k: z[k] for k in _NPZ_KEYS}
            classes = z["classes"] if "classes" in z.files else None
    except RobustgenError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):  # numpy's advice to allow pickles is not ours to give
            raise RobustgenError(f"{spec}: {path} holds Python objects (dtype=object): store numeric arrays and a string classes array") from None
        raise RobustgenError(f"{spec}: cannot read {path} ({_first_line(exc)}): the file is damaged; {_NPZ_HOWTO}") from None
    except (zipfile.BadZipFile, OSError, EOFError, KeyError, RuntimeError, NotImplementedError, MemoryError) as exc:
        raise RobustgenError(f"{spec}: cannot read {path} ({_first_line(exc)}): the file is truncated or damaged; {_NPZ_HOWTO}") from None
    except Exception as exc:  # zlib.error and other decoder errors of a damaged archive
        raise RobustgenError(f"{spec}: cannot read {path} ({_first_line(exc)}): the file is truncated or damaged; {_NPZ_HOWTO}") from None
    return arrays, classes


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:80] if text else type(exc).__name__


def _npz_images(spec: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # grayscale without a channel axis
        x = x[..., None]
    if x.dtype != np.uint8:
        raise RobustgenError(f"{spec}: {key} is {x.dtype}; store images as uint8 in 0..255 (NHWC)")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise RobustgenError(f"{spec}: {key} has shape {x.shape}; expected (N, H, W, C) with C = 1 or 3")
    if len(x) == 0:
        raise RobustgenError(f"{spec}: {key} holds no images: the .npz needs at least one train and one test image")
    if 0 in x.shape[1:3]:
        raise RobustgenError(f"{spec}: {key} has shape {x.shape}: images need at least 1x1 pixels")
    return np.ascontiguousarray(x)


def _npz_labels(spec: str, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise RobustgenError(f"{spec}: {key} has shape {y.shape}; store one class index per image, shape (N,) (one-hot labels: use y.argmax(1))")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise RobustgenError(f"{spec}: {key} holds non-integer labels (e.g. {y[bad][0]!r}): store class indices as integers 0..K-1")
    elif y.dtype.kind not in "iu":
        raise RobustgenError(f"{spec}: {key} is {y.dtype}; store class indices as integers 0..K-1 (names go in a classes array)")
    if len(y) and (y.min() < 0 or y.max() > np.iinfo(np.int32).max):
        raise RobustgenError(f"{spec}: {key} holds label {y.min() if y.min() < 0 else y.max()}: labels are class indices 0..K-1")
    return y.astype(np.int64)


def _npz_classes(spec: str, classes: np.ndarray | None, labels: np.ndarray) -> tuple[str, ...]:
    if classes is None:
        present = np.unique(labels)
        if len(present) and present[-1] != len(present) - 1:
            absent = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise RobustgenError(
                f"{spec}: labels run {present[0]}..{present[-1]} but classes {shown} never occur and there is no classes array: "
                "relabel to 0..K-1 or add a classes array naming every class"
            )
        return tuple(str(i) for i in range(len(present)))
    if classes.ndim != 1 or classes.dtype.kind not in "USiu" or len(classes) == 0:
        raise RobustgenError(f"{spec}: classes must be a 1-D array of class names (strings), got {classes.dtype} {classes.shape}")
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise RobustgenError(f"{spec}: class name {duplicate!r} appears twice in classes: give every class a distinct name")
    if labels.max() >= len(names):
        raise RobustgenError(
            f"{spec}: labels go up to {labels.max()} but classes names only {len(names)} classes: give one name per class index 0..{labels.max()}"
        )
    return tuple(names)
