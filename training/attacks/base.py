"""What the attacks share: their result type and the loss/gradient at a point."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class AttackResult(NamedTuple):
    x_adv: Tensor  # (N, C, H, W) in [0, 1], detached
    loss_start: Tensor  # (N,) cross-entropy at the attack's starting point, detached
    logits_start: Tensor | None = None  # (N, K) logits at the starting point (attached to the graph when kept)


def ce_and_grad(model: nn.Module, x: Tensor, y: Tensor, *, keep_graph: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample cross-entropy at x (detached), its gradient with respect to x, and the logits.

    keep_graph=True keeps the forward's graph alive and returns attached logits, so a
    training step can reuse this forward as f(x) (zero-init FGSM starts at x) instead of
    running the model again.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y, reduction="none")
        (grad,) = torch.autograd.grad(loss.sum(), x, retain_graph=keep_graph)
    return loss.detach(), grad.detach(), logits if keep_graph else logits.detach()
