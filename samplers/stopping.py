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

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from robustgen.data import ImageDataset
from samplers.config import StopConfig
from samplers.energies import energies
from samplers.initializers.base import cache_key, cached_arrays, class_pixels, default_cache_dir, model_fingerprint


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
    """{"joint": E(x, y), "marginal": E(x)} over the training images of class `cls` (cached)."""
    key = cache_key(model=model_hash or model_fingerprint(model), dataset=dataset_fingerprint or dataset.fingerprint(), cls=cls)

    def compute() -> dict[str, np.ndarray]:
        pixels = class_pixels(dataset, cls, minimum=1, what="adaptive stopping")
        device = next(model.parameters()).device
        y_all, joint, marginal = torch.full((len(pixels),), cls, dtype=torch.long), [], []
        for start in range(0, len(pixels), batch_size):
            x = torch.from_numpy(pixels[start : start + batch_size]).view(-1, *dataset.image_shape).to(device)
            e_joint, e_marginal = energies(model, x, y_all[start : start + batch_size].to(device))
            joint.append(e_joint.cpu())
            marginal.append(e_marginal.cpu())
        return {"joint": torch.cat(joint).numpy(), "marginal": torch.cat(marginal).numpy()}

    directory = None if cache_dir is False else Path(cache_dir if cache_dir is not None else default_cache_dir()) / "reference"
    return cached_arrays(directory, f"energies-{key}", compute)


def stop_threshold(reference_joint: np.ndarray, config: StopConfig) -> float:
    """E(x, y) a chain must reach to stop under the band rule (+inf for `fixed`: never)."""
    if config.rule == "fixed":
        return float("-inf")  # unreachable: every chain runs all steps
    return float(np.quantile(reference_joint, config.quantile))


@dataclass
class StopState:
    """Per-chain bookkeeping for the patience rule (tensors over the chains of one batch)."""

    best: Tensor  # best E(x, y) so far
    since_improved: Tensor  # steps since best improved by min_delta

    @classmethod
    def start(cls, n: int, device) -> "StopState":
        return cls(torch.full((n,), float("inf"), device=device), torch.zeros(n, dtype=torch.long, device=device))


def should_stop(energy_joint: Tensor, threshold: Tensor, state: StopState, index: Tensor, config: StopConfig) -> Tensor:
    """Update the patience state of chains `index` with their current E(x, y); return which stop now."""
    if config.rule == "fixed":
        return torch.zeros_like(energy_joint, dtype=torch.bool)
    improved = energy_joint < state.best[index] - config.min_delta
    state.best[index] = torch.minimum(state.best[index], energy_joint)
    state.since_improved[index] = torch.where(improved, torch.zeros_like(index), state.since_improved[index] + 1)
    return (energy_joint <= threshold) | (state.since_improved[index] >= config.patience)
