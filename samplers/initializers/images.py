"""`images:SPEC`: real images from another dataset as seeds (DAT, Yin et al. ICLR 2026).

The seeds carry natural image statistics and no class: the class has to come from the
chain's steps, so the seeds alone are this init's control. They are dealt to classes
at random and class-balanced, never by any model's opinion of them (seeds picked by a
model's logits are retrieval, not generation): a fixed random permutation of the pool
is cut into one disjoint part per class of the dataset, and chain i of class c takes
image (i + offset(seed)) mod |part c| of its class's part, so the chains of a run get
distinct seeds while a class has images left, and another --seed shifts the window.

Seeds the model was trained on (byte-identical to one of its training images) are
refused: they would be copies, not samples.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from robustgen.kernel.data.pool import read_image_pool, training_overlap
from robustgen.kernel.errors import RobustgenError
from samplers.initializers.base import Initializer, class_images

PARTITION_SEED = 20260  # fixes which pool images each class may draw (any fixed value: the cut is random w.r.t. content)


def seed_pool(dataset, source: str):
    """The pool of `source` at the dataset's image shape (cached per process)."""
    return read_image_pool(source, shape=tuple(dataset.image_shape))


def class_part(pool_size: int, num_classes: int, cls: int) -> np.ndarray:
    """Indices of the pool images class `cls` may draw: its share of a fixed random permutation."""
    order = np.random.default_rng(PARTITION_SEED).permutation(pool_size)
    return order[cls::num_classes]


def refuse_training_images(dataset, source: str, train_images: np.ndarray, *, whose: str) -> None:
    """One line if any seed of `source` is byte-identical to one of `train_images` (`whose` training images they are)."""
    copies = training_overlap(seed_pool(dataset, source), train_images)
    if copies:
        raise RobustgenError(f"images:{source}: {copies} of its images are training images of {whose}: seeds from the model's training "
                             "split would be copies; use another dataset or only its test split (images:SPEC@test)")


def fit(dataset, cls: int, config, model) -> dict:
    pool = seed_pool(dataset, config.source)
    if len(pool.images) < dataset.num_classes:
        raise RobustgenError(f"images:{config.source} holds {len(pool.images)} images for {dataset.num_classes} classes: give at least one per class")
    refuse_training_images(dataset, config.source, class_images(dataset, cls, minimum=0), whose=f"class {dataset.classes[cls]}")
    return {"images": pool.images[class_part(len(pool.images), dataset.num_classes, cls)]}


def build(dataset, cls: int, config, arrays: dict) -> "ImagesInit":
    return ImagesInit(dataset.image_shape, arrays["images"])


class ImagesInit(Initializer):
    kind = "images"

    def __init__(self, image_shape: tuple[int, int, int], images: np.ndarray):
        super().__init__(image_shape)
        self.images = images  # (n, H, W, C) uint8: this class's share of the pool

    def draw_chains(self, generators: Sequence[torch.Generator], *, ids: Sequence[int] | None = None, seed: int = 0) -> Tensor:
        """Chain i's seed image (ids given), else one drawn by each chain's generator."""
        if ids is None:
            rows = [int(torch.randint(len(self.images), (1,), generator=g)) for g in generators]
        else:
            offset = int(np.random.default_rng(seed).integers(len(self.images)))
            rows = [(int(i) + offset) % len(self.images) for i in ids]
        picked = torch.from_numpy(self.images[rows]).permute(0, 3, 1, 2).float().div_(255.0)
        return picked.contiguous()
