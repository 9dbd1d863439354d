"""What every robustgen classifier shares: in-model normalisation, features + head."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn


class Classifier(nn.Module):
    """Base class: subclasses implement `embed(x_normalised) -> features`."""

    def __init__(self, *, num_classes: int, in_channels: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(mean) != in_channels or len(std) != in_channels:
            raise ValueError(f"mean/std need {in_channels} values, got {len(mean)}/{len(std)}")
        self.num_classes = num_classes
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=True)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=True)

    def embed(self, x: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of images `x` in [0, 1]."""
        return self.embed((x - self.mean) / self.std)

    def forward(self, x: Tensor) -> Tensor:
        """Logits in fp32: under bf16 autocast the body runs in bf16 but the head does not, so
        energies (logit differences of ~0.1 in DER) are not quantised to bf16's 3 significant digits."""
        features = self.features(x)
        if features.dtype == torch.float32:
            return self.head(features)
        with torch.autocast(device_type=features.device.type, enabled=False):
            return self.head(features.float())
