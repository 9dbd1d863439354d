"""PGD (Madry et al. 2018): random start in the ball, `steps` projected steps, best of `restarts`.

Restarts after the first attack only the samples no earlier restart fooled (the
count is the same as attacking all of them every time, at a fraction of the
cost); a sample keeps the first point that fools the model, else the point of
highest loss, so PGD-k-r accuracy is "correct under every restart".
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from training.attacks.base import AttackResult, MULTI_STEP, ce_and_grad
from robustgen.kernel.threat import project, steepest_ascent_step, uniform_in_ball


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
    steps: int = MULTI_STEP,
    restarts: int = 1,
    norm: str = "Linf",
    random_start: bool = True,
) -> AttackResult:
    """x* after `restarts` PGD runs; each restart after the first attacks only the samples no earlier one fooled.

    A sample keeps the first point that fools the model, else the highest-loss point of its restarts, so
    `fooled` is "wrong under some restart": PGD-k-r robust accuracy is correct & ~fooled (training.pgd_accuracy
    counts exactly this). `loss_start`: cross-entropy at the first restart's start, for every sample.
    """
    alpha = default_pgd_step_size(eps, steps) if step_size is None else step_size
    best_x, loss_start, best_loss = _restart(model, x, y, eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start)
    fooled = best_loss.wrong
    for _ in range(max(restarts, 1) - 1):
        alive = (~fooled).nonzero().squeeze(1)
        if len(alive) == 0:
            break
        x_adv, _, found = _restart(model, x[alive], y[alive], eps=eps, alpha=alpha, steps=steps, norm=norm, random_start=random_start)
        better = found.wrong | (found.loss > best_loss.loss[alive])
        best_x = best_x.clone()
        best_x[alive] = torch.where(better.view(-1, 1, 1, 1), x_adv, best_x[alive])
        best_loss.loss[alive] = torch.where(better, found.loss, best_loss.loss[alive])
        fooled = fooled.clone()
        fooled[alive] = found.wrong
    return AttackResult(best_x.detach(), loss_start, fooled=fooled)


class _Outcome(NamedTuple):
    loss: Tensor  # (N,) cross-entropy at the restart's end point
    wrong: Tensor  # (N,) bool: the end point is misclassified


def _restart(model, x, y, *, eps, alpha, steps, norm, random_start) -> tuple[Tensor, Tensor, _Outcome]:
    """One PGD run: (end point, cross-entropy at its start, outcome at its end)."""
    x_adv = (x + uniform_in_ball(x, radius=eps, norm=norm)).clamp(0, 1) if random_start else x.detach()
    loss_start = None
    for _ in range(steps):
        loss, grad, _ = ce_and_grad(model, x_adv, y)
        if loss_start is None:
            loss_start = loss
        x_adv = project(x_adv + steepest_ascent_step(grad, step_size=alpha, norm=norm), x, eps=eps, norm=norm)
    with torch.no_grad():
        logits = model(x_adv).float()
        loss = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        wrong = logits.argmax(1) != y
    return x_adv, (loss if loss_start is None else loss_start), _Outcome(loss, wrong)  # steps == 0: the start is the end


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    steps: int = MULTI_STEP,
    restarts: int = 1,
    norm: str = "Linf",
) -> Tensor:
    return pgd_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm).x_adv
