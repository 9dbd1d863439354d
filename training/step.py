"""One SGD step of adversarial training (with DER), and the per-batch statistics it yields.

The model is in train mode for the attack too (BatchNorm on batch statistics),
as in Wong et al. 2020 / Rice et al. 2020: this is the setting in which
catastrophic overfitting is reported. Delta energies and AAE counts are always
measured, with or without DER, and every forward the attack already ran is
reused: zero-init FGSM starts at x, so its forward *is* f(x). Statistics stay
on the device (no host synchronisation per step); the loop adds them up and
reads them once per check or epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.kernel.device import autocast
from training.config import TrainConfig
from training.der import abnormal_mask, delta_energies_and_penalty, delta_energy_norm, der_loss
from training.generative import energy_logit, generative_loss
from training.methods import Method, get_method

# Sums accumulated over an epoch (device tensors; "de_norm_max" is a max, the rest are sums).
STAT_KEYS = (
    "n", "loss", "nat_loss", "adv_loss", "nat_correct", "adv_correct", "de_x", "de_x_sq", "de_xy", "de_xy_sq", "de_norm", "de_norm_max",
    "aae", "aae_high", "der_penalty", "gen_loss", "s_real", "s_ood", "n_ood",
)
MAX_KEYS = frozenset({"de_norm_max"})


@dataclass(frozen=True)
class StepModels:
    """The modules one step runs: `attack` (plain or compiled) for attacks and f(x); `train` (DDP-wrapped under
    torchrun) for the forward whose backward updates the weights. In one process both are the same module."""

    attack: nn.Module
    train: nn.Module


def der_active(config: TrainConfig, epoch: int, *, der: bool | None = None) -> bool:
    """DER is on for single-step methods from the start, for multi-step ones from `der_start`.
    `der` overrides config.der (an `--on-co der` intervention turns it on mid-run)."""
    if not (config.der if der is None else der):
        return False
    return epoch >= config.der_start if get_method(config.method).multi_step else True


def train_step(
    model: nn.Module | StepModels, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor, *, config: TrainConfig, epoch: int,
    precision: str, der: bool | None = None, der_beta: float | None = None, contrast: Tensor | None = None,
) -> dict[str, Tensor]:
    """Attack, forward, loss, backward, SGD update. Returns per-batch sums (see STAT_KEYS), on the device.

    contrast: the OOD images after T ascent steps (training.generative). Given, the step is a generative
    fine-tuning step: BatchNorm stays in eval mode (the energy trained is the one sampled, and real and OOD
    images never share batch statistics), x* (or x), x and the contrast go through ONE forward (DDP: one
    forward per backward), and weight * BCE(s(x), 1) + BCE(s(contrast), 0) joins the method's loss.
    The step also returns s per sample ("s_real_values", "s_ood_values") for the AUC windows.
    """
    models = model if isinstance(model, StepModels) else StepModels(model, model)
    method = get_method(config.method)
    use_der = der_active(config, epoch, der=der)
    beta = config.der_beta if der_beta is None else der_beta
    models.train.train(contrast is None)
    with autocast(x.device, precision):
        logits_nat, logits_adv, loss_start, logits_ood = _forwards(models, method, x, y, config=config, use_der=use_der, contrast=contrast)
        loss = method.outer_loss(logits_nat, logits_adv, y)
        gen = None
        if logits_ood is not None:
            gen = (energy_logit(logits_nat), energy_logit(logits_ood))
            gen_loss = generative_loss(*gen)
            loss = loss + config.gen_weight * gen_loss
        ce_adv = F.cross_entropy(logits_adv.detach(), y, reduction="none")
        aae = abnormal_mask(loss_start, ce_adv)
        energies = delta_energies_and_penalty(logits_nat, logits_adv, y, gamma=config.der_gamma, squared=config.der_squared)
        der_mask = None if method.multi_step else aae
        if use_der:
            loss = loss + beta * der_loss(energies.penalty, mask=der_mask)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    stats = _statistics(loss, logits_nat, logits_adv, y, energies, aae, der_mask, gamma=config.der_gamma)
    if gen is not None:
        s_real, s_ood = (s.detach() for s in gen)
        stats.update(gen_loss=gen_loss.detach().float() * stats["n"], s_real=s_real.sum(), s_ood=s_ood.sum(),
                     n_ood=torch.full((), float(len(s_ood)), device=y.device), s_real_values=s_real, s_ood_values=s_ood)
    return stats


def _forwards(models: StepModels, method: Method, x: Tensor, y: Tensor, *, config: TrainConfig, use_der: bool,
              contrast: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(f(x), f(x*), loss at the attack's start, f(contrast) or None): each computed once, with a graph only where the loss needs one."""
    if method.attack is None:  # standard training: x* = x, no energy shift
        logits, logits_ood = _joint_forward(models, [x], contrast)
        return logits, logits, F.cross_entropy(logits.detach(), y, reduction="none"), logits_ood
    clean_grad = use_der or method.clean_grad
    attack = method.attack(
        models.attack, x, y, eps=config.eps, step_size=config.step_size, steps=config.steps, restarts=config.restarts, norm=config.norm,
        keep_graph=clean_grad and method.starts_at_x and contrast is None,
    )
    if contrast is not None:
        logits_adv, logits_nat, logits_ood = _joint_forward(models, [attack.x_adv, x], contrast)
        return logits_nat, logits_adv, attack.loss_start, logits_ood
    if method.starts_at_x:
        logits_nat = attack.logits_start  # the attack's forward was f(x)
    else:
        with torch.set_grad_enabled(clean_grad):
            logits_nat = models.attack(x)
    return logits_nat, models.train(attack.x_adv), attack.loss_start, None


def _joint_forward(models: StepModels, inputs: list[Tensor], contrast: Tensor | None) -> tuple:
    """One forward of the inputs (and the contrast, if any) together; the logits split back per input, then f(contrast) or None."""
    if contrast is None:
        return (*(models.train(x) for x in inputs), None)
    logits = models.train(torch.cat([*inputs, contrast]))
    return tuple(logits.split([len(x) for x in inputs] + [len(contrast)]))


@torch.no_grad()
def _statistics(loss, logits_nat, logits_adv, y, energies, aae, der_mask, *, gamma: float) -> dict[str, Tensor]:
    d_marginal, d_joint = energies.marginal.detach(), energies.joint.detach()  # the ones the loss used: not recomputed
    de_norm = delta_energy_norm(d_marginal, d_joint)  # reported unsquared, whatever --der-squared says
    high = aae & (de_norm > gamma)  # high-energy AAE: ||[dE(x), dE(x,y)]|| above gamma
    penalty = energies.penalty.detach()
    n = torch.full((), float(len(y)), device=y.device)
    return {
        "n": n,
        "loss": loss.detach().float() * n,
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
        "der_penalty": (penalty * der_mask).sum() if der_mask is not None else penalty.sum(),
        **{key: torch.zeros((), device=y.device) for key in ("gen_loss", "s_real", "s_ood", "n_ood")},
    }


def accumulate(sums: dict[str, Tensor], stats: dict[str, Tensor]) -> None:
    """sums += stats (max for MAX_KEYS), in place, on the device."""
    for key in STAT_KEYS:
        sums[key] = torch.maximum(sums[key], stats[key]) if key in MAX_KEYS else sums[key] + stats[key]


def zero_stats(device: torch.device) -> dict[str, Tensor]:
    return {key: torch.zeros((), device=device) for key in STAT_KEYS}
