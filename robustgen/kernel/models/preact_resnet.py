"""PreActResNet-18 in the CIFAR layout of Wong et al. 2020 and Rice et al. 2020.

3x3 stem, four stages of two pre-activation basic blocks with widths
(1, 2, 4, 8) x `width` (64 -> 64-128-256-512), BN-ReLU, global average pool,
linear head. `width=16` gives the small variant used for tests and CPU runs.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.kernel.models import register_model
from robustgen.kernel.models.base import Classifier


class PreActBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


def preact_stages(in_planes: int, stage_planes: Sequence[int], blocks_per_stage: Sequence[int]) -> tuple[nn.Sequential, int]:
    """(the stages of pre-activation blocks, their output width): every stage after the first halves the resolution in
    its first block. Shared by PreActResNet and WideResNet."""
    layers = []
    for stage, (planes, blocks) in enumerate(zip(stage_planes, blocks_per_stage)):
        for i in range(blocks):
            layers.append(PreActBlock(in_planes, planes, stride=2 if (stage > 0 and i == 0) else 1))
            in_planes = planes
    return nn.Sequential(*layers), in_planes


class PreActResNet(Classifier):
    def __init__(
        self,
        *,
        num_blocks: Sequence[int],
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ):
        mean = mean if mean is not None else [0.0] * in_channels
        std = std if std is not None else [1.0] * in_channels
        super().__init__(num_classes=num_classes, in_channels=in_channels, mean=mean, std=std)
        self.stem = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.layers, in_planes = preact_stages(width, [width * 2**stage for stage in range(len(num_blocks))], num_blocks)
        self.bn = nn.BatchNorm2d(in_planes)
        self.feature_dim = in_planes
        self.head = nn.Linear(in_planes, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        out = self.layers(self.stem(x))
        out = F.relu(self.bn(out))
        return F.adaptive_avg_pool2d(out, 1).flatten(1)


@register_model("preact-resnet18")
def preact_resnet18(**arch_args) -> PreActResNet:
    return PreActResNet(num_blocks=(2, 2, 2, 2), **arch_args)
