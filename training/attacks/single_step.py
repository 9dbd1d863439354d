"""One signed/normalised gradient step from a starting point: the body of every FGSM variant."""

from __future__ import annotations

from torch import Tensor, nn

from robustgen.kernel.threat import project, steepest_ascent_step
from training.attacks.base import AttackResult, ce_and_grad


def single_step(
    model: nn.Module, x: Tensor, y: Tensor, *, x_start: Tensor, eps: float, step_size: float, norm: str, project_to_ball: bool,
    keep_graph: bool = False,
) -> AttackResult:
    loss_start, grad, logits_start = ce_and_grad(model, x_start, y, keep_graph=keep_graph)
    x_adv = x_start + steepest_ascent_step(grad, step_size=step_size, norm=norm)
    if project_to_ball:
        x_adv = project(x_adv, x, eps=eps, norm=norm)
    else:
        x_adv = x_adv.clamp(0.0, 1.0)
    return AttackResult(x_adv.detach(), loss_start, logits_start)
