"""One SGD step of adversarial training (with DER), and the per-batch statistics it yields.

The model is in train mode for the attack too (BatchNorm on batch statistics),
as in Wong et al. 2020 / Rice et al. 2020: this is the setting in which
catastrophic overfitting is reported. The clean forward pass f(x) runs every
step (with gradient only when DER or TRADES needs it) so that delta energies
and AAE counts are always measured, with or without DER.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.device import autocast
from robustgen.energy import delta_energies
from training.config import TrainConfig
from training.der import abnormal_mask, delta_energy_norm, der_loss
from training.methods import TRADES_BETA, adversarial_batch, get_method

# Sums accumulated over an epoch (tensors, synchronised once per epoch).
STAT_KEYS = (
    "n", "loss", "nat_loss", "adv_loss", "nat_correct", "adv_correct", "de_x", "de_x_sq", "de_xy", "de_xy_sq", "de_norm", "de_norm_max",
    "aae", "aae_high", "der_penalty",
)


def der_active(config: TrainConfig, epoch: int) -> bool:
    """DER is on for single-step methods from the start, for multi-step ones from `der_start`."""
    if not config.der:
        return False
    return epoch >= config.der_start if get_method(config.method).multi_step else True


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, config: TrainConfig, epoch: int, precision: str) -> dict[str, Tensor]:
    """Attack, forward, loss, backward, SGD update. Returns per-batch sums (see STAT_KEYS)."""
    method = get_method(config.method)
    device = x.device
    use_der = der_active(config, epoch)
    model.train()
    with autocast(device, precision):
        if config.method == "standard":
            logits_nat = model(x).float()
            logits_adv = logits_nat
            loss = F.cross_entropy(logits_nat, y)
            aae = torch.zeros_like(y, dtype=torch.bool)
            d_marginal = d_joint = penalty = torch.zeros(len(y), device=device)  # x* = x: no energy shift
        else:
            attack = adversarial_batch(
                model, x, y, method=config.method, eps=config.eps, step_size=config.step_size,
                steps=config.steps, restarts=config.restarts, norm=config.norm,
            )
            with torch.set_grad_enabled(use_der or config.method == "trades"):
                logits_nat = model(x).float()
            logits_adv = model(attack.x_adv).float()
            ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
            if config.method == "trades":
                kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="batchmean")
                loss = F.cross_entropy(logits_nat, y) + TRADES_BETA * kl
            else:
                loss = ce_adv.mean()
            aae = abnormal_mask(attack.loss_start, ce_adv)
            d_marginal, d_joint = delta_energies(logits_nat, logits_adv, y)
            norm = delta_energy_norm(d_marginal, d_joint, squared=config.der_squared)
            penalty = torch.relu(norm - config.der_gamma)
            if use_der:
                mask = None if method.multi_step else aae
                loss = loss + config.der_beta * der_loss(penalty, mask=mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        d_marginal, d_joint = d_marginal.detach(), d_joint.detach()  # the ones the loss used: not recomputed
        de_norm = delta_energy_norm(d_marginal, d_joint)  # reported unsquared, whatever --der-squared says
        high = aae & (de_norm > config.der_gamma)  # high-energy AAE: ||[dE(x), dE(x,y)]|| above gamma
        return {
            "n": torch.tensor(float(len(y)), device=device),
            "loss": loss.detach() * len(y),
            "nat_loss": F.cross_entropy(logits_nat.detach(), y, reduction="sum"),
            "adv_loss": F.cross_entropy(logits_adv.detach(), y, reduction="sum"),
            "nat_correct": (logits_nat.argmax(1) == y).sum().float(),
            "adv_correct": (logits_adv.argmax(1) == y).sum().float(),
            "de_x": d_marginal.sum(),
            "de_x_sq": d_marginal.pow(2).sum(),
            "de_xy": d_joint.sum(),
            "de_xy_sq": d_joint.pow(2).sum(),
            "de_norm": de_norm.sum(),
            "de_norm_max": de_norm.max(),
            "aae": aae.sum().float(),
            "aae_high": high.sum().float(),
            "der_penalty": (penalty.detach() * aae).sum() if not method.multi_step else penalty.detach().sum(),
        }
