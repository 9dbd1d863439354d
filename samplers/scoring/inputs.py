"""What gets scored and against what: images as uint8 NHWC arrays plus labels.

Samples come from a sample run dir (`DIR/samples.npz`, written by `robustgen
sample`), a `.npz` of uint8 images, or a folder of images (flat, or one
sub-folder per class whose names are the reference's class names or indices).
References come from the dataset registry (`digits`, `cifar10`, `npz:PATH`,
`folder:PATH`): FID/KID/PRC against the train split by default, and the test
split beside it (FID against the test split, memorisation's yardstick).

Every malformed input gives one RobustgenError line naming the file and the fix.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustgen.kernel.cache import read_user_npz
from robustgen.kernel.data import read_images
from robustgen.kernel.errors import RobustgenError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
SAMPLES_FILE = "samples.npz"
META_FILE = "meta.json"
_IMAGE_KEYS = ("images", "x", "arr_0")  # samples.npz, a plain savez(x=...), savez(array)
_LABEL_KEYS = ("labels", "y")
_SAVE_SAMPLES = "save the uint8 NHWC images with numpy.savez(PATH, images=..., labels=...) or rerun `robustgen sample`"


class _NHWCImages:
    """What image sets and references share: `images` (N, H, W, C) uint8."""

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W)."""
        _, h, w, c = self.images.shape
        return (c, h, w)

    def __len__(self) -> int:
        return len(self.images)


@dataclass(frozen=True, eq=False)
class ImageSet(_NHWCImages):
    """Images to score (or to compare against), held in memory."""

    source: str  # what the user pointed at, for messages and score.json
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray | None  # (N,) int64 intended classes, or None when unknown
    run_dir: Path | None = None  # set when the source is a sample run dir
    meta: dict = field(default_factory=dict)  # the run dir's meta.json (empty otherwise)
    class_names: tuple[str, ...] | None = None  # folder-per-class inputs: the folder names


@dataclass(frozen=True, eq=False)
class Reference(_NHWCImages):
    """One split of a registry dataset."""

    spec: str  # registry spec, e.g. "digits" or "npz:/data/x.npz"
    split: str  # "train" or "test"
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    classes: tuple[str, ...]
    fingerprint: str  # sha256 of the whole dataset (robustgen.kernel.data.ImageDataset.fingerprint)


# --------------------------------------------------------------------------- samples


def write_image_set(out: str | os.PathLike, images: np.ndarray, labels: np.ndarray, *, classes, meta: dict) -> Path:
    """Write real images in the sample-run format (samples.npz, grid.png, meta.json), so they are
    scored and reported exactly like generated ones (e.g. a dataset's test split as the best achievable)."""
    from robustgen.kernel.io import atomic_path, atomic_write_json
    from samplers.grid import save_grid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_grid(out / "grid.png", images, labels, classes=list(range(len(classes))))
    atomic_write_json(out / "meta.json", {**meta, "n": len(images), "classes": list(classes)})
    with atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, images=images, labels=labels)
    return out


def load_samples(path: str | os.PathLike | ImageSet | np.ndarray, *, labels: np.ndarray | None = None) -> ImageSet:
    """Read samples from a run dir, an .npz, a folder of images, or take an array as is.

    `labels` (intended classes, one per image) replaces whatever labels the input carries.
    """
    found = _load_any(path)
    if labels is None:
        return found
    return ImageSet(found.source, found.images, _check_labels(labels, len(found), "the labels array"), found.run_dir, found.meta)


