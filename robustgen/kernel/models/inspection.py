"""`inspect_classifier`: what the loader understood of a model spec, and (with data) its clean accuracy.

    info = inspect_classifier("python:nets.py:resnet20=resnet20.th", data="npz:cifar10.npz",
                              mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    info["clean_acc"], info["parameters"], info["weights_sha256"]

The first thing to run on a file from elsewhere: if the classes, input size or
normalisation are not what the model was trained with, the clean accuracy on a few
hundred test images says so before any attack or sampler spends time on it.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.sanity import FOREIGN_SOURCES

DEFAULT_IMAGES = 500  # test images for the clean accuracy: enough to tell 90% from 60% (std ~2 points)


def inspect_classifier(
    spec,
    *,
    data: str | None = None,
    data_root: str | os.PathLike | None = None,
    images: int = DEFAULT_IMAGES,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    model_dir: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    device: str | torch.device = "cpu",
    batch_size: int = 256,
    seed: int = 0,
    check: str = "off",
) -> dict[str, Any]:
    """Load `spec` (any `load_classifier` spec) and describe it; with `data`, its clean accuracy on `images` test images.

    For a foreign network (whose normalisation the user supplies) it also measures the accuracy with the other choice
    (the data's own statistics when no mean/std was given, none when one was): `other_normalisation` in the result.
    check: "warn"/"strict", the loader's near-chance check (robustgen.kernel.models.sanity)."""
    from robustgen.kernel.models.sources import load_classifier

    if images < 1:
        raise RobustgenError(f"--images {images} must be at least 1: give the number of test images to measure the clean accuracy on")
    if batch_size < 1:
        raise RobustgenError(f"batch_size {batch_size} must be at least 1: give the number of images per forward pass")
    loading = dict(device=device, model_dir=model_dir, trust_checkpoint=trust_checkpoint, data=data, data_root=data_root)
    model, meta = load_classifier(spec, mean=mean, std=std, check=check, **loading)
    info = describe(model, meta)
    if data is not None:
        dataset = _test_data(data, data_root=data_root, meta=meta)
        x, y = dataset.split("test")
        pick = test_subset(len(x), images, seed=seed)
        x, y = x[pick], y[pick]
        info.update(clean_acc=clean_accuracy(model, x, y, batch_size=batch_size), n=int(len(pick)), data=dataset.name)
        if meta.get("source") in FOREIGN_SOURCES:
            info["other_normalisation"] = _other_normalisation(spec, meta, dataset, x, y, given=mean is not None or std is not None,
                                                               accuracy=info["clean_acc"], loading=loading, batch_size=batch_size)
    return info


def _other_normalisation(spec, meta: dict, dataset, x, y, *, given: bool, accuracy: float, loading: dict, batch_size: int) -> dict:
    """The clean accuracy with the other normalisation: the data's own statistics when none was given, none when one was."""
    from robustgen.kernel.models.sources import load_classifier

    if given:
        channels = int(meta["input_shape"][0])
        mean, std, what = [0.0] * channels, [1.0] * channels, "without normalisation"
    else:
        mean, std, what = list(dataset.mean), list(dataset.std), f"with {dataset.name}'s own statistics"
    model, _ = load_classifier(spec, mean=mean, std=std, **loading)
    other = clean_accuracy(model, x, y, batch_size=batch_size)
    return {"what": what, "mean": mean, "std": std, "clean_acc": other, "differs": differs(accuracy, other, len(y))}


def differs(a: float, b: float, n: int) -> bool:
    """Two accuracies on the same n images differ by more than three binomial standard errors (not sampling noise)."""
    return abs(a - b) > 3 * max((a * (1 - a) + b * (1 - b)) / n, 1.0 / n**2) ** 0.5


def test_subset(n_test: int, size: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices of `size` seeded test images: the choice of `robustgen eval --subset` (training.pgd_accuracy.evaluation_indices),
    so the clean accuracy here is the one eval reports on the same subset."""
    if size >= n_test:
        return np.arange(n_test)
    return torch.randperm(n_test, generator=torch.Generator().manual_seed(seed))[:size].sort().values.numpy()


def describe(model: nn.Module, meta: dict) -> dict[str, Any]:
    """The facts `robustgen inspect` prints, from a loaded model and its meta."""
    from robustgen.kernel.io import sha256_file

    weights = meta.get("weights_path")
    config = meta.get("config") or {}
    return {
        "spec": meta.get("spec"),
        "source": meta.get("source", "robustgen"),
        "arch": meta.get("arch"),
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "input_shape": list(meta.get("input_shape") or []),
        "mean": meta.get("mean"),
        "std": meta.get("std"),
        "normalised_inside": meta.get("mean") is not None or meta.get("source", "robustgen") in ("robustgen", "robustbench", "robustness"),
        "num_classes": len(meta.get("classes") or []),
        "classes": list(meta.get("classes") or []),
        "feature_dim": getattr(model, "feature_dim", None),
        "dataset": meta.get("dataset"),
        "threat": {"norm": config.get("norm"), "eps": config.get("eps")} if config.get("eps") is not None else None,
        "weights_path": weights,
        "weights_sha256": meta.get("weights_sha256") or (sha256_file(weights) if weights and os.path.isfile(weights) else None),
        "notes": list(meta.get("notes") or []),
    }


def clean_accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, batch_size: int = 256) -> float:
    """Fraction of uint8 NHWC `images` whose argmax logit is their label (model in eval mode, on its device)."""
    from robustgen.kernel.data import to_float

    device = next(model.parameters()).device
    correct = 0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            logits = model(to_float(images[start : start + batch_size], device))
            correct += int((logits.argmax(1).cpu().numpy() == labels[start : start + batch_size]).sum())
    return correct / max(len(images), 1)


def _test_data(data: str, *, data_root, meta: dict):
    """--data in the model's class indices and input size, or one line saying why not."""
    from robustgen.kernel.data import load_dataset
    from robustgen.kernel.models.classes import align_dataset

    shape = meta.get("input_shape")
    size = {"image_size": tuple(shape[1:])} if str(data).startswith("folder:") and shape else {}
    dataset = load_dataset(data, root=data_root, **size)
    if shape and list(dataset.image_shape) != list(shape):
        raise RobustgenError(f"{data} has images shaped {list(dataset.image_shape)} but {meta.get('spec')} takes {list(shape)}: pass the data it was trained on with --data")
    return align_dataset(dataset, meta)
