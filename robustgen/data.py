"""Dataset registry: every dataset becomes uint8 NHWC arrays plus class names.

    load_dataset("digits")                       # scikit-learn's 8x8 digits, the embedded default
    load_dataset("cifar10", root="~/data")       # CIFAR-10 python batches (downloaded if missing)
    load_dataset("npz:path/data.npz")            # x_train y_train x_test y_test [classes]
    load_dataset("folder:path/imagefolder")      # train/ and test/ (or val/) class folders

Images stay uint8 in memory (CIFAR-10 is 180 MB) and are turned into float
[0, 1] NCHW batches on the training device, where augmentation also runs
(random crop with zero padding, horizontal flip where it makes sense). Readers
parse the original file formats themselves (CIFAR pickles, SVHN .mat, Tiny
ImageNet folders) so they can be tested offline on small files in the real
format; fetching uses torchvision's downloader.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import Tensor

from robustgen.errors import RobustgenError
from robustgen.io import sha256_arrays

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
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or x.dtype != np.uint8:
                raise RobustgenError(f"{self.name}: x_{split} must be uint8 images shaped (N, H, W, C), got {x.dtype} {x.shape}")
            if len(x) != len(y):
                raise RobustgenError(f"{self.name}: x_{split} has {len(x)} images but y_{split} has {len(y)} labels")
            if len(y) and (y.min() < 0 or y.max() >= len(self.classes)):
                raise RobustgenError(f"{self.name}: y_{split} labels must be in 0..{len(self.classes) - 1}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise RobustgenError(f"{self.name}: train images are {self.x_train.shape[1:]} but test images are {self.x_test.shape[1:]}")
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
        if isinstance(name_or_index, int) or str(name_or_index).lstrip("-").isdigit():
            index = int(name_or_index)
            if not 0 <= index < self.num_classes:
                raise RobustgenError(f"class {index} is out of range: {self.name} has classes 0..{self.num_classes - 1}")
            return index
        if name_or_index in self.classes:
            return self.classes.index(name_or_index)
        raise RobustgenError(f"unknown class {name_or_index!r}: {self.name} has {', '.join(self.classes)}")


# --------------------------------------------------------------------------- registry

_LOADERS: dict[str, Callable[..., ImageDataset]] = {}


def register_dataset(name: str):
    def decorate(loader):
        _LOADERS[name] = loader
        return loader

    return decorate


def dataset_names() -> list[str]:
    return sorted(_LOADERS) + ["npz:PATH", "folder:PATH"]


def load_dataset(spec: str, *, root: str | os.PathLike | None = None, download: bool = True) -> ImageDataset:
    """Load a dataset by registry name, `npz:PATH` or `folder:PATH`."""
    root = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    if spec.startswith("npz:"):
        return _load_npz(spec)
    if spec.startswith("folder:"):
        return _load_folder(spec)
    if spec not in _LOADERS:
        raise RobustgenError(f"unknown dataset {spec!r}: choose one of {', '.join(dataset_names())}")
    return _LOADERS[spec](root=root, download=download)


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
def _load_digits(*, root: Path, download: bool) -> ImageDataset:
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
        root.mkdir(parents=True, exist_ok=True)
        if extract:
            download_and_extract_archive(url, download_root=str(root), md5=md5)
        else:
            download_url(url, root=str(root), md5=md5)
    except Exception as exc:  # urllib, ssl, socket and md5 errors all mean the same to the user
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise RobustgenError(f"{key}: could not download ({reason}); on a machine without internet {where}") from None
    if not expected.exists():
        raise RobustgenError(f"{key}: downloaded, but {expected} is still missing: {where}")


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="latin1")


def _cifar_batches(files: list[Path], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for path in files:
        entry = _unpickle(path)
        xs.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(np.asarray(entry[label_key], dtype=np.int64))
    return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)


@register_dataset("cifar10")
def _load_cifar10(*, root: Path, download: bool) -> ImageDataset:
    base = root / "cifar-10-batches-py"
    _fetch("cifar10", root=root, download=download, expected=base / "batches.meta", extract=True)
    x_tr, y_tr = _cifar_batches([base / f"data_batch_{i}" for i in range(1, 6)], "labels")
    x_te, y_te = _cifar_batches([base / "test_batch"], "labels")
    classes = tuple(_unpickle(base / "batches.meta")["label_names"])
    return ImageDataset("cifar10", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True, mean=_CIFAR_MEAN, std=_CIFAR_STD)


@register_dataset("cifar100")
def _load_cifar100(*, root: Path, download: bool) -> ImageDataset:
    base = root / "cifar-100-python"
    _fetch("cifar100", root=root, download=download, expected=base / "meta", extract=True)
    x_tr, y_tr = _cifar_batches([base / "train"], "fine_labels")
    x_te, y_te = _cifar_batches([base / "test"], "fine_labels")
    classes = tuple(_unpickle(base / "meta")["fine_label_names"])
    return ImageDataset("cifar100", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))


@register_dataset("svhn")
def _load_svhn(*, root: Path, download: bool) -> ImageDataset:
    import scipy.io

    arrays = {}
    for split in ("train", "test"):
        path = root / f"{split}_32x32.mat"
        _fetch(f"svhn-{split}", root=root, download=download, expected=path, extract=False)
        mat = scipy.io.loadmat(str(path))
        x = np.ascontiguousarray(np.asarray(mat["X"], dtype=np.uint8).transpose(3, 0, 1, 2))
        y = np.asarray(mat["y"], dtype=np.int64).reshape(-1)
        arrays[split] = (x, np.where(y == 10, 0, y))  # SVHN stores digit 0 as label 10
    return ImageDataset(
        "svhn", *arrays["train"], *arrays["test"], classes=tuple(str(i) for i in range(10)),
        crop_padding=4, flip=False, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970),
    )


@register_dataset("tiny-imagenet")
def _load_tiny_imagenet(*, root: Path, download: bool) -> ImageDataset:
    """Tiny ImageNet-200 in its distributed layout; decoded once and cached as npz."""
    base = root / "tiny-imagenet-200"
    _fetch("tiny-imagenet", root=root, download=download, expected=base / "wnids.txt", extract=True)
    cache = base / "robustgen-cache.npz"
    wnids = [w.strip() for w in (base / "wnids.txt").read_text().split() if w.strip()]
    words = {}
    if (base / "words.txt").exists():
        for line in (base / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid] = text.split(",")[0].strip()
    classes = tuple(words.get(w, w) for w in wnids)
    if cache.exists():
        with np.load(cache) as z:
            x_tr, y_tr, x_te, y_te = z["x_train"], z["y_train"], z["x_test"], z["y_test"]
    else:
        index = {w: i for i, w in enumerate(wnids)}
        train = [(p, index[w]) for w in wnids for p in sorted((base / "train" / w / "images").glob("*.JPEG"))]
        val = []
        for line in (base / "val" / "val_annotations.txt").read_text().splitlines():
            parts = line.split("\t")
            if len(parts) >= 2:
                val.append((base / "val" / "images" / parts[0], index[parts[1]]))
        x_tr, y_tr = _read_images(train, "tiny-imagenet")
        x_te, y_te = _read_images(val, "tiny-imagenet")
        from robustgen.io import atomic_path

        with atomic_path(cache) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te)
    return ImageDataset("tiny-imagenet", x_tr, y_tr, x_te, y_te, classes, crop_padding=4, flip=True)


# --------------------------------------------------------------------------- user data

_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _read_images(items: list[tuple[Path, int]], what: str) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    if not items:
        raise RobustgenError(f"{what}: no images found")
    images, labels, first_shape = [], [], None
    for path, label in items:
        try:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("L" if img.mode in ("L", "1", "I;16") else "RGB"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError):
            raise RobustgenError(f"{what}: {path} is not a readable image: remove it or convert it to PNG/JPEG") from None
        arr = arr[..., None] if arr.ndim == 2 else arr
        if first_shape is None:
            first_shape = arr.shape
        elif arr.shape != first_shape:
            raise RobustgenError(f"{what}: {path} is {arr.shape[1]}x{arr.shape[0]}x{arr.shape[2]} but earlier images are {first_shape[1]}x{first_shape[0]}x{first_shape[2]}: resize all images to one size")
        images.append(arr)
        labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _load_folder(spec: str) -> ImageDataset:
    """ImageFolder layout: PATH/train/<class>/*.png and PATH/test/ (or val/)."""
    base = Path(spec[len("folder:"):]).expanduser()
    if not base.is_dir():
        raise RobustgenError(f"{spec}: {base} is not a directory: point folder: at a folder holding train/ and test/ (or val/)")
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    if not (base / "train").is_dir() or test_dir is None:
        raise RobustgenError(f"{spec}: expected {base}/train/<class>/ and {base}/test/<class>/ (or val/) with images")
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if not classes:
        raise RobustgenError(f"{spec}: {base}/train holds no class folders")

    def listing(split_dir: Path) -> list[tuple[Path, int]]:
        unknown = sorted({d.name for d in split_dir.iterdir() if d.is_dir()} - set(classes))
        if unknown:
            raise RobustgenError(f"{spec}: {split_dir} has class folders not in train/: {', '.join(unknown)}")
        return [
            (p, i)
            for i, c in enumerate(classes)
            if (split_dir / c).is_dir()
            for p in sorted((split_dir / c).iterdir())
            if p.suffix.lower() in _IMAGE_SUFFIXES
        ]

    x_tr, y_tr = _read_images(listing(base / "train"), spec)
    x_te, y_te = _read_images(listing(test_dir), spec)
    channels = x_tr.shape[-1]
    return ImageDataset(spec, x_tr, y_tr, x_te, y_te, tuple(classes), crop_padding=max(1, x_tr.shape[1] // 8), flip=channels == 3)


def _load_npz(spec: str) -> ImageDataset:
    """A .npz with uint8 NHWC x_train/x_test, integer y_train/y_test, optional classes."""
    path = Path(spec[len("npz:"):]).expanduser()
    if not path.is_file():
        raise RobustgenError(f"{spec}: file {path} not found: give npz:PATH to a .npz holding x_train, y_train, x_test, y_test")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in z.files]
            if missing:
                raise RobustgenError(f"{spec}: missing arrays {', '.join(missing)}: the .npz needs x_train, y_train, x_test, y_test (uint8 NHWC images, integer labels)")
            arrays = {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")}
            classes = [str(c) for c in z["classes"]] if "classes" in z.files else None
    except (OSError, ValueError) as exc:
        raise RobustgenError(f"{spec}: cannot read {path} as .npz ({exc}): save it with numpy.savez") from None
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if x.ndim == 3:  # grayscale without a channel axis
            x = x[..., None]
        if x.dtype != np.uint8:
            raise RobustgenError(f"{spec}: {key} is {x.dtype}; store images as uint8 in 0..255 (NHWC)")
        if x.ndim != 4 or x.shape[-1] not in (1, 3):
            raise RobustgenError(f"{spec}: {key} has shape {x.shape}; expected (N, H, W, C) with C = 1 or 3")
        arrays[key] = np.ascontiguousarray(x)
    for key in ("y_train", "y_test"):
        arrays[key] = np.asarray(arrays[key]).astype(np.int64).reshape(-1)
    n_classes = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    classes = tuple(classes) if classes else tuple(str(i) for i in range(n_classes))
    channels = arrays["x_train"].shape[-1]
    return ImageDataset(
        spec, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes,
        crop_padding=max(1, arrays["x_train"].shape[1] // 8), flip=channels == 3,
    )
