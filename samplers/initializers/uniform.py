"""`uniform`: every pixel independently uniform in [0, 1]. The weak baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from samplers.initializers.base import Initializer


class UniformInit(Initializer):
    kind = "uniform"

    def _draw(self, generators) -> Tensor:
        return torch.stack([torch.rand(self.image_shape, generator=g) for g in generators])


def fit(dataset, cls: int, config, model) -> dict:
    return {}  # nothing to fit


def build(dataset, cls: int, config, arrays: dict) -> UniformInit:
    return UniformInit(dataset.image_shape)
