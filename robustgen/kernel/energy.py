"""A classifier read as an energy-based model (DESIGN.md section 2).

All functions take logits `f(x)` of shape (N, K) and return per-sample
energies of shape (N,). Low energy = the model finds the input likely.

    E(x)    = -logsumexp_k f(x)[k]      marginal energy
    E(x, y) = -f(x)[y]                  joint energy
    CE(x,y) = E(x, y) - E(x)            cross-entropy is their difference
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


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


def value_and_input_grad(
    model: nn.Module, x: Tensor, y: Tensor, per_sample: Callable[[Tensor, Tensor], Tensor], *, keep_graph: bool = False
) -> tuple[Tensor, Tensor, Tensor]:
    """(per_sample(model(x), y) detached (N,), its gradient with respect to x, the logits): one gradient evaluation.

    The one input-gradient of attacks (a loss to raise) and samplers (an energy to lower). In eval mode samples
    are independent, so the gradient of the sum is each sample's own gradient; in train mode BatchNorm's batch
    statistics couple them, and this is the gradient of the batch's summed loss (what attacks inside training use).
    keep_graph=True keeps the forward's graph and returns attached logits, so a training step can reuse
    this forward as f(x) instead of running the model again.
    """
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits = model(x)
        value = per_sample(logits, y)
        (grad,) = torch.autograd.grad(value.sum(), x, retain_graph=keep_graph)
    return value.detach(), grad.detach(), logits if keep_graph else logits.detach()
