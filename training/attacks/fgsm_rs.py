"""RS-FGSM (Wong et al. 2020): uniform start in the eps-ball, one step of 1.25 eps, project back."""

from __future__ import annotations

from torch import Tensor, nn

from training.attacks.base import AttackResult
from training.attacks.single_step import single_step
from robustgen.kernel.threat import uniform_in_ball


def fgsm_rs_step_size(eps: float, steps: int = 1) -> float:
    """RS-FGSM's default step: 1.25 eps (Wong et al. 2020)."""
    return 1.25 * eps


def fgsm_rs_with_start(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, norm: str = "Linf") -> AttackResult:
    step = fgsm_rs_step_size(eps) if step_size is None else step_size
    x_start = (x + uniform_in_ball(x, radius=eps, norm=norm)).clamp(0.0, 1.0)
    return single_step(model, x, y, x_start=x_start, eps=eps, step_size=step, norm=norm, project_to_ball=True)


def fgsm_rs(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, norm: str = "Linf") -> Tensor:
    return fgsm_rs_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm).x_adv
