"""Third-party networks as robustgen classifiers: safe file reading, normalisation inside, features + head.

A network from RobustBench, the `robustness` library, torchvision or timm is
wrapped in `ForeignClassifier`, which takes images in [0, 1] (normalising inside
when the network does not) and exposes `features(x)` and `head` like robustgen's
own models, so `model(x) == model.head(model.features(x))`. The split is found by
taking the network's last `nn.Linear` with one output per class as the head and
checking on a probe batch that removing it leaves the penultimate features.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from robustgen.errors import RobustgenError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRUST_FIX = "pass --trust-checkpoint if you trust where it came from (unpickling can run code from the file)"


# --------------------------------------------------------------------------- reading files


def read_weights_file(path: str | Path, *, trust: bool = False) -> Any:
    """Load a third-party weights file: `torch.load(weights_only=True)` unless `trust`; .safetensors too."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise RobustgenError(f"weights file {path} not found: check the path in the spec")
    if path.suffix == ".safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise RobustgenError(f"{path} is a .safetensors file, which needs the safetensors package: pip install 'robustgen[zoo]'") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise RobustgenError(f"cannot read {path} as safetensors ({_first_line(exc)}): it is corrupt or not a weights file") from None
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights only load failed" in str(exc).lower():
            raise RobustgenError(f"{path} holds pickled Python objects, not just tensors, so it is not loaded: {TRUST_FIX}") from None
        raise RobustgenError(f"cannot read {path} ({_first_line(exc)}): it is corrupt or not a PyTorch weights file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ModuleNotFoundError, TypeError) as exc:
        raise RobustgenError(f"cannot read {path} ({_first_line(exc)}): it is corrupt or not a PyTorch weights file") from None


def state_dict_of(payload: Any, *, source: str, keys: Sequence[str] = ("state_dict", "model", "model_state_dict", "net")) -> dict[str, Tensor]:
    """The tensor dict in a loaded file: the payload itself or one of the usual wrapper keys; `module.` stripped."""
    if _is_state_dict(payload):
        state = payload
    else:
        found = [payload[k] for k in keys if isinstance(payload, dict) and _is_state_dict(payload.get(k))]
        if not found:
            what = f"a dict with keys {', '.join(map(str, list(payload)[:6]))}" if isinstance(payload, dict) else type(payload).__name__
            raise RobustgenError(f"{source} holds {what}, not a state dict: save the network's state_dict() (tensors by parameter name)")
        state = found[0]
    return strip_prefix(dict(state), "module.")


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop `prefix` from every key when all keys carry it (DataParallel's `module.`)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def load_fitting(net: nn.Module, state: dict[str, Tensor], *, source: str, arch: str, fix: str) -> None:
    """load_state_dict(strict) with one line naming what does not fit (the style of robustgen.checkpoint.load_weights)."""
    problem = fit_problem(net, state)
    if problem:
        raise RobustgenError(f"{source} does not fit {arch} ({problem}): {fix}")
    net.load_state_dict(state)


def fit_problem(net: nn.Module, state: dict[str, Tensor]) -> str | None:
    """None when `state` fits `net` exactly, else a short description of the first mismatches."""
    own = net.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    detail = []
    if mismatched:
        k = mismatched[0]
        detail.append(f"{k} is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model")
    if missing:
        detail.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
    return "; ".join(detail) or None


# --------------------------------------------------------------------------- the wrapper


class ForeignClassifier(nn.Module):
    """[0, 1] images -> logits around a third-party network, with `features(x)` and `head` when separable.

    body: normalised images -> penultimate features (its head replaced by Identity), or -> logits
    when no head could be split off (`head` is None and `features` raises a RobustgenError).
    mean/std: per-channel normalisation applied before `body` (None: the body normalises itself).
    """

    def __init__(self, body: nn.Module, head: nn.Linear | None, *, num_classes: int, mean: Sequence[float] | None, std: Sequence[float] | None, name: str):
        super().__init__()
        self.body = body
        self.head = head
        self.num_classes = num_classes
        self.feature_dim = head.in_features if head is not None else None
        self.name = name
        self.normalises = mean is not None
        if mean is not None:
            self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std if self.normalises else x

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of images `x` in [0, 1]."""
        if self.head is None:
            raise RobustgenError(f"{self.name}: no linear head could be split off, so it has no penultimate features: use pixel space (--neighbour-space pixel) or another feature extractor")
        return self.body(self._normalise(x))

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(self._normalise(x))
        if self.head is None:
            return out
        if out.dtype == torch.float32:
            return self.head(out)
        with torch.autocast(device_type=out.device.type, enabled=False):  # logits in fp32, as robustgen's Classifier
            return self.head(out.float())


def wrap_classifier(
    net: nn.Module,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    name: str,
    device: torch.device | str = "cpu",
) -> ForeignClassifier:
    """Split `net` into body + head (verified on a probe batch) and wrap it; returned in eval mode on `device`."""
    net = net.to(device).eval()
    head_name = last_linear(net, num_classes)
    head = None
    if head_name is not None:
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand((2, *input_shape), generator=generator).to(device)
        if mean is not None:
            probe = (probe - torch.tensor(list(mean), device=device).view(1, -1, 1, 1)) / torch.tensor(list(std), device=device).view(1, -1, 1, 1)
        candidate = net.get_submodule(head_name)
        with torch.no_grad():
            reference = net(probe)
            _replace(net, head_name, nn.Identity())
            try:
                feats = net(probe)
                ok = feats.dim() == 2 and feats.shape[1] == candidate.in_features and torch.allclose(
                    candidate(feats), reference, rtol=1e-4, atol=1e-4 * max(1.0, float(reference.abs().max()))
                )
            except RuntimeError:
                ok = False
        if ok:
            head = candidate
        else:
            _replace(net, head_name, candidate)
    return ForeignClassifier(net, head, num_classes=num_classes, mean=mean, std=std, name=name).to(device).eval()


def last_linear(net: nn.Module, num_classes: int) -> str | None:
    """Name of the last registered nn.Linear with `num_classes` outputs (the usual classifier head)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes and n]
    return names[-1] if names else None


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


def find_normalisation(net: nn.Module) -> tuple[list[float] | None, list[float] | None]:
    """(mean, std) buffers a network normalises with inside (mu/sigma, mean/std, new_mean/new_std), if any."""
    buffers = dict(net.named_buffers())
    for mean_name, std_name in (("mu", "sigma"), ("mean", "std"), ("new_mean", "new_std")):
        for key, value in buffers.items():
            prefix = key[: -len(mean_name)]
            if key.endswith(mean_name) and (not prefix or prefix.endswith(".")) and prefix + std_name in buffers and value.numel() in (1, 3):
                return [round(float(v), 6) for v in value.flatten()], [round(float(v), 6) for v in buffers[prefix + std_name].flatten()]
    return None, None
