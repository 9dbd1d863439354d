"""A classifier read as an energy-based model (DESIGN.md section 2).

All functions take logits `f(x)` of shape (N, K) and return per-sample
energies of shape (N,). Low energy = the model finds the input likely.

    E(x)    = -logsumexp_k f(x)[k]      marginal energy
    E(x, y) = -f(x)[y]                  joint energy
    CE(x,y) = E(x, y) - E(x)            cross-entropy is their difference
"""

from __future__ import annotations

import torch
from torch import Tensor


def marginal_energy(logits: Tensor) -> Tensor:
    return -torch.logsumexp(logits.float(), dim=1)


def joint_energy(logits: Tensor, y: Tensor) -> Tensor:
    return -logits.float().gather(1, y.view(-1, 1)).squeeze(1)


def cross_entropy_from_energies(logits: Tensor, y: Tensor) -> Tensor:
    """Per-sample cross-entropy written as E(x, y) - E(x)."""
    return joint_energy(logits, y) - marginal_energy(logits)


def delta_energies(logits_nat: Tensor, logits_adv: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """dE(x) = E(x) - E(x*) and dE(x, y) = E(x, y) - E(x*, y), per sample."""
    d_marginal = marginal_energy(logits_nat) - marginal_energy(logits_adv)
    d_joint = joint_energy(logits_nat, y) - joint_energy(logits_adv, y)
    return d_marginal, d_joint
