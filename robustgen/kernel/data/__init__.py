"""Dataset registry: every dataset becomes uint8 NHWC arrays plus class names.

    load_dataset("digits")                       # scikit-learn's 8x8 digits, the embedded default
    load_dataset("cifar10", root="~/data")       # CIFAR-10 python batches (downloaded if missing)
    load_dataset("npz:path/data.npz")            # x_train y_train x_test y_test [classes]
    load_dataset("folder:path/imagefolder")      # train/ and test/ (or val/) class folders
    load_dataset("tiny-imagenet", channels=3)    # every image brought to 3 channels (the default: most images' count)

    dataset.class_images(3)                      # uint8 NHWC training images of class 3 (both dataset types)

Images stay uint8 in memory (CIFAR-10 is 180 MB) and are turned into float
[0, 1] NCHW batches on the training device, where augmentation also runs
(random crop with zero padding, horizontal flip where it makes sense).

Modules: this one (ImageDataset, the registry, batches, digits), `downloaded`
(CIFAR-10/100, SVHN, Tiny ImageNet: readers of the original formats, fetched with
torchvision's downloader), `images` (decoding image files, one channel count per
dataset), `folders` (`folder:` datasets; large images are a `LazyImageFolder` read
one class at a time), `npz` (`npz:` files).

A dataset has one channel count (1 or 3): `channels` if given, else the count most
of its training images have. Image files of the other kind (Tiny ImageNet's and
ImageNet's grayscale JPEGs) are converted, and `dataset.converted` says how many
(`conversion_note` puts it in one line).

Third-party files are data, never code: CIFAR batches go through an unpickler
that only builds dicts, lists, strings, numbers and plain numpy arrays; files
found on disk are checked against their published MD5s first (`verify=True`,
the default); .npz files are read with allow_pickle=False; images are decoded
only by Pillow's plain raster plugins, with a pixel limit.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import sha256_arrays

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
    converted: int = 0  # images whose channel count was changed to the dataset's (e.g. grayscale JPEGs made RGB)

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
    channels: int | None = None,
) -> ImageDataset | LazyImageFolder:
    """Load a dataset by registry name, `npz:PATH` or `folder:PATH`.

    verify: check downloaded files found under `root` against their published
    MD5s before reading them (CIFAR-10/100, SVHN). Turn it off only for files you
    made yourself in the original format (tests do); anything else is refused.
    folder: only: lazy (None: when the first training image is large, see
    `is_large`) reads classes on demand; image_size (H, W) brings a lazy folder's
    images to that size with ImageNet's evaluation preprocessing (see
    `LazyImageFolder`; ignored for folders read whole). channels (1 or 3): convert every
    image to that many channels; None = the count most training images have (images of
    the other count are converted: `dataset.converted`, `conversion_note`).
    """
    check_channels(channels)
    if not isinstance(spec, str) or not spec:
        raise RobustgenError(f"no dataset given: choose one of {', '.join(dataset_names())}")
    if spec.startswith("npz:"):
        return load_npz(spec, channels=channels)
    if spec.startswith("folder:"):
        return load_folder(spec, image_size=image_size, lazy=lazy, channels=channels)
    if spec not in _LOADERS:
        raise RobustgenError(f"unknown dataset {spec!r}: choose one of {', '.join(dataset_names())}")
    root = Path(root if root is not None else DEFAULT_ROOT).expanduser()
    if root.exists() and not root.is_dir():
        raise RobustgenError(f"data root {root} is a file: point --data-root at a directory")
    return _LOADERS[spec](root=root, download=download, verify=verify, channels=channels)


def with_channels(dataset: ImageDataset, channels: int | None) -> ImageDataset:
    """`dataset` with every image converted to `channels` (None or its own count: the dataset itself)."""
    if channels is None or dataset.image_shape[0] == channels:
        return dataset
    x_train, x_test = (to_channels(x, channels) for x in (dataset.x_train, dataset.x_test))
    return dataclasses.replace(dataset, x_train=x_train, x_test=x_test, flip=dataset.flip, mean=(), std=(),
                               converted=len(x_train) + len(x_test))


def conversion_note(dataset) -> str | None:
    """One line saying how many images were converted to the dataset's channel count, or None if none were."""
    converted = int(getattr(dataset, "converted", 0))
    if not converted:
        return None
    channels = dataset.image_shape[0]
    kind, other = ("RGB", "grayscale") if channels == 3 else ("grayscale", "colour")
    total = len(dataset.y_train) + len(dataset.y_test)
    return (f"{dataset.name}: {converted} of {total} images were {other} and were converted to {kind}, the dataset's channel count "
            f"(--channels sets it; by default it is the count most training images have)")


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


# --------------------------------------------------------------------------- embedded default


@register_dataset("digits")
def _load_digits(*, root: Path, download: bool, verify: bool, channels: int | None) -> ImageDataset:
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
    return with_channels(ImageDataset(
        name="digits",
        x_train=np.ascontiguousarray(x_tr),
        y_train=y_tr,
        x_test=np.ascontiguousarray(x_te),
        y_test=y_te,
        classes=tuple(str(i) for i in range(10)),
        crop_padding=1,
        flip=False,
    ), channels)


# The readers live in submodules; imported last, since they build on ImageDataset and register_dataset above.
from robustgen.kernel.data.images import (  # noqa: E402
    CHANNELS, IMAGE_FORMATS, IMAGE_SUFFIXES, MAX_IMAGE_PIXELS, check_channels, read_images, to_channels,
)
from robustgen.kernel.data.folders import (  # noqa: E402
    IMAGENET_CROP, IMAGENET_MEAN, IMAGENET_STD, LARGE_IMAGE_DIM, WHOLE_SPLIT_BYTES, LazyImageFolder, is_large, load_folder,
)
from robustgen.kernel.data.npz import load_npz  # noqa: E402
from robustgen.kernel.data import downloaded  # noqa: E402, F401  (registers cifar10, cifar100, svhn, tiny-imagenet)
