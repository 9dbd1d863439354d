"""Device, precision, memory layout and compilation, resolved in one place.

Library code never calls `.cuda()`: callers pass a device string ("auto",
"cpu", "cuda", "cuda:1", "mps"), `resolve_device` turns it into a
`torch.device`, and everything else reads the device off the model or tensor.

Precision and layout follow the hardware, not the device type: bf16 autocast
and channels_last pay on CUDA GPUs with bf16 support *and* on CPUs with
AVX512-BF16 or AMX (measured on a 2-core AVX512-BF16 EPYC: 2.3x the fp32
training throughput of a width-16 PreActResNet-18). Energies and losses are
always computed in fp32: the classifier head runs outside autocast (see
`robustgen.kernel.models.base.Classifier.forward`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from typing import Callable, TypeVar

import numpy as np
import torch

from robustgen.kernel.errors import RobustgenError

PRECISIONS = ("fp32", "bf16")
COMPILE_MODES = ("auto", "on", "off")

F = TypeVar("F", bound=Callable)


def resolve_device(name: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """"auto" = cuda:LOCAL_RANK under torchrun (cuda otherwise), else mps, else cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise RobustgenError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RobustgenError(f"device {name!r} requested but CUDA is not available here: use --device cpu or auto")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device


# oneDNN instruction-set caps (ONEDNN_MAX_CPU_ISA) under which it emulates bf16 rather than running it natively
_ISA_CAPS_WITHOUT_BF16 = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI")


def fast_bf16(device: torch.device) -> bool:
    """Does this device run bf16 convolutions/matmuls natively (so autocast pays)?

    On CPU: AVX512-BF16 or AMX, and oneDNN not capped below them by ONEDNN_MAX_CPU_ISA (how one
    reproduces an older CPU on a newer one: bf16 would then be emulated, several times slower than fp32).
    """
    if device.type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        if os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() in _ISA_CAPS_WITHOUT_BF16:
            return False
        cpu = getattr(torch, "cpu", None)
        checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        return any(bool(getattr(cpu, name, lambda: False)()) for name in checks) and torch.backends.mkldnn.is_available()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """auto: bf16 where the hardware has fast bf16 (see `fast_bf16`), fp32 elsewhere."""
    if precision not in PRECISIONS + ("auto",):
        raise RobustgenError(f"unknown precision {precision!r}: use one of auto, {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    return precision


def autocast(device: torch.device, precision: str):
    """Context manager for forward passes: bf16 autocast on CUDA/CPU when asked, a no-op otherwise."""
    if precision == "bf16" and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device, precision: str) -> torch.memory_format:
    """channels_last where convolutions are fast in it: CUDA, and CPUs under bf16 (oneDNN's blocked layouts)."""
    if device.type == "cuda" or (device.type == "cpu" and precision == "bf16" and fast_bf16(device)):
        return torch.channels_last
    return torch.contiguous_format


def compile_available(device: torch.device) -> str | None:
    """None if torch.compile can run here, else why not (one short reason)."""
    if not hasattr(torch, "compile"):
        return "this torch has no torch.compile"
    if sys.platform == "win32":
        return "torch.compile's inductor backend is not supported on Windows"
    if device.type == "cpu" and not (shutil.which("c++") or shutil.which("g++") or shutil.which("clang++")):
        return "no C++ compiler found (inductor needs one on CPU: install g++)"
    if device.type not in ("cpu", "cuda"):
        return f"torch.compile is not used on {device.type}"
    return None


LONG_RUN_IMAGE_STEPS = 2_000_000  # `--compile auto` compiles runs of at least this many image-steps (a compile costs ~1 min on CPU)


def resolve_compile(mode: str, device: torch.device, *, long_run: bool) -> tuple[bool, str | None]:
    """(compile?, warning): `auto` compiles long runs where a compiler exists; `on` asks for it (falls back with a warning)."""
    if mode not in COMPILE_MODES:
        raise RobustgenError(f"unknown --compile {mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if mode == "off" or (mode == "auto" and not long_run):
        return False, None
    reason = compile_available(device)
    if reason is None:
        return True, None
    return False, f"torch.compile not used: {reason}; running eagerly" if mode == "on" else None


def maybe_compile(fn: F, enabled: bool, **options) -> F:
    """torch.compile(fn) when enabled; fn itself otherwise."""
    return torch.compile(fn, **options) if enabled else fn


def derived_seed(*parts: int) -> int:
    """An independent 63-bit seed for a tuple of integers (seed, rank), (seed, chain), ..."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


class PrecisionModel(torch.nn.Module):
    """A classifier whose forward (and `features`) run under `precision` autocast in `memory_format`.

    Samplers, reference energies and neighbour searches call it like the model itself, so one
    wrapper sets the precision of everything a sampling run computes. The head still runs in
    fp32 (robustgen.kernel.models.base.Classifier), so energies keep their precision.
    """

    def __init__(self, model: torch.nn.Module, precision: str):
        super().__init__()
        device = next(model.parameters()).device
        self.inner = model.to(memory_format=memory_format(device, precision))
        self.precision = precision
        self.layout = memory_format(device, precision)

    def forward(self, x):
        with autocast(x.device, self.precision):
            return self.inner(x.contiguous(memory_format=self.layout)).float()

    def features(self, x):
        with autocast(x.device, self.precision):
            return self.inner.features(x.contiguous(memory_format=self.layout)).float()

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["_modules"]["inner"], name)  # head, feature_dim, num_classes, ...


def with_precision(model: torch.nn.Module, precision: str) -> torch.nn.Module:
    """`model` itself for fp32, else a PrecisionModel around it."""
    return model if precision == "fp32" else PrecisionModel(model, precision)
