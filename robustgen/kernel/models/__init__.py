"""Model registry: architectures by name, built with keyword arguments.

Every model maps images in [0, 1] pixel space to logits; input normalisation
is a buffer inside the model. Every model exposes `features(x)` (penultimate
activations) and `head` (the last linear layer), so `forward(x) ==
head(features(x))`.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import sha256_arrays

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def decorate(builder: Callable[..., nn.Module]):
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = builder
        return builder

    return decorate


def model_names() -> list[str]:
    return sorted(_REGISTRY)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 of a model's weights and buffers (by name): keys caches and resume files that depend on the model."""
    state = model.state_dict()
    arrays = [state[k].detach().cpu().contiguous().numpy() for k in sorted(state)]
    precision = getattr(model, "precision", "fp32")  # a bf16 run's energies differ: keep their caches apart
    return sha256_arrays(*arrays) + ("" if precision == "fp32" else f"-{precision}")


def build_model(name: str, **arch_args) -> nn.Module:
    if name not in _REGISTRY:
        raise RobustgenError(f"unknown architecture {name!r}: choose one of {', '.join(model_names())}")
    return _REGISTRY[name](**arch_args)


from robustgen.kernel.models import preact_resnet, wide_resnet  # noqa: E402,F401  (registers the architectures)
