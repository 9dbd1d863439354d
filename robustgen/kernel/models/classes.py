"""What a loaded model says about itself: its metadata record, its class names, and data matched to its classes.

Shared by every loader (models.sources for zoo and state-dict files, models.own_models for the user's own code)
and by models.model_data; it imports no loader, so the loaders do not import each other.
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import finite
from robustgen.kernel.io import safe_name, sha256_file

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _meta(*, source, spec, arch, dataset, classes, input_shape, mean, std, weights_path: Path, config: dict, notes: list) -> dict:
    return {
        "arch": arch,
        "arch_args": {},
        "dataset": dataset,
        "data_root": None,
        "dataset_sha256": None,
        "classes": list(classes),
        "input_shape": list(input_shape),
        "mean": list(mean) if mean is not None else None,
        "std": list(std) if std is not None else None,
        "config": config,
        "source": source,
        "spec": spec,
        "weights_path": str(weights_path),
        "weights_sha256": sha256_file(weights_path),
        "notes": list(notes),
    }


def class_names(num_classes: int, dataset: str | None) -> list[str]:
    """CIFAR-10 names, ImageNet names (torchvision's metadata, offline) or "0".."n-1"."""
    if dataset == "cifar10" and num_classes == 10:
        return list(CIFAR10_CLASSES)
    if num_classes == 1000 and (dataset is None or "imagenet" in str(dataset).lower() or str(dataset).startswith("folder:")):
        names = imagenet_classes()
        if names:
            return names
    return [str(i) for i in range(num_classes)]


def imagenet_classes() -> list[str] | None:
    try:
        from torchvision.models import ResNet50_Weights

        return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    except Exception:
        return None


def imagenet_wnids() -> list[str] | None:
    """ImageNet synset ids (n01440764, ...) in class order, from timm's bundled metadata if installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from timm.data import ImageNetInfo

        return list(ImageNetInfo().label_names())
    except Exception:
        return None


@dataclass(frozen=True)
class NormFlags:
    """The flags a user gave a model's normalisation with, so every refusal names those: --mean/--std for the model,
    --judge-mean/--judge-std for eval's judge, --features-mean/--features-std for score's and sweep's networks."""

    mean: str = "--mean"
    std: str = "--std"

    def __str__(self) -> str:
        return f"{self.mean}/{self.std}"


MODEL_FLAGS = NormFlags()
JUDGE_FLAGS = NormFlags("--judge-mean", "--judge-std")
FEATURES_FLAGS = NormFlags("--features-mean", "--features-std")


def checked_normalisation(mean, std, *, channels: int, flags: NormFlags) -> tuple[list[float], list[float]]:
    """(mean, std) as floats, one per channel, std > 0; else one line naming the flags the user passed."""
    mean, std = parse_channels(mean, flags.mean), parse_channels(std, flags.std)
    if len(mean) != channels or len(std) != channels:
        raise RobustgenError(f"{flags} give {len(mean)}/{len(std)} values for {channels}-channel images: give one value per channel "
                             f"(e.g. {flags.mean} 0.485,0.456,0.406 {flags.std} 0.229,0.224,0.225)")
    if min(std) <= 0:
        raise RobustgenError(f"{flags.std} holds {min(std):g}: a standard deviation divides the pixels, so give values > 0 (e.g. {flags.std} 0.229,0.224,0.225)")
    return mean, std


def parse_channels(value: str | Sequence[float], what: str) -> list[float]:
    """"0.485,0.456,0.406" or a sequence -> floats."""
    if isinstance(value, str):
        try:
            numbers = [float(v) for v in value.replace(" ", "").split(",") if v]
        except ValueError:
            raise RobustgenError(f"cannot read {what} {value!r}: give one number per channel, e.g. 0.485,0.456,0.406") from None
    else:
        numbers = list(value)
    return [finite(v, name=what) for v in numbers]


# --------------------------------------------------------------------------- datasets in the model's classes


def align_dataset(dataset, meta: dict):
    """`dataset` relabelled into the model's class indices when it holds a subset of the model's classes.

    A dataset with as many classes as the model is used as is (index i is class i).
    Otherwise every dataset class must name a model class, by index ("207"), by name
    ("golden retriever" / "golden_retriever") or, for ImageNet, by synset id
    ("n02099601", with timm installed); the result has the model's classes, and only
    the named ones hold images.
    """
    from robustgen.kernel.data import ImageDataset

    classes = list(meta.get("classes") or [])
    if not classes or len(classes) == dataset.num_classes:
        return dataset
    mapping = np.asarray([model_class_index(str(name), classes, what=dataset.name) for name in dataset.classes], dtype=np.int64)
    if len(set(mapping.tolist())) != len(mapping):
        raise RobustgenError(f"{dataset.name}: two class folders name the same model class: give each folder a distinct class")
    return ImageDataset(
        dataset.name, dataset.x_train, mapping[dataset.y_train], dataset.x_test, mapping[dataset.y_test], tuple(classes),
        crop_padding=dataset.crop_padding, flip=dataset.flip, mean=dataset.mean, std=dataset.std,
    )


def model_class_index(name: str, classes: Sequence[str], *, what: str = "dataset") -> int:
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    if name in classes:
        return list(classes).index(name)
    folded = [_fold(c) for c in classes]
    if _fold(name) in folded:
        return folded.index(_fold(name))
    written = [safe_name(c, fallback=str(i)) for i, c in enumerate(classes)]  # the folder names `robustgen sample --png` writes
    if name in written:
        return written.index(name)
    if len(classes) == 1000 and re.fullmatch(r"n\d{8}", name):
        wnids = imagenet_wnids()
        if wnids and name in wnids:
            return wnids.index(name)
    close = difflib.get_close_matches(_fold(name), folded, n=3, cutoff=0.6)
    hint = f" (close: {', '.join(classes[folded.index(c)] for c in close)})" if close else ""
    raise RobustgenError(
        f"{what}: class {name!r} is none of the model's {len(classes)} classes{hint}: name each class folder by the model's "
        f"class index (0..{len(classes) - 1}) or class name (e.g. {classes[min(1, len(classes) - 1)]!r})"
    )


def _fold(name: str) -> str:
    return re.sub(r"[\s_-]+", " ", name.strip().lower())