def _load_any(path) -> ImageSet:
    if isinstance(path, ImageSet):
        return path
    if isinstance(path, np.ndarray):
        return ImageSet("<array>", _check_images(path, "the images array"), None)
    path = Path(path).expanduser()
    if not path.exists():
        raise RobustgenError(f"samples {path} not found: give a sample run dir, an .npz of uint8 images, or a folder of images")
    if path.is_file():
        if path.suffix.lower() != ".npz":
            raise RobustgenError(f"samples {path} is not an .npz: give a sample run dir, an .npz of uint8 images, or a folder of images")
        return _load_npz(path)
    if (path / SAMPLES_FILE).is_file():
        meta = _read_meta(path)
        found = _load_npz(path / SAMPLES_FILE)
        return ImageSet(str(path), found.images, found.labels, run_dir=path, meta=meta)
    if (path / META_FILE).is_file():
        raise RobustgenError(f"{path} is a sample run dir without {SAMPLES_FILE} (unfinished or deleted?): rerun `robustgen sample` or point at the .npz")
    return _load_folder(path)


def _read_meta(run_dir: Path) -> dict:
    meta_path = run_dir / META_FILE
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RobustgenError(f"cannot read {meta_path} ({exc}): fix or delete it") from None
    return meta if isinstance(meta, dict) else {}


def _load_npz(path: Path) -> ImageSet:
    found = read_user_npz(path, what="samples", fix=_SAVE_SAMPLES)
    files = list(found)
    key = next((k for k in _IMAGE_KEYS if k in files), files[0] if len(files) == 1 else None)
    if key is None:
        raise RobustgenError(f"{path} holds arrays {', '.join(files) or '(none)'} but no image array: {_SAVE_SAMPLES}")
    label_key = next((k for k in _LABEL_KEYS if k in files), None)
    images = _check_images(found[key], str(path))
    return ImageSet(str(path), images, _check_labels(found[label_key] if label_key else None, len(images), str(path)))


def _check_images(images: np.ndarray, what: str) -> np.ndarray:
    if images.ndim == 3:  # grayscale without a channel axis
        images = images[..., None]
    if images.ndim != 4:
        raise RobustgenError(f"{what}: images have shape {images.shape}; expected (N, H, W, C) uint8")
    if images.shape[-1] not in (1, 3) and images.shape[1] in (1, 3):
        raise RobustgenError(f"{what}: images have shape {images.shape}, which looks channels-first: save them as NHWC (x.transpose(0, 2, 3, 1))")
    if images.shape[-1] not in (1, 3):
        raise RobustgenError(f"{what}: images have {images.shape[-1]} channels; expected 1 (grayscale) or 3 (RGB), NHWC")
    if images.dtype != np.uint8:
        raise RobustgenError(f"{what}: images are {images.dtype}; store them as uint8 in 0..255, e.g. (x * 255).round().astype(np.uint8)")
    if len(images) == 0:
        raise RobustgenError(f"{what}: holds no images: generate some samples first")
    return np.ascontiguousarray(images)


def _check_labels(labels: np.ndarray | None, n: int, what: str) -> np.ndarray | None:
    if labels is None:
        return None
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != n:
        raise RobustgenError(f"{what}: {n} images but {len(labels)} labels: save one label per image")
    if not np.issubdtype(labels.dtype, np.integer):
        raise RobustgenError(f"{what}: labels are {labels.dtype}; store class indices as integers")
    if labels.min() < 0:
        raise RobustgenError(f"{what}: labels must be class indices >= 0")
    return labels.astype(np.int64)


