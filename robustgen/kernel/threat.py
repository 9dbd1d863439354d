"""Threat models: eps-balls in L-inf or L2 around a centre, intersected with the image box [0, 1].

The one home of the geometry that attacks (training/attacks) and samplers
(samplers/steps.py) share: steepest steps of a given length in a norm, and
projection back into a ball around a centre. All functions work per sample on
NCHW tensors; eps and step sizes are in pixel units ([0, 1] scale), so 8/255
means eight grey levels.
"""

from __future__ import annotations

import math
import re

import torch
from torch import Tensor

from robustgen.kernel.errors import RobustgenError

NORMS = ("Linf", "L2")


def check_norm(norm: str) -> str:
    """`norm` if it is one robustgen knows; the one error line every command gives for any other."""
    if norm not in NORMS:
        raise _unknown_norm(norm)
    return norm


def _unknown_norm(norm) -> RobustgenError:
    return RobustgenError(f"unknown norm {norm!r}: use Linf or L2")


# --------------------------------------------------------------------------- eps / radii

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EPS = re.compile(rf"^\s*({_NUMBER})\s*(?:/\s*({_NUMBER})\s*)?$")


def parse_eps(text: str | float, *, norm: str | None = "Linf", name: str = "eps") -> float:
    """Parse an eps or ball radius in pixel units: `0.031`, `8/255`, `1e-3`.

    norm "Linf": a value in [0, 1] (pixels are in [0, 1], so 8/255 not 8).
    norm "L2" or None (not known yet): any finite value >= 0 (L2 radii may exceed 1).
    `name` is the option the value came from, for the message.

    >>> parse_eps("8/255") == 8 / 255
    True
    """
    if isinstance(text, bool):
        raise RobustgenError(f"cannot read {name} {text!r}: give a number such as 0.031 or a fraction such as 8/255")
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _EPS.match(str(text))
        if not match:
            raise RobustgenError(
                f"cannot read {name} {text!r}: give a number in pixel units such as 0.031, 1e-3 or a fraction such as 8/255"
            )
        num = float(match.group(1))
        den = float(match.group(2)) if match.group(2) else 1.0
        if den == 0:
            raise RobustgenError(f"{name} {text!r} divides by zero: write it like 8/255")
        value = num / den
    if not math.isfinite(value):
        raise RobustgenError(f"{name} {text!r} is not a finite number: give a value such as 8/255")
    if value < 0:
        raise RobustgenError(f"{name} {text!r} is negative: give a value >= 0 such as 8/255")
    if norm == "Linf" and value > 1:
        raise RobustgenError(
            f"{name} {text!r} = {value:.4g} is outside pixel space [0, 1]: pixel values are in [0, 1], so write 8/255 not 8"
        )
    if norm is not None:
        check_norm(norm)
    return value


# --------------------------------------------------------------------------- geometry


def _per_sample_l2(t: Tensor) -> Tensor:
    return t.flatten(1).norm(p=2, dim=1).view(-1, *([1] * (t.dim() - 1)))


def project_delta(delta: Tensor, *, eps: float, norm: str) -> Tensor:
    """Nearest point of the eps-ball (centred at 0) to `delta`."""
    if norm == "Linf":
        return delta.clamp(-eps, eps)
    if norm == "L2":
        scale = (eps / _per_sample_l2(delta).clamp_min(1e-12)).clamp(max=1.0)
        return delta * scale
    raise _unknown_norm(norm)


def project(x_adv: Tensor, x: Tensor, *, eps: float, norm: str) -> Tensor:
    """Bring x_adv back into the eps-ball around x and into [0, 1]."""
    return (x + project_delta(x_adv - x, eps=eps, norm=norm)).clamp(0.0, 1.0)


def uniform_in_ball(like: Tensor, *, radius: float, norm: str) -> Tensor:
    """A perturbation drawn uniformly from the ball of `radius` (same shape as `like`)."""
    if norm == "Linf":
        return torch.empty_like(like).uniform_(-radius, radius)
    if norm == "L2":
        direction = torch.randn_like(like)
        direction = direction / _per_sample_l2(direction).clamp_min(1e-12)
        dims = like[0].numel()
        r = torch.rand(like.shape[0], device=like.device, dtype=like.dtype) ** (1.0 / dims)
        return direction * (radius * r).view(-1, *([1] * (like.dim() - 1)))
    raise _unknown_norm(norm)


def steepest_direction(grad: Tensor, *, norm: str) -> Tensor:
    """The unit-`norm` direction that increases a linearised loss most: sign(grad) (Linf) or grad / ||grad||_2 (L2)."""
    if norm == "Linf":
        return grad.sign()
    if norm == "L2":
        return grad / _per_sample_l2(grad).clamp_min(1e-12)
    raise _unknown_norm(norm)


def steepest_ascent_step(grad: Tensor, *, step_size: float | Tensor, norm: str) -> Tensor:
    """The step of length `step_size` (in `norm`) that increases a linearised loss most."""
    return step_size * steepest_direction(grad, norm=norm)


def perturbation_norm(x_adv: Tensor, x: Tensor, *, norm: str) -> Tensor:
    """Per-sample size of x_adv - x in `norm`, shape (N,)."""
    delta = (x_adv - x).flatten(1)
    if norm == "Linf":
        return delta.abs().amax(dim=1)
    if norm == "L2":
        return delta.norm(p=2, dim=1)
    raise _unknown_norm(norm)
