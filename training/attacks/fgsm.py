"""FGSM (Goodfellow et al. 2015): zero init, one step of size eps."""

from __future__ import annotations

from torch import Tensor, nn

from training.attacks.base import AttackResult
from training.attacks.single_step import single_step


def fgsm_step_size(eps: float, steps: int = 1) -> float:
    """FGSM's default step: eps (the step reaches the ball's surface from its centre)."""
    return eps


def fgsm_with_start(
    model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, norm: str = "Linf", keep_graph: bool = False
) -> AttackResult:
    """FGSM starts at x, so its forward is f(x): `logits_start` are the clean logits (attached if keep_graph)."""
    step = fgsm_step_size(eps) if step_size is None else step_size
    return single_step(model, x, y, x_start=x, eps=eps, step_size=step, norm=norm, project_to_ball=True, keep_graph=keep_graph)


def fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, norm: str = "Linf") -> Tensor:
    return fgsm_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm).x_adv
