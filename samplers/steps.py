"""One sampler step each, as pure functions of (state, gradient, noise).

The loop in samplers/sampling.py computes the gradient and draws the noise;
these functions only move pixels, so they are easy to test and reuse.
"""

from __future__ import annotations

from torch import Tensor

from robustgen.kernel.threat import project, steepest_ascent_step


def sgld_step(
    x: Tensor, velocity: Tensor, grad: Tensor, noise: Tensor, *, step_size: float, noise_std: float, momentum: float
) -> tuple[Tensor, Tensor]:
    """Langevin step with momentum (DESIGN.md section 3):

        v <- m v - (eta / 2) grad E
        x <- clip(x + v + sigma * noise, 0, 1)

    `noise` is a standard-normal tensor shaped like x. Returns (x, v).
    """
    velocity = momentum * velocity - 0.5 * step_size * grad
    return (x + velocity + noise_std * noise).clamp(0, 1), velocity


def pgd_step(x: Tensor, grad: Tensor, x0: Tensor, *, step_size: float, norm: str, eps: float | None) -> Tensor:
    """Normalised steepest descent on the energy (Santurkar et al. 2019): step of pixel length
    `step_size` in `norm`, then back into the eps-ball around x0 (if eps) and into [0, 1]."""
    x = x - steepest_ascent_step(grad, step_size=step_size, norm=norm)
    if eps is not None:
        return project(x, x0, eps=eps, norm=norm)
    return x.clamp(0, 1)
