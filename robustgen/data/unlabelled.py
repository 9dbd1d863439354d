"""Unlabelled images of any source, brought to a model's input shape (out-of-distribution sets for generative fine-tuning).

    images = load_images("folder:tiny-imagenet-200/val/images", image_shape=(3, 32, 32))   # uint8 NHWC

The source is any `load_dataset` spec (its training split is read), or a flat `folder:DIR` of image
files with no class subfolders (and no train/). Every image is converted to the model's channel count
(`to_channels`: luminance or repeated gray) and, where its size differs, resized with antialiased
bilinear filtering (whole images: a different aspect ratio is squeezed, which is fine for contrast
images). With resize=False an image of another size is refused with one line.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robustgen.data.images import IMAGE_SUFFIXES, decode_image, to_channels
from robustgen.errors import RobustgenError

MAX_IMAGES = 50_000  # images kept from a source (evenly spaced): 50k x 32x32x3 uint8 is 150 MB
RESIZE_BATCH = 512  # images resized per interpolate call


def is_flat_folder(spec: str) -> bool:
    """folder:DIR holding image files itself and no train/ split."""
    if not spec.startswith("folder:"):
        return False
    base = Path(spec[len("folder:"):]).expanduser()
    return base.is_dir() and not (base / "train").is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in base.iterdir())


def load_images(spec: str, *, image_shape: tuple[int, int, int], root=None, resize: bool = True, limit: int = MAX_IMAGES) -> np.ndarray:
    """uint8 NHWC images of `spec` with shape `image_shape` (C, H, W); at most `limit` of them, evenly spaced."""
    channels, height, width = image_shape
    if is_flat_folder(spec):
        paths = sorted(p for p in Path(spec[len("folder:"):]).expanduser().iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        paths = [paths[i] for i in _spaced(len(paths), limit)]
        return np.stack([_fit(to_channels(decode_image(p, spec), channels), spec, height, width, resize=resize)[0] for p in paths])
    from robustgen.data import load_dataset

    dataset = load_dataset(spec, root=root, channels=channels)
    images = dataset.x_train
    images = images[_spaced(len(images), limit)]
    if images.shape[-1] != channels:  # a dataset read with its own channel count
        images = to_channels(images, channels)
    return _fit(images, spec, height, width, resize=resize)


def _spaced(n: int, limit: int) -> np.ndarray:
    if n == 0:
        raise RobustgenError("no images found in the out-of-distribution source: give a spec or folder that holds images")
    return np.arange(n) if n <= limit else np.linspace(0, n - 1, limit).round().astype(np.int64)


def _fit(images: np.ndarray, spec: str, height: int, width: int, *, resize: bool) -> np.ndarray:
    """images (N, h, w, C) or one image (h, w, C) -> (N, height, width, C) uint8."""
    images = images[None] if images.ndim == 3 else images
    h, w = images.shape[1:3]
    if (h, w) == (height, width):
        return images
    if not resize:
        raise RobustgenError(f"{spec} holds {w}x{h} images but the model takes {width}x{height}: allow resizing (drop --no-ood-resize) "
                             f"or give {width}x{height} images")
    out = []
    for start in range(0, len(images), RESIZE_BATCH):
        x = torch.from_numpy(np.array(images[start : start + RESIZE_BATCH])).permute(0, 3, 1, 2).float()
        x = torch.nn.functional.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
        out.append(x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)
