"""`uniform`: every pixel independently uniform in [0, 1]. The weak baseline."""

from __future__ import annotations

import torch
from torch import Tensor

from samplers.initializers.base import Initializer


class UniformInit(Initializer):
    kind = "uniform"

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.rand((n, *self.image_shape), generator=generator)


def fit_uniform(*, image_shape, **_unused) -> UniformInit:
    return UniformInit(image_shape)
