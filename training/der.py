"""The Delta Energy Regularizer (DESIGN.md section 2).

Per sample, with dE(x) = E(x) - E(x*) and dE(x, y) = E(x, y) - E(x*, y):

    L_dE = max( || [dE(x), dE(x, y)] ||_2 - gamma, 0 )      (or the squared norm with squared=True)

Gradients flow into the weights through both f(x) and f(x*); x* itself is a
fixed (detached) input. Single-step methods apply it to abnormal adversarial
examples (AAEs) only, multi-step methods to every sample from `der_start` on.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from robustgen.kernel.energy import delta_energies


def delta_energy_norm(d_marginal: Tensor, d_joint: Tensor, *, squared: bool = False) -> Tensor:
    """|| [dE(x), dE(x, y)] ||_2 per sample (squared if asked); gradient 0 at the origin."""
    stacked = torch.stack([d_marginal, d_joint], dim=1)
    if squared:
        return stacked.pow(2).sum(1)
    return torch.linalg.vector_norm(stacked, ord=2, dim=1)


class DeltaEnergies(NamedTuple):
    marginal: Tensor  # dE(x) = E(x) - E(x*), (N,)
    joint: Tensor  # dE(x, y) = E(x, y) - E(x*, y), (N,)
    penalty: Tensor  # L_dE per sample, (N,)


def delta_energies_and_penalty(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, *, gamma: float, squared: bool = False) -> DeltaEnergies:
    """dE(x), dE(x, y) and L_dE = max(||[dE(x), dE(x, y)]|| - gamma, 0) per sample (what the step needs at once)."""
    d_marginal, d_joint = delta_energies(logits_nat, logits_adv, y)
    penalty = torch.relu(delta_energy_norm(d_marginal, d_joint, squared=squared) - gamma)
    return DeltaEnergies(d_marginal, d_joint, penalty)


def der_penalty(logits_nat: Tensor, logits_adv: Tensor, y: Tensor, *, gamma: float, squared: bool = False) -> Tensor:
    """L_dE per sample, shape (N,): zero while the delta-energy norm stays below gamma."""
    return delta_energies_and_penalty(logits_nat, logits_adv, y, gamma=gamma, squared=squared).penalty


def abnormal_mask(loss_start: Tensor, loss_adv: Tensor) -> Tensor:
    """AAEs: samples whose loss at the attack's start point is higher than at x* (the step made it easier)."""
    return loss_start.detach() > loss_adv.detach()


def der_loss(penalty: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """mean(1[mask] * L_dE) over the batch (the mean runs over all N samples, as in DESIGN.md)."""
    if mask is not None:
        penalty = penalty * mask.to(penalty.dtype)
    return penalty.mean()
