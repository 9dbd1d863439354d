"""What the attacks share: their result type and the loss/gradient at a point."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttackResult(NamedTuple):
    x_adv: Tensor  # (N, C, H, W) in [0, 1], detached
    loss_start: Tensor  # (N,) cross-entropy at the attack's starting point, detached


def ce_and_grad(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample cross-entropy at x (detached) and its gradient with respect to x."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        loss = F.cross_entropy(model(x).float(), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach(), grad.detach()
