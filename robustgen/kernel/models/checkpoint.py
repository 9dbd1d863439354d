"""Checkpoints: one file with the weights and everything needed to rebuild the model.

Format (a plain dict, loadable with `torch.load(weights_only=True)`):

    {"format": "robustgen-checkpoint", "format_version": 1,
     "state_dict": {...},
     "meta": {"arch": "preact-resnet18", "arch_args": {...}, "dataset": "cifar10",
              "data_root": "...", "classes": [...], "input_shape": [C, H, W],
              "mean": [...], "std": [...], "config": {...}, "epoch": 12,
              "metrics": {...}, "versions": {...}, "dataset_sha256": "..."}}

Only tensors, numbers, strings, lists and dicts are stored, so loading never
unpickles arbitrary objects.
"""

from __future__ import annotations

import io
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import atomic_path, versions
from robustgen.kernel.models import build_model, model_names
from robustgen.kernel.models.foreign import check_finite_weights, check_readable, fit_problem, load_checked, quiet_torch_load

FORMAT = "robustgen-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, *, model: nn.Module, meta: dict[str, Any], extra: dict[str, Any] | None = None) -> None:
    """Write model weights plus `meta` atomically. `extra` holds e.g. optimizer state for resuming."""
    for key in ("arch", "arch_args", "classes", "input_shape"):
        if key not in meta:
            raise ValueError(f"checkpoint meta needs {key!r}")
    meta = {**meta, "versions": meta.get("versions") or versions()}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "state_dict": state, "meta": meta}
    if extra:
        payload["extra"] = extra
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_path(path, fsync=True) as tmp:  # resuming depends on last.pt: old or new, never torn
        tmp.write_bytes(buffer.getvalue())


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate the raw payload (weights_only); one clear error for anything foreign.

    Checks what every reader relies on: a state_dict of tensors and a meta dict with a
    known arch, arch_args, classes and input_shape. Nothing is unpickled beyond tensors
    and plain containers (torch's weights_only loader).
    """
    path = Path(path)
    if path.is_dir():
        inside = next((path / name for name in ("best.pt", "last.pt") if (path / name).is_file()), None)
        hint = f"e.g. {inside}" if inside else "a .pt file written by robustgen train"
        raise RobustgenError(f"checkpoint {path} is a directory: pass the checkpoint file itself, {hint}")
    if not path.is_file():
        raise RobustgenError(f"checkpoint {path} not found: pass the path of a .pt written by robustgen train")
    check_readable(path, what="checkpoint")  # an empty file or an HTML page (a failed download) said as such
    try:
        payload = quiet_torch_load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, BadZipFile, ValueError, OSError, ...
        reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        if reason.startswith("Weights only load failed") or isinstance(exc, pickle.UnpicklingError):
            reason = "it holds Python objects that torch refuses to unpickle with weights_only=True"
        raise RobustgenError(f"cannot read checkpoint {path} ({reason}): it is corrupt or not a robustgen/PyTorch checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RobustgenError(f"{path} is not a robustgen checkpoint (no robustgen metadata): train one with `robustgen train`")
    version = payload.get("format_version", 0)
    if not isinstance(version, int):
        raise RobustgenError(f"{path}: format_version {version!r} is not a number: the file was edited or damaged; use a checkpoint written by robustgen train")
    if version > FORMAT_VERSION:
        raise RobustgenError(f"{path} was written by a newer robustgen (format {version}): upgrade robustgen")
    _check_payload(payload, path)
    return payload


def _check_payload(payload: dict[str, Any], path: Path) -> None:
    damaged = "the file was edited or damaged; use a checkpoint written by robustgen train"
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise RobustgenError(f"checkpoint {path} has no state_dict of named tensors: {damaged}")
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise RobustgenError(f"checkpoint {path} has no meta (architecture, classes, input shape): {damaged}")
    missing = [key for key in ("arch", "arch_args", "classes", "input_shape") if key not in meta]
    if missing:
        raise RobustgenError(f"checkpoint {path}: meta lacks {', '.join(missing)}: {damaged}")
    if not isinstance(meta["arch"], str) or meta["arch"] not in model_names():
        raise RobustgenError(
            f"checkpoint {path} names architecture {meta['arch']!r}, which this robustgen does not know "
            f"(known: {', '.join(model_names())}): use a checkpoint of a known architecture or upgrade robustgen"
        )
    arch_args = meta["arch_args"]
    if not isinstance(arch_args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in arch_args):
        raise RobustgenError(f"checkpoint {path}: arch_args is not a dict of keyword arguments: {damaged}")
    classes, shape = meta["classes"], meta["input_shape"]
    if not isinstance(classes, (list, tuple)) or not classes or not all(isinstance(c, str) for c in classes):
        raise RobustgenError(f"checkpoint {path}: meta classes is not a list of class names: {damaged}")
    if not isinstance(shape, (list, tuple)) or len(shape) != 3 or not all(isinstance(v, int) and v > 0 for v in shape):
        raise RobustgenError(f"checkpoint {path}: meta input_shape is not [C, H, W]: {damaged}")
    _dry_build(meta, str(path))
    check_finite_weights(state, source=f"checkpoint {path}")


def _build(meta: dict[str, Any], source: str) -> nn.Module:
    try:
        return build_model(meta["arch"], **meta["arch_args"])
    except RobustgenError:
        raise
    except Exception as exc:  # TypeError (unknown keyword), ValueError/RuntimeError (bad sizes)
        reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        raise RobustgenError(
            f"checkpoint {source}: cannot build {meta['arch']} from its arch_args ({reason}): "
            "the file was edited or written by another robustgen version; use a checkpoint written by this robustgen train"
        ) from None


def _dry_build(meta: dict[str, Any], source: str) -> None:
    """Check that arch_args build the model, on the meta device (no memory, no time), so every reader is safe."""
    try:
        with torch.device("meta"):
            build_model(meta["arch"], **meta["arch_args"])
        return
    except Exception:  # a bad argument, or a model that cannot be built on the meta device: a real build decides
        pass
    _build(meta, source)


def model_from_payload(payload: dict[str, Any], *, source: str) -> nn.Module:
    """Build the model a checkpoint payload (from `read_checkpoint`) describes and load its weights."""
    meta = payload["meta"]
    model = _build(meta, source)
    load_weights(model, payload["state_dict"], source=source)
    args, classes, shape = meta["arch_args"], meta["classes"], meta["input_shape"]
    if args.get("num_classes", len(classes)) != len(classes) or args.get("in_channels", shape[0]) != shape[0]:
        raise RobustgenError(
            f"checkpoint {source}: the model has {args.get('num_classes')} classes and {args.get('in_channels')} channels but meta lists "
            f"{len(classes)} class names and input shape {list(shape)}: the file was edited or damaged; use a checkpoint written by robustgen train"
        )
    return model


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode on `device`, meta)."""
    payload = read_checkpoint(path)
    model = model_from_payload(payload, source=str(path))
    return model.to(device).eval(), payload["meta"]


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """load_state_dict with a one-line error naming what does not match."""
    problem = fit_problem(model, state_dict)
    if problem:
        raise RobustgenError(f"checkpoint {source} does not fit this architecture ({problem}): "
                             "use the architecture, width and number of classes it was trained with")
    load_checked(model, state_dict)


def model_meta(*, arch: str, arch_args: dict[str, Any], dataset, data_root: str | None = None) -> dict[str, Any]:
    """The metadata every checkpoint carries about its model and data."""
    return {
        "arch": arch,
        "arch_args": arch_args,
        "dataset": dataset.name,
        "data_root": data_root,
        "dataset_sha256": dataset.fingerprint(),
        "classes": list(dataset.classes),
        "input_shape": list(dataset.image_shape),
        "mean": list(dataset.mean),
        "std": list(dataset.std),
    }
