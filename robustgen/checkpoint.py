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
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustgen.errors import RobustgenError
from robustgen.io import atomic_path, versions
from robustgen.models import build_model

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
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load and validate the raw payload (weights_only); one clear error for anything foreign."""
    path = Path(path)
    if not path.is_file():
        raise RobustgenError(f"checkpoint {path} not found: pass the path of a .pt written by robustgen train")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else type(exc).__name__
        if reason.startswith("Weights only load failed"):
            reason = "torch refuses to unpickle it with weights_only=True"
        raise RobustgenError(f"cannot read checkpoint {path} ({reason}): it is corrupt or not a robustgen/PyTorch checkpoint") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise RobustgenError(f"{path} is not a robustgen checkpoint (no robustgen metadata): train one with `robustgen train`")
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise RobustgenError(f"{path} was written by a newer robustgen (format {payload['format_version']}): upgrade robustgen")
    return payload


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns (model in eval mode on `device`, meta)."""
    payload = read_checkpoint(path)
    meta = payload["meta"]
    model = build_model(meta["arch"], **meta["arch_args"])
    load_weights(model, payload["state_dict"], source=str(path))
    return model.to(device).eval(), meta


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """load_state_dict with a one-line error naming what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [k for k in own if k in state_dict and own[k].shape != state_dict[k].shape]
    if missing or unexpected or mismatched:
        detail = []
        if mismatched:
            k = mismatched[0]
            detail.append(f"{k} is {tuple(state_dict[k].shape)} in the file but {tuple(own[k].shape)} in the model")
        if missing:
            detail.append(f"{len(missing)} weights missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise RobustgenError(
            f"checkpoint {source} does not fit this architecture ({'; '.join(detail)}): "
            "use the architecture, width and number of classes it was trained with"
        )
    model.load_state_dict(state_dict)


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
