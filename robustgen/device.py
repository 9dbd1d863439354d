"""Device and precision, resolved in one place.

Library code never calls `.cuda()`: callers pass a device string ("auto",
"cpu", "cuda", "cuda:1", "mps"), `resolve_device` turns it into a
`torch.device`, and everything else reads the device off the model or tensor.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from robustgen.errors import RobustgenError

PRECISIONS = ("fp32", "bf16")


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RobustgenError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RobustgenError(f"device {name!r} requested but CUDA is not available here: use --device cpu or auto")
    return device


def resolve_precision(precision: str, device: torch.device) -> str:
    """bf16 autocast only where it pays (CUDA); elsewhere fall back to fp32."""
    if precision not in PRECISIONS + ("auto",):
        raise RobustgenError(f"unknown precision {precision!r}: use one of auto, {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device.type == "cuda" else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """Context manager for the forward pass: bf16 autocast on CUDA, no-op otherwise."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last is faster for convnets under CUDA autocast; keep contiguous elsewhere."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, numpy and torch; return a CPU generator for data order/augmentation."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
