"""What the attacks share: their result type and the loss/gradient at a point."""

from __future__ import annotations

from typing import NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.kernel.energy import value_and_input_grad


MULTI_STEP = 10  # iterations of a multi-step attack unless told otherwise (PGD-10 / TRADES-10, Madry et al.; Zhang et al.)


class AttackResult(NamedTuple):
    x_adv: Tensor  # (N, C, H, W) in [0, 1], detached
    loss_start: Tensor  # (N,) cross-entropy at the attack's starting point, detached
    logits_start: Tensor | None = None  # (N, K) logits at the starting point (attached to the graph when kept)
    fooled: Tensor | None = None  # (N,) bool, multi-restart attacks: x_adv is misclassified (measured by the attack)


def ce_and_grad(model: nn.Module, x: Tensor, y: Tensor, *, keep_graph: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Per-sample cross-entropy at x (detached), its gradient with respect to x, and the logits.

    keep_graph=True: attached logits, so a training step reuses this forward as f(x) (zero-init FGSM starts at x).
    """
    return value_and_input_grad(model, x, y, _cross_entropy, keep_graph=keep_graph)


def _cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="none")
