"""Generative fine-tuning (DAT, Yin et al. ICLR 2026; DESIGN.md section 3): the one home of its objective.

A robust classifier f becomes an energy model through a binary task on its marginal energy,

    s(x) = -E(x) = logsumexp_y f_y(x)                                  (robustgen.kernel.energy)
    L_gen = BCE(s(x_real), 1) + BCE(s(x_ood_T), 0)                     (logits: s itself)

x_ood_T: out-of-distribution images after T steps of L2-normalised gradient ascent on s
(x <- clip(x + step * g / ||g||_2, 0, 1)), with the model in eval mode: the contrast is what the
model itself would draw from those starts. The run's adversarial cross-entropy on real images is
added by the training step (training.step). T rises (by a fixed increment, up to a maximum) only
after a window whose real-vs-contrastive AUC of s passed the threshold: the model is ahead of its
own samples (DAT's rule; its CIFAR runs use 0.7).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robustgen.kernel.energy import marginal_energy, value_and_input_grad
from robustgen.kernel.threat import steepest_ascent_step

ASCENT_STEP_CIFAR = 0.2  # L2 ascent step on s at CIFAR size (3072 values), pixel units; scaled by sqrt(D / 3072) like the sampler's PGD


def energy_logit(logits: Tensor) -> Tensor:
    """s(x) = -E(x) = logsumexp of the class logits, per sample (N,), float32."""
    return -marginal_energy(logits)


def generative_loss(s_real: Tensor, s_ood: Tensor) -> Tensor:
    """BCE(s(x_real), 1) + BCE(s(x_ood_T), 0), each a mean over its batch; s is the binary logit."""
    real = F.binary_cross_entropy_with_logits(s_real, torch.ones_like(s_real))
    ood = F.binary_cross_entropy_with_logits(s_ood, torch.zeros_like(s_ood))
    return real + ood


def ascent_step_size(given: float | None, image_dim: int) -> float:
    """The L2 ascent step in pixel units: `given`, else 0.2 x sqrt(D / 3072) (0.2 on CIFAR, 0.03 on 8x8 digits)."""
    return float(given) if given is not None else ASCENT_STEP_CIFAR * (image_dim / 3072) ** 0.5


def ascend_energy_logit(model: nn.Module, x: Tensor, *, steps: int, step_size: float) -> tuple[Tensor, Tensor]:
    """(x after `steps` L2-normalised ascent steps on s, clipped to [0, 1]; s at the start). The model runs in eval mode."""
    was_training = model.training
    model.eval()
    x = x.detach()
    s_start = None
    for _ in range(steps):
        value, grad, _ = value_and_input_grad(model, x, None, lambda logits, _y: energy_logit(logits))
        s_start = value if s_start is None else s_start
        x = (x + steepest_ascent_step(grad, step_size=step_size, norm="L2")).clamp_(0, 1)
    if s_start is None:  # no step: s at the start still comes from the eval-mode model
        with torch.no_grad():
            s_start = energy_logit(model(x))
    model.train(was_training)
    return x.detach(), s_start


def auc(positive: Tensor, negative: Tensor) -> float:
    """P(s_pos > s_neg) + 0.5 P(tie): the area under the ROC curve of telling positives from negatives by the score."""
    pos, neg = positive.detach().double().flatten().cpu(), negative.detach().double().flatten().cpu()
    if len(pos) == 0 or len(neg) == 0:
        return 0.5
    greater, tied = 0.0, 0.0
    for chunk in pos.split(4096):  # 4096 x N comparisons at a time
        greater += float((chunk[:, None] > neg[None, :]).sum())
        tied += float((chunk[:, None] == neg[None, :]).sum())
    return (greater + 0.5 * tied) / (len(pos) * len(neg))


def next_steps(steps: int, window_auc: float, *, threshold: float, increment: int, maximum: int) -> int:
    """T for the next window: raised by `increment` (up to `maximum`) when the window's AUC passed `threshold`, else kept.
    Threshold 0 is a plain ramp: T rises after every window, whatever the AUC."""
    if threshold == 0 or window_auc > threshold:
        return min(steps + increment, maximum)
    return steps


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, *, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model for floating parameters and buffers; integer buffers are copied."""
    model_state = model.state_dict()
    for name, value in ema.state_dict().items():
        source = model_state[name]
        if value.dtype.is_floating_point:
            value.mul_(decay).add_(source.detach().to(value.dtype), alpha=1 - decay)
        else:
            value.copy_(source)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of two feature sets (rows), in float64.

    The held-out selection statistic of a generative run (training.finetune). Not FID: FID (Inception
    or a judge's features, torch-fidelity) is samplers.scoring's, which training may not import.
    """
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], a.shape[1]), torch.cov(b.T).reshape(b.shape[1], b.shape[1])
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp_min(0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp_min(0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)
