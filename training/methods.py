"""Adversarial-training methods: one registry that owns each method's attack, defaults and outer loss.

    standard  no attack (x* = x)                                  loss CE(f(x), y)
    fgsm      zero init, step = eps                   single-step loss CE(f(x*), y)
    fgsm-rs   uniform init in the ball, 1.25 eps, project  single-step
    n-fgsm    uniform noise of 2 eps, step = eps, NO projection   single-step (clipped to [0, 1] only)
    pgd       random start, `steps` steps of `step_size`   multi-step
    trades    KL inner maximisation                       multi-step  loss CE(f(x), y) + 6 KL(f(x) || f(x*))

Every attack yields an `AttackResult`: x* and the per-sample cross-entropy at the
attack's starting point (for the AAE test: loss at start > loss at x*). Code
that needs to know something about a method asks its `Method` entry; nothing
else branches on method names.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.kernel.errors import RobustgenError
from training.attacks import AttackResult, fgsm_rs_with_start, fgsm_with_start, n_fgsm_with_start, pgd_with_start, trades_kl_with_start
from training.attacks.fgsm import fgsm_step_size
from training.attacks.fgsm_rs import fgsm_rs_step_size
from training.attacks.nfgsm import n_fgsm_step_size
from training.attacks.base import MULTI_STEP
from training.attacks.pgd import default_pgd_step_size

TRADES_BETA = 6.0  # weight of the KL term in the TRADES outer loss (Zhang et al. 2019)


class Attack(Protocol):
    def __call__(
        self, model: nn.Module, x: Tensor, y: Tensor, *, eps: float, step_size: float, steps: int, restarts: int, norm: str, keep_graph: bool
    ) -> AttackResult: ...


OuterLoss = Callable[[Tensor, Tensor, Tensor], Tensor]  # (logits_nat, logits_adv, y) -> scalar


def adversarial_ce(logits_nat: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits_adv, y)


def clean_ce(logits_nat: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits_nat, y)


def trades_loss(logits_nat: Tensor, logits_adv: Tensor, y: Tensor) -> Tensor:
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_nat, dim=1), reduction="batchmean")
    return F.cross_entropy(logits_nat, y) + TRADES_BETA * kl


@dataclass(frozen=True)
class Method:
    name: str
    multi_step: bool  # DER on every sample from der_start (multi-step) or on AAEs from the start (single-step)
    default_steps: int  # attack iterations when --steps is not given
    default_step_size: Callable[[float, int], float] | None  # (eps, steps) -> step size in pixel units: the attack file's own default
    attack: Attack | None  # None: no adversarial examples (standard training)
    outer_loss: OuterLoss
    clean_grad: bool = False  # the outer loss needs f(x) with a gradient (TRADES)
    starts_at_x: bool = False  # the attack's first forward is f(x) itself: the step reuses it

    @property
    def adversarial(self) -> bool:
        """Whether the method trains on adversarial examples (everything but `standard`): what it reports and selects by."""
        return self.attack is not None

    def selection_key(self, record: dict) -> float:
        """What best.pt maximises for this method: test PGD accuracy with clean accuracy breaking ties; clean accuracy
        for a method without adversarial examples."""
        if not self.adversarial:
            return record["test_clean_acc"]
        return record["test_pgd_acc"] + 1e-6 * record["test_clean_acc"]

    def step_size(self, eps: float, steps: int, given: float | None) -> float:
        if given is not None:
            return float(given)
        return float(self.default_step_size(eps, steps)) if self.default_step_size is not None else 0.0


def _fgsm(model, x, y, *, eps, step_size, steps, restarts, norm, keep_graph):
    return fgsm_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm, keep_graph=keep_graph)


def _fgsm_rs(model, x, y, *, eps, step_size, steps, restarts, norm, keep_graph):
    return fgsm_rs_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm)


def _n_fgsm(model, x, y, *, eps, step_size, steps, restarts, norm, keep_graph):
    return n_fgsm_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm)


def _pgd(model, x, y, *, eps, step_size, steps, restarts, norm, keep_graph):
    return pgd_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)


def _trades(model, x, y, *, eps, step_size, steps, restarts, norm, keep_graph):
    return trades_kl_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm)


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("standard", False, 0, None, None, clean_ce),
        Method("fgsm", False, 1, fgsm_step_size, _fgsm, adversarial_ce, starts_at_x=True),
        Method("fgsm-rs", False, 1, fgsm_rs_step_size, _fgsm_rs, adversarial_ce),
        Method("n-fgsm", False, 1, n_fgsm_step_size, _n_fgsm, adversarial_ce),
        Method("pgd", True, MULTI_STEP, default_pgd_step_size, _pgd, adversarial_ce),
        Method("trades", True, MULTI_STEP, default_pgd_step_size, _trades, trades_loss, clean_grad=True),
    )
}
ATTACK_METHODS = tuple(name for name, m in METHODS.items() if m.attack is not None)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise RobustgenError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]
