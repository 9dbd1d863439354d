"""Adaptive stopping (energy guidance): stop a chain once it looks like real data to the model.

Reference: the model's joint energies E(x, y) (and marginal E(x)) on the real
training images of each class, computed once per (model, dataset, class) and
cached. A chain of class y stops when

    E(x, y) <= quantile_q( E(x_real, y) : x_real of class y )     (it entered the band of real data)
    or its best E(x, y) has not improved by min_delta for `patience` steps.

Going further than real data over-saturates images (too typical for the
classifier, not for people); stopping too early leaves them blurry. `fixed`
runs every chain for all steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robustgen.kernel.data import ImageDataset, to_float
from robustgen.kernel.models import model_fingerprint
from samplers.config import StopConfig
from samplers.energies import energies
from samplers.initializers.base import (
    batch_for,
    cache_key,
    cached_arrays,
    class_images,
    default_cache_dir,
)


def reference_energies(
    model: nn.Module,
    dataset: ImageDataset,
    cls: int,
    *,
    cache_dir: str | Path | None | bool = None,
    model_hash: str | None = None,
    dataset_fingerprint: str | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """{"joint": E(x, y), "marginal": E(x)} over the training images of class `cls` (cached).

    Reads only that class's images (`dataset.class_images`, uint8) and converts them to
    float a batch at a time (`batch_size` up to CIFAR size, fewer at 224x224).
    """
    key = cache_key(model=model_hash or model_fingerprint(model), dataset=dataset_fingerprint or dataset.fingerprint(), cls=cls)

    @torch.no_grad()  # a lookup: no graph kept
    def compute() -> dict[str, np.ndarray]:
        images = class_images(dataset, cls, minimum=1, what="adaptive stopping")
        device = next(model.parameters()).device
        step = batch_for(int(np.prod(dataset.image_shape)), batch_size)
        y_all, joint, marginal = torch.full((len(images),), cls, dtype=torch.long), [], []
        for start in range(0, len(images), step):
            x = to_float(images[start : start + step], device)
            e_joint, e_marginal = energies(model, x, y_all[start : start + step].to(device))
            joint.append(e_joint.cpu())
            marginal.append(e_marginal.cpu())
        return {"joint": torch.cat(joint).numpy(), "marginal": torch.cat(marginal).numpy()}

    directory = None if cache_dir is False else Path(cache_dir if cache_dir is not None else default_cache_dir()) / "reference"
    return cached_arrays(directory, f"energies-{key}", compute)


def stop_thresholds(reference: dict[str, np.ndarray] | None, config: StopConfig) -> tuple[float, float]:
    """(E(x, y) threshold, E(x) threshold) a chain must reach to stop under the band rule.

    `fixed` never stops early (-inf). Without `marginal_quantile` the E(x) band is
    open (+inf); with it a chain must also have E(x) within that quantile of real data.
    """
    if config.rule == "fixed" or reference is None:
        return float("-inf"), float("inf")
    joint = float(np.quantile(reference["joint"], config.quantile))
    marginal = float(np.quantile(reference["marginal"], config.marginal_quantile)) if config.marginal_quantile is not None else float("inf")
    return joint, marginal


def stop_now(
    energy_joint: Tensor, energy_marginal: Tensor, threshold: Tensor, best: Tensor, since: Tensor, config: StopConfig
) -> tuple[Tensor, Tensor, Tensor]:
    """Which chains stop now, and the updated patience state (best E(x, y), steps since it improved).

    A chain stops once its energies are inside the band of real data (E(x, y) <= threshold[:, 0]
    and E(x) <= threshold[:, 1]) or its best E(x, y) has not improved by min_delta for `patience` steps.
    """
    if config.rule == "fixed":
        return torch.zeros_like(energy_joint, dtype=torch.bool), best, since
    improved = energy_joint < best - config.min_delta
    best = torch.minimum(best, energy_joint)
    since = torch.where(improved, torch.zeros_like(since), since + 1)
    in_band = (energy_joint <= threshold[:, 0]) & (energy_marginal <= threshold[:, 1])
    return in_band | (since >= config.patience), best, since
