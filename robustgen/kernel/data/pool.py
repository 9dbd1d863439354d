"""Unlabelled images of any source, brought to a model's input shape: seeds for `--init images:SPEC` (sampling) and the
out-of-distribution set of generative fine-tuning (`--ood SPEC`, training). One reader for both.

    pool = read_image_pool("folder:tiny-imagenet-200/val/images", shape=(3, 32, 32))
    pool.images   # (N, 32, 32, 3) uint8;  pool.sha256 records exactly which images a run saw

SPEC is any dataset spec (`npz:`, `folder:`, `tiny-imagenet`, `cifar10`, ...): both of its splits are
taken, labels dropped; `SPEC@test` (or `@train`) takes one split only, e.g. the test split of a model's
own dataset (sampling refuses its training split as seeds: those would be copies). `folder:DIR` also
takes a flat directory of image files (no class subfolders, no train/), e.g. Tiny-ImageNet's
`val/images`. Every image is converted to the target channel count (`to_channels`: luminance, or gray
repeated) and resized to the target height and width with Pillow's bilinear filter (which low-passes
when it shrinks; a different aspect ratio is squeezed); resize=False refuses an image of another size.
At most `limit` images are kept, evenly spaced over the source.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import sha256_arrays

MAX_POOL_IMAGES = 50_000  # images kept from a source (evenly spaced): 50k CIFAR-size images are 150 MB
SPLIT_SUFFIXES = ("@train", "@test")


@dataclass(frozen=True, eq=False)
class ImagePool:
    """Unlabelled uint8 NHWC images, all of one shape."""

    name: str  # the spec they were read from
    images: np.ndarray  # (N, H, W, C) uint8
    sha256: str  # of the images as brought to this shape


def read_image_pool(spec: str, *, shape: tuple[int, int, int], root: str | os.PathLike | None = None, resize: bool = True,
                    resize_hint: str = "give images of that size", limit: int = MAX_POOL_IMAGES) -> ImagePool:
    """The images of `spec` at `shape` (C, H, W), cached per process. resize=False: an image of another size is refused
    in one line that ends with `resize_hint` (the caller's own flag)."""
    return _read_pool(str(spec), tuple(int(v) for v in shape), None if root is None else str(root), resize, resize_hint, int(limit))


@functools.lru_cache(maxsize=2)  # a pool is asked for once per class (and again by the run record): read it once
def _read_pool(spec: str, shape: tuple[int, int, int], root: str | None, resize: bool, resize_hint: str, limit: int) -> ImagePool:
    raw = _flat_folder_images(spec, limit) if is_flat_folder(spec) else _dataset_images(spec, root, limit)
    channels, height, width = shape
    images = np.stack([_fit(image, spec, height, width, channels, resize=resize, hint=resize_hint) for image in raw])
    return ImagePool(spec, images, sha256_arrays(images))


def is_flat_folder(spec: str) -> bool:
    """folder:DIR holding no train/ split (its image files are read directly)."""
    if not spec.startswith("folder:"):
        return False
    base = Path(spec[len("folder:"):]).expanduser()
    return base.is_dir() and not (base / "train").is_dir()


def _spaced(n: int, limit: int, spec: str) -> np.ndarray:
    if n == 0:
        raise RobustgenError(f"{spec}: no images found: point it at PNG/JPEG files or a dataset")
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(np.int64)


def _flat_folder_images(spec: str, limit: int) -> list[np.ndarray]:
    from robustgen.kernel.data.images import IMAGE_SUFFIXES, decode_image

    base = Path(spec[len("folder:"):]).expanduser()
    paths = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise RobustgenError(f"{spec}: {base} holds no PNG/JPEG files and no train/ folder: point it at a folder of images")
    return [decode_image(paths[i], spec) for i in _spaced(len(paths), limit, spec)]


def _dataset_images(spec: str, root: str | None, limit: int) -> list[np.ndarray]:
    from robustgen.kernel.data import load_dataset

    name, split = spec, None
    for suffix in SPLIT_SUFFIXES:
        if spec.endswith(suffix):
            name, split = spec[: -len(suffix)], suffix[1:]
    dataset = load_dataset(name, root=root, lazy=False) if name.startswith("folder:") else load_dataset(name, root=root)
    splits = [dataset.split(split)[0]] if split else [dataset.x_train, dataset.x_test]
    images = [image for x in splits for image in x]
    return [images[i] for i in _spaced(len(images), limit, spec)]


def _fit(image: np.ndarray, spec: str, height: int, width: int, channels: int, *, resize: bool, hint: str) -> np.ndarray:
    """One uint8 HWC image at (height, width, channels)."""
    from PIL import Image

    from robustgen.kernel.data.images import to_channels

    if image.shape[:2] != (height, width):
        if not resize:
            h, w = image.shape[:2]
            raise RobustgenError(f"{spec} holds {w}x{h} images but the model takes {width}x{height}: {hint}")
        mode = "L" if image.shape[-1] == 1 else "RGB"
        resized = Image.fromarray(image[..., 0] if mode == "L" else image, mode=mode).resize((width, height), Image.BILINEAR)
        image = np.asarray(resized, dtype=np.uint8).reshape(height, width, -1)
    return to_channels(image, channels)


def training_overlap(pool: ImagePool, train_images: np.ndarray) -> int:
    """How many pool images are byte-identical to one of `train_images` (same shape): images the model was trained on."""
    if pool.images.shape[1:] != train_images.shape[1:]:
        return 0
    seen = {row.tobytes() for row in train_images.reshape(len(train_images), -1)}
    return sum(row.tobytes() in seen for row in pool.images.reshape(len(pool.images), -1))
