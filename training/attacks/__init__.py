"""Attacks: `(model, x, y, *, eps, step_size, steps, norm, ...) -> x_adv`, one per file.

Each also has a `*_with_start` twin returning an `AttackResult` that carries the
per-sample loss at the attack's starting point, which training needs for the
abnormal-adversarial-example (AAE) test. Attacks never change the model's
train/eval mode: the caller chooses (eval at evaluation time; train mode at
training time, as in Wong et al. 2020 and Rice et al. 2020).
"""

from training.attacks.base import AttackResult
from training.attacks.fgsm import fgsm, fgsm_with_start
from training.attacks.fgsm_rs import fgsm_rs, fgsm_rs_with_start
from training.attacks.nfgsm import n_fgsm, n_fgsm_with_start
from training.attacks.pgd import pgd, pgd_with_start
from training.attacks.trades_kl import trades_kl, trades_kl_with_start

__all__ = [
    "AttackResult",
    "fgsm",
    "fgsm_rs",
    "fgsm_rs_with_start",
    "fgsm_with_start",
    "n_fgsm",
    "n_fgsm_with_start",
    "pgd",
    "pgd_with_start",
    "trades_kl",
    "trades_kl_with_start",
]
