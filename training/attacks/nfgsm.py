"""N-FGSM (de Jorge et al. 2022): noise of 2 eps, one step of eps, NO projection to the eps-ball.

The deliberate exception to "x_adv stays in the eps-ball": N-FGSM's point is
that the larger, unprojected perturbation (up to 3 eps in L-inf) avoids
catastrophic overfitting without clipping. x_adv is still clipped to [0, 1].
"""

from __future__ import annotations

from torch import Tensor, nn

from training.attacks.base import AttackResult
from training.attacks.single_step import single_step
from robustgen.kernel.threat import uniform_in_ball

NOISE_MULTIPLIER = 2.0  # noise radius in units of eps (de Jorge et al. 2022)


def n_fgsm_step_size(eps: float, steps: int = 1) -> float:
    """N-FGSM's default step: eps (de Jorge et al. 2022)."""
    return eps


def n_fgsm_with_start(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, norm: str = "Linf") -> AttackResult:
    step = n_fgsm_step_size(eps) if step_size is None else step_size
    x_start = (x + uniform_in_ball(x, radius=NOISE_MULTIPLIER * eps, norm=norm)).clamp(0.0, 1.0)
    return single_step(model, x, y, x_start=x_start, eps=eps, step_size=step, norm=norm, project_to_ball=False)


def n_fgsm(model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float | None = None, norm: str = "Linf") -> Tensor:
    return n_fgsm_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm).x_adv
