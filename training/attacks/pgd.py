"""PGD (Madry et al. 2018): random start in the ball, `steps` projected steps, best of `restarts`.

Across restarts each sample keeps the point that fools the model, and among
equals the one with the higher loss (so PGD-k-r accuracy is "correct under
every restart").
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from training.attacks.base import AttackResult, ce_and_grad
from robustgen.threat import project, steepest_ascent_step, uniform_in_ball


def default_pgd_step_size(eps: float, steps: int) -> float:
    """2.5 eps / steps (Madry et al.): 2/255 for 10 steps at 8/255."""
    return 2.5 * eps / max(steps, 1)


def pgd_with_start(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    restarts: int = 1,
    norm: str = "Linf",
    random_start: bool = True,
) -> AttackResult:
    alpha = default_pgd_step_size(eps, steps) if step_size is None else step_size
    best_x, best_loss, best_wrong, loss_start = x.detach(), None, None, None
    for _ in range(max(restarts, 1)):
        x_adv = (x + uniform_in_ball(x, radius=eps, norm=norm)).clamp(0, 1) if random_start else x.detach()
        for i in range(steps):
            loss, grad, _ = ce_and_grad(model, x_adv, y)
            if loss_start is None:
                loss_start = loss
            x_adv = project(x_adv + steepest_ascent_step(grad, step_size=alpha, norm=norm), x, eps=eps, norm=norm)
        with torch.no_grad():
            logits = model(x_adv).float()
            loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
            wrong = logits.argmax(1) != y
        if loss_start is None:  # steps == 0
            loss_start = loss
        if best_loss is None:
            best_x, best_loss, best_wrong = x_adv, loss, wrong
        else:
            better = (wrong & ~best_wrong) | ((wrong == best_wrong) & (loss > best_loss))
            best_x = torch.where(better.view(-1, 1, 1, 1), x_adv, best_x)
            best_loss = torch.where(better, loss, best_loss)
            best_wrong = best_wrong | wrong
    return AttackResult(best_x.detach(), loss_start)


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    steps: int = 10,
    restarts: int = 1,
    norm: str = "Linf",
) -> Tensor:
    return pgd_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm).x_adv
