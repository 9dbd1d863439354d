"""An unlabelled pool of images from any dataset spec, brought to one shape: seeds for `--init images:SPEC`.

    pool = read_image_pool("folder:tiny-imagenet-200/val/images", shape=(3, 32, 32))
    pool.images   # (N, 32, 32, 3) uint8;  pool.sha256 records exactly which seeds a run saw

SPEC is any dataset spec (`npz:`, `folder:`, `tiny-imagenet`, `cifar10`, ...): both of its
splits are taken, labels dropped; `SPEC@test` (or `@train`) takes one split only, e.g. the test
split of the model's own dataset (its training split is refused as seeds: those would be copies). `folder:DIR` also takes a flat directory of image files
(no class subfolders), e.g. Tiny-ImageNet's `val/images`. Every image is resized to the
target height and width (Pillow's bilinear filter, which low-passes when it shrinks) and
converted to the target channel count (`to_channels`: gray repeated, or RGB luminance).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robustgen.errors import RobustgenError
from robustgen.io import sha256_arrays

MAX_POOL_IMAGES = 50_000  # seeds read at most (a random-free prefix of the listing): 50k CIFAR-size images are 150 MB


@dataclass(frozen=True, eq=False)
class ImagePool:
    """Unlabelled uint8 NHWC images, all of one shape."""

    name: str  # the spec they were read from
    images: np.ndarray  # (N, H, W, C) uint8
    sha256: str  # of the images as brought to this shape


def read_image_pool(spec: str, *, shape: tuple[int, int, int], root: str | os.PathLike | None = None) -> ImagePool:
    """The images of `spec` (both splits, or a flat folder) at `shape` (C, H, W); cached per process."""
    return _read_pool(str(spec), tuple(int(v) for v in shape), None if root is None else str(root))


@functools.lru_cache(maxsize=2)  # one pool is asked for once per class: read it once
def _read_pool(spec: str, shape: tuple[int, int, int], root: str | None) -> ImagePool:
    raw = _flat_folder_images(spec) if _is_flat_folder(spec) else _dataset_images(spec, root)
    if len(raw) == 0:
        raise RobustgenError(f"images:{spec}: no images found: point it at PNG/JPEG files or a dataset")
    channels, height, width = shape
    images = np.stack([_fit(image, height, width, channels) for image in raw[:MAX_POOL_IMAGES]])
    return ImagePool(spec, images, sha256_arrays(images))


def _is_flat_folder(spec: str) -> bool:
    if not spec.startswith("folder:"):
        return False
    base = Path(spec[len("folder:"):]).expanduser()
    return base.is_dir() and not (base / "train").is_dir()


def _flat_folder_images(spec: str) -> list[np.ndarray]:
    from robustgen.data.images import IMAGE_SUFFIXES, decode_image

    base = Path(spec[len("folder:"):]).expanduser()
    paths = sorted(p for p in base.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise RobustgenError(f"images:{spec}: {base} holds no PNG/JPEG files and no train/ folder: point it at a folder of images")
    return [decode_image(p, f"images:{spec}") for p in paths[:MAX_POOL_IMAGES]]


SPLIT_SUFFIXES = ("@train", "@test")


def _dataset_images(spec: str, root: str | None) -> list[np.ndarray]:
    from robustgen.data import load_dataset

    name, split = spec, None
    for suffix in SPLIT_SUFFIXES:
        if spec.endswith(suffix):
            name, split = spec[: -len(suffix)], suffix[1:]
    dataset = load_dataset(name, root=root, lazy=False) if name.startswith("folder:") else load_dataset(name, root=root)
    splits = [dataset.split(split)[0]] if split else [dataset.x_train, dataset.x_test]
    return [image for x in splits for image in x][:MAX_POOL_IMAGES]


def _fit(image: np.ndarray, height: int, width: int, channels: int) -> np.ndarray:
    """One uint8 HWC image at (height, width, channels)."""
    from PIL import Image

    from robustgen.data.images import to_channels

    if image.shape[:2] != (height, width):
        mode = "L" if image.shape[-1] == 1 else "RGB"
        resized = Image.fromarray(image[..., 0] if mode == "L" else image, mode=mode).resize((width, height), Image.BILINEAR)
        image = np.asarray(resized, dtype=np.uint8).reshape(height, width, -1)
    return to_channels(image, channels)


def training_overlap(pool: ImagePool, train_images: np.ndarray) -> int:
    """How many pool images are byte-identical to one of `train_images` (same shape): seeds the model was trained on."""
    if pool.images.shape[1:] != train_images.shape[1:]:
        return 0
    seen = {row.tobytes() for row in train_images.reshape(len(train_images), -1)}
    return sum(row.tobytes() in seen for row in pool.images.reshape(len(pool.images), -1))
