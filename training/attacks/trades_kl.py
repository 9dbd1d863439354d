"""TRADES inner maximisation (Zhang et al. 2019): maximise KL(f(x) || f(x')) over the eps-ball.

Starts at x + 0.001 N(0, 1) as in the reference code. `loss_start` is the
cross-entropy at that start (the same AAE statistic as for the other methods).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.attacks.base import AttackResult, MULTI_STEP
from training.attacks.pgd import default_pgd_step_size
from robustgen.kernel.threat import project, steepest_ascent_step

START_NOISE = 0.001  # std of the Gaussian start, pixel units


def trades_kl_with_start(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, steps: int = MULTI_STEP, norm: str = "Linf"
) -> AttackResult:
    alpha = default_pgd_step_size(eps, steps) if step_size is None else step_size
    with torch.no_grad():
        p_nat = F.softmax(model(x).float(), dim=1)
    x_adv = (x + START_NOISE * torch.randn_like(x)).clamp(0, 1).detach()
    loss_start = None
    for _ in range(max(steps, 1)):
        with torch.enable_grad():
            x_adv.requires_grad_(True)
            logits = model(x_adv).float()
            kl = F.kl_div(F.log_softmax(logits, dim=1), p_nat, reduction="none").sum(1)
            (grad,) = torch.autograd.grad(kl.sum(), x_adv)
        if loss_start is None:
            loss_start = F.cross_entropy(logits.detach(), y, reduction="none")
        x_adv = project(x_adv.detach() + steepest_ascent_step(grad, step_size=alpha, norm=norm), x, eps=eps, norm=norm)
    return AttackResult(x_adv.detach(), loss_start)


def trades_kl(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, steps: int = MULTI_STEP, norm: str = "Linf"
) -> Tensor:
    return trades_kl_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm).x_adv
