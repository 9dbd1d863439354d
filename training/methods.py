"""Adversarial-training methods: how each one turns a clean batch into x* (DESIGN.md section 2).

    standard  no attack (x* = x)
    fgsm      zero init, step = eps                              single-step
    fgsm-rs   uniform init in the ball, step = 1.25 eps, project single-step
    n-fgsm    uniform noise of 2 eps, step = eps, NO projection   single-step (clipped to [0, 1] only)
    pgd       random start, `steps` steps of `step_size`          multi-step
    trades    KL inner maximisation, outer loss CE(x) + 6 KL      multi-step

Every method yields an `AttackResult`: x* and the per-sample cross-entropy at the
attack's starting point (for the AAE test: loss at start > loss at x*).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import Tensor, nn

from robustgen.errors import RobustgenError
from training.attacks import AttackResult, fgsm_rs_with_start, fgsm_with_start, n_fgsm_with_start, pgd_with_start, trades_kl_with_start
from training.attacks.pgd import default_pgd_step_size

TRADES_BETA = 6.0  # weight of the KL term in the TRADES outer loss (Zhang et al. 2019)


@dataclass(frozen=True)
class Method:
    name: str
    multi_step: bool
    default_step_size: Callable[[float, int], float] | None  # (eps, steps) -> step size, pixel units
    default_steps: int  # attack iterations when --steps is not given


METHODS: dict[str, Method] = {
    "standard": Method("standard", False, None, 0),
    "fgsm": Method("fgsm", False, lambda eps, steps: eps, 1),
    "fgsm-rs": Method("fgsm-rs", False, lambda eps, steps: 1.25 * eps, 1),
    "n-fgsm": Method("n-fgsm", False, lambda eps, steps: eps, 1),
    "pgd": Method("pgd", True, default_pgd_step_size, 10),
    "trades": Method("trades", True, default_pgd_step_size, 10),
}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise RobustgenError(f"unknown method {name!r}: choose one of {', '.join(METHODS)}")
    return METHODS[name]


def adversarial_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    method: str,
    eps: float,
    step_size: float,
    steps: int,
    restarts: int,
    norm: str,
) -> AttackResult:
    """x* for `method` (the model's train/eval mode is left as the caller set it)."""
    if method == "fgsm":
        return fgsm_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm)
    if method == "fgsm-rs":
        return fgsm_rs_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm)
    if method == "n-fgsm":
        return n_fgsm_with_start(model, x, y, eps=eps, step_size=step_size, norm=norm)
    if method == "pgd":
        return pgd_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)
    if method == "trades":
        return trades_kl_with_start(model, x, y, eps=eps, step_size=step_size, steps=steps, norm=norm)
    raise RobustgenError(f"method {method!r} has no attack: choose one of {', '.join(m for m in METHODS if m != 'standard')}")