def _load_folder(folder: Path) -> ImageSet:
    """Flat folder of images (no labels) or one sub-folder per class."""
    entries = sorted(folder.iterdir())
    files = [p for p in entries if p.is_file() and not p.name.startswith(".")]
    images_here = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    subdirs = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
    if images_here or not subdirs:
        if not images_here:
            other = f" (found only {', '.join(p.name for p in files[:3])}{', ...' if len(files) > 3 else ''})" if files else ""
            raise RobustgenError(
                f"{folder} holds no images{other}: put PNG/JPEG samples there, or give a run dir with {SAMPLES_FILE} or an .npz"
            )
        images, _ = read_images(images_here, source=str(folder))  # one channel count: the majority's
        return ImageSet(str(folder), images, None)
    items = [(p, i) for i, d in enumerate(subdirs) for p in sorted(d.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise RobustgenError(f"{folder} has sub-folders but no images in them: put PNG/JPEG samples in {folder}/<class>/")
    images, _ = read_images([p for p, _ in items], source=str(folder))
    labels = np.asarray([i for _, i in items], dtype=np.int64)
    return ImageSet(str(folder), images, labels, class_names=tuple(d.name for d in subdirs))


def relabel_by_class_names(samples: ImageSet, classes: tuple[str, ...]) -> ImageSet:
    """Folder-per-class samples: map folder names onto the reference's class indices (the one naming rule:
    robustgen.kernel.models.classes.model_class_index, which also reads the folder names `robustgen sample --png` writes)."""
    if samples.class_names is None or samples.labels is None:
        return samples
    from robustgen.kernel.models.classes import model_class_index

    mapping = [model_class_index(name, classes, what=f"{samples.source}: sub-folder") for name in samples.class_names]
    labels = np.asarray(mapping, dtype=np.int64)[samples.labels]
    return ImageSet(samples.source, samples.images, labels, samples.run_dir, samples.meta, None)


# --------------------------------------------------------------------------- reference


def load_reference(spec: str, *, split: str = "train", data_root: str | os.PathLike | None = None) -> Reference:
    """One split of a dataset from robustgen's registry (downloads follow the registry's rules)."""
    if split not in ("train", "test"):
        raise RobustgenError(f"unknown reference split {split!r}: use train or test")
    splits = load_reference_splits(spec, data_root=data_root)
    if split not in splits:
        raise RobustgenError(f"reference {spec} has no {split} images: choose the other --ref-split")
    return splits[split]


def load_reference_splits(spec: str, *, data_root: str | os.PathLike | None = None, model_meta: dict | None = None) -> dict[str, Reference]:
    """Every non-empty split of a registry dataset ({"train": ..., "test": ...}), loaded once.

    model_meta: the meta of the model the samples came from, when known: the reference is then read the way that
    model reads its data (robustgen.kernel.models.model_data.model_dataset: its channels, input size and classes).
    """
    from robustgen.kernel.data import load_dataset
    from robustgen.kernel.models.model_data import model_dataset

    if model_meta:
        dataset = model_dataset(model_meta, data=spec, data_root=data_root, purpose="scoring needs the reference images of",
                                model="the sampled model", data_hint="--ref npz:PATH / folder:PATH")
    else:
        dataset = load_dataset(spec, root=data_root)
    fingerprint = dataset.fingerprint()
    out = {}
    for split in ("train", "test"):
        images, labels = dataset.split(split)
        if len(images):
            out[split] = Reference(spec, split, images, labels, tuple(dataset.classes), fingerprint)
    return out


def reference_from_meta(samples: ImageSet) -> tuple[str, str | None] | None:
    """The dataset a sample run was drawn from: (spec, data_root), from meta.json or its checkpoint."""
    meta = samples.meta
    ck_meta = sampled_model_meta(samples)
    spec = meta.get("dataset") if isinstance(meta.get("dataset"), str) else ck_meta.get("dataset")
    if not isinstance(spec, str):
        return None
    root = meta.get("data_root") or ck_meta.get("data_root")
    return spec, root if isinstance(root, str) else None


def sampled_model_meta(samples: ImageSet) -> dict:
    """The meta of the robustgen checkpoint a sample run names, if it is still there ({} otherwise)."""
    ckpt = samples.meta.get("checkpoint")
    if isinstance(ckpt, dict):  # {"path": ..., "sha256": ...}
        ckpt = ckpt.get("path")
    if not isinstance(ckpt, str):
        return {}
    path = Path(ckpt)
    if not path.is_absolute() and samples.run_dir is not None and not path.exists():
        path = samples.run_dir / path
    if not path.is_file():
        return {}
    from robustgen.kernel.models.checkpoint import read_checkpoint

    try:
        return read_checkpoint(path)["meta"]
    except RobustgenError:
        return {}
