"""Where the tests' numeric tolerances come from: bf16's unit roundoff and the depth of the computation, never a
constant tuned on one CPU (the fixtures' weights, and so the size of every rounding error, differ from CPU to CPU).

Imported by test modules (`from numerics import ...`); pytest puts tests/ on sys.path.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

BF16_UNIT_ROUNDOFF = 2.0**-8  # bf16 keeps 8 significant bits: one rounding moves a value by at most 2**-8 of itself


def rounding_depth(model: nn.Module) -> int:
    """The layers whose outputs autocast rounds to bf16 (convolutions and linear maps) on the way to the logits."""
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


def energy_scale(*logits: Tensor) -> Tensor:
    """Per sample, a bound on |E| for every energy read from these logits: max |logit| + log K (logsumexp's excess)."""
    scale = torch.stack([lg.float().abs().amax(1) for lg in logits]).amax(0)
    return scale + math.log(logits[0].shape[1])


def bf16_worst_case(depth: int, scale: Tensor, *, terms: int = 1) -> Tensor:
    """First-order worst case: every rounded layer moves the result by u x its scale, all in the same direction."""
    return terms * depth * BF16_UNIT_ROUNDOFF * scale


def bf16_typical(depth: int, scale: Tensor, *, terms: int = 1) -> Tensor:
    """Independent roundings add like a random walk: sqrt(terms x depth) x u x scale (what a mean over samples obeys)."""
    return math.sqrt(terms * depth) * BF16_UNIT_ROUNDOFF * scale
