"""The energy a chain descends, and its gradient with respect to the images.

    joint: E(x, y)                       (default: raise the class logit)
    ce:    E(x, y) - E(x)                (cross-entropy: make y win, not make x typical)
    mix:   E(x, y) + w * E(x)            (also pull x towards what the model finds likely)
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from robustgen.kernel.energy import joint_energy, marginal_energy, value_and_input_grad
from robustgen.kernel.errors import RobustgenError

EnergyFn = Callable[[Tensor, Tensor], Tensor]


def energy_function(name: str, *, marginal_weight: float = 0.5) -> EnergyFn:
    """Per-sample energy (N,) from logits (N, K) and labels (N,)."""
    if name == "joint":
        return joint_energy
    if name == "ce":
        return lambda logits, y: joint_energy(logits, y) - marginal_energy(logits)
    if name == "mix":
        return lambda logits, y: joint_energy(logits, y) + marginal_weight * marginal_energy(logits)
    raise RobustgenError(f"unknown energy {name!r}: choose one of joint, ce, mix")


def energy_and_grad(model: nn.Module, x: Tensor, y: Tensor, energy: EnergyFn) -> tuple[Tensor, Tensor, Tensor]:
    """(energy (N,), d energy / dx (N, C, H, W), logits) at x; one gradient evaluation."""
    return value_and_input_grad(model, x, y, energy)


@torch.no_grad()
def energies(model: nn.Module, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """(E(x, y), E(x)) per sample: what the stopping rule and the output record."""
    logits = model(x)
    return joint_energy(logits, y), marginal_energy(logits)
