"""WideResNet-depth-k (Zagoruyko & Komodakis 2016), as used by TRADES and Rice et al."""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.kernel.models import register_model
from robustgen.kernel.models.base import Classifier
from robustgen.kernel.models.preact_resnet import preact_stages


class WideResNet(Classifier):
    def __init__(
        self,
        *,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        mean = mean if mean is not None else [0.0] * in_channels
        std = std if std is not None else [1.0] * in_channels
        super().__init__(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.stem = nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False)
        self.layers, in_planes = preact_stages(widths[0], widths[1:], [n] * 3)
        self.bn = nn.BatchNorm2d(in_planes)
        self.feature_dim = in_planes
        self.head = nn.Linear(in_planes, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_model("wide-resnet")
def wide_resnet(**arch_args) -> WideResNet:
    return WideResNet(**arch_args)


@register_model("wrn-28-10")
def wrn_28_10(**arch_args) -> WideResNet:
    return WideResNet(depth=28, widen_factor=10, **arch_args)


@register_model("wrn-34-10")
def wrn_34_10(**arch_args) -> WideResNet:
    return WideResNet(depth=34, widen_factor=10, **arch_args)
