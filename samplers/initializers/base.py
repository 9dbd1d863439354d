"""What all initialisers share: class data, the on-disk cache, fingerprints.

An initialiser is fitted once per (dataset, class, fit options[, model]) and the
fitted arrays are cached as .npz under `<cache_dir>/init/`, keyed by a hash of
exactly those inputs, so a second run (or a second process) reuses them.

Class data comes from `dataset.class_images(cls)` (uint8 NHWC), which both the
in-memory `ImageDataset` and the `LazyImageFolder` of ImageNet-size data
implement; at 224x224 a class is converted to float only a batch at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustgen.kernel.data import ImageDataset, to_float
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.cache import cached_npz
from robustgen.kernel.io import default_cache_dir, settings_hash  # noqa: F401  (default_cache_dir re-exported)


def cache_key(**parts) -> str:
    """Short stable hash of JSON-able parts (dataset fingerprint, class, options, model hash)."""
    return settings_hash(parts)


def cached_arrays(cache_dir: Path | None, name: str, fit: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Load `<cache_dir>/<name>.npz` or compute it with `fit()` and store it (a damaged entry is refitted)."""
    return cached_npz(Path(cache_dir) / f"{name}.npz" if cache_dir is not None else None, fit, what="sampler cache entry")


def class_images(dataset: ImageDataset, cls: int, *, minimum: int = 1, what: str = "this init") -> np.ndarray:
    """Training images of class `cls`, uint8 NHWC, or one line if there are fewer than `minimum`."""
    x = dataset.class_images(cls, "train")
    if len(x) < minimum:
        raise RobustgenError(
            f"class {cls} ({dataset.classes[cls]}) has {len(x)} training images in {dataset.name}: "
            f"{what} needs at least {minimum}; use --init uniform or add data"
        )
    return x


def flat_pixels(images: np.ndarray) -> np.ndarray:
    """uint8 NHWC images -> float32 (n, D) rows in [0, 1], in CHW order."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1), dtype=np.float32) / np.float32(255.0)


def class_pixels(dataset: ImageDataset, cls: int, *, minimum: int = 1, what: str = "this init") -> np.ndarray:
    """Training images of class `cls` as float32 (n_c, D) rows in [0, 1], in CHW order (4 bytes per value:
    for small images; at ImageNet size use `class_images` and convert per batch)."""
    return flat_pixels(class_images(dataset, cls, minimum=minimum, what=what))


def batch_for(values_per_image: int, batch_size: int = 256) -> int:
    """Images per forward pass without gradients: `batch_size` up to CIFAR size, fewer for larger
    images so one batch holds about as many values as 256 CIFAR images (224x224x3: 5)."""
    return max(1, min(batch_size, (256 * 3 * 32 * 32) // int(values_per_image)))


@torch.no_grad()
def class_features(model: nn.Module, images: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Penultimate features of uint8 NHWC class images, converted to float a batch at a time
    (no gradients needed: this is a lookup space)."""
    device = next(model.parameters()).device
    step = batch_for(int(np.prod(images.shape[1:])), batch_size)
    out = [model.features(to_float(images[start : start + step], device)).float().cpu() for start in range(0, len(images), step)]
    return torch.cat(out).numpy()


def n_components_for(explained_variance: Tensor, *, variance: float, components: int | None) -> Tensor:
    """Per row of (B, r) component variances: how many leading components to keep."""
    r = explained_variance.shape[-1]
    if components is not None:
        return torch.full(explained_variance.shape[:-1], min(components, r), dtype=torch.long)
    total = explained_variance.sum(-1, keepdim=True).clamp_min(1e-12)
    before = (explained_variance.cumsum(-1) - explained_variance) / total  # variance retained by the components before i
    return (before < variance - 1e-9).sum(-1).clamp(min=1)


MIN_ROWS = 8  # see Initializer.draw_chains


def chain_generators(n: int, generator: torch.Generator) -> list[torch.Generator]:
    """n independent CPU generators seeded from `generator` (one stream per chain)."""
    seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


class Initializer:
    """A fitted initialiser for one class: one image per chain generator, float in [0, 1] on the CPU.

    Each chain's start depends only on its own generator, never on which other
    chains are drawn with it, so continuous batching (refilling freed slots)
    and any split over ranks give the same images as one big batch.
    """

    kind = "base"

    def __init__(self, image_shape: tuple[int, int, int]):
        self.image_shape = tuple(image_shape)

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """n starts from one generator (each gets its own stream seeded from it): (n, C, H, W)."""
        return self.draw_chains(chain_generators(n, generator))

    def draw_chains(self, generators: Sequence[torch.Generator], *, ids: Sequence[int] | None = None, seed: int = 0) -> Tensor:
        """One start per generator (`ids`, the chains' indices in the run, and the run's `seed` matter only to
        initialisers that deal out a finite pool, such as `images`). Fewer than MIN_ROWS are padded with throw-away streams: a matrix
        product of one row takes another BLAS path whose last bits differ, and a chain's start must
        not depend on how many chains are drawn with it."""
        n = len(generators)
        padding = [torch.Generator().manual_seed(0) for _ in range(max(0, MIN_ROWS - n))]
        return self._draw(list(generators) + padding)[:n]

    def _draw(self, generators: Sequence[torch.Generator]) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _images(self, flat: Tensor) -> Tensor:
        return flat.clamp(0, 1).view(-1, *self.image_shape).float()
