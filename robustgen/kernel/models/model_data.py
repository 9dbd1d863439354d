"""`model_dataset`: the images a model works on, read the way it was trained. One function for eval, sample and compare.

From a model's meta (what `load_classifier` returns): the dataset it names (or the one the user passes),
read with the channels it was trained with, a folder of large images brought to its input size, checked
against its recorded training data (sha256) and input shape, and relabelled into its class indices when the
data hold only some of its classes (e.g. 2 ImageNet classes).
"""

from __future__ import annotations

import os

import numpy as np

from robustgen.kernel.data import ImageDataset, LazyImageFolder, load_dataset
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.classes import align_dataset

SAMPLING = "sampling needs the training images (to fit the initialiser and reference energies) of"
EVALUATING = "evaluating needs the test images of"


def model_dataset(meta: dict, *, data: str | None = None, data_root: str | os.PathLike | None = None, purpose: str = SAMPLING,
                  model: str = "the model", data_hint: str = "--data npz:PATH / folder:PATH") -> ImageDataset | LazyImageFolder:
    """The dataset `data` (default: the one `meta` names) in the model's class indices, or one line saying how to provide it.

    `purpose` starts the message when the data cannot be loaded (SAMPLING, EVALUATING), `data_hint` ends it (the command's
    own option); `model` names the model in messages.
    The sha256 check runs when the data are the model's own (no `data` given) and its meta recorded them.
    """
    spec = data or meta.get("dataset")
    if not spec:
        raise RobustgenError(f"{model} does not name its dataset: pass --data (e.g. digits, cifar10, npz:PATH or folder:PATH)")
    expected_shape = meta.get("input_shape")
    size = {"image_size": tuple(expected_shape[1:])} if spec.startswith("folder:") and expected_shape else {}
    channels = (meta.get("config") or {}).get("channels")  # the --channels the model was trained with, so its data are read alike
    try:
        dataset = load_dataset(spec, root=data_root if data_root is not None else meta.get("data_root"),
                               channels=channels if channels in (1, 3) else None, **size)
    except RobustgenError as exc:
        raise RobustgenError(f"{purpose} {spec!r}, which cannot be loaded ({str(exc).rstrip('.')}): "
                             f"point to them with --data-root DIR or {data_hint}") from None
    _check_recorded(dataset, meta, spec=spec, model=model, own=data is None)
    return _align(dataset, meta)


def check_same_data(spec: str, *, recorded: str | None, found: str | None, used: str) -> None:
    """The one rule for a recorded dataset hash: data that differ from what a model or a sample run `used` are refused."""
    if recorded and found and recorded != found:
        raise RobustgenError(f"dataset {spec} on this machine differs from the one {used} (sha256 mismatch): point --data-root at the original files")


def _check_recorded(dataset, meta: dict, *, spec: str, model: str, own: bool) -> None:
    """The model's own data must be the data it was trained on; any data must have its input shape."""
    # a lazy folder's fingerprint covers the size it is read at, which here is the model's input size, not training's
    recorded = meta.get("dataset_sha256") if own and not isinstance(dataset, LazyImageFolder) else None
    check_same_data(spec, recorded=recorded, found=dataset.fingerprint() if recorded else None, used=f"{model} was trained on")
    expected_shape = meta.get("input_shape")
    if expected_shape and list(dataset.image_shape) != list(expected_shape):
        raise RobustgenError(f"dataset {spec!r} has images shaped {list(dataset.image_shape)} but {model} expects {list(expected_shape)}: "
                             "pass the dataset it was trained on with --data")


def _align(data: ImageDataset | LazyImageFolder, meta: dict) -> ImageDataset | LazyImageFolder:
    """`align_dataset` for both dataset types: a LazyImageFolder is relabelled without reading its images.

    align_dataset rebuilds in-memory arrays, so for a lazy folder it is asked only for the
    class mapping, on a one-pixel stand-in with the folder's classes (same rules, same errors).
    """
    if not isinstance(data, LazyImageFolder):
        return align_dataset(data, meta)
    n = data.num_classes
    pixels, labels = np.zeros((n, 1, 1, 1), dtype=np.uint8), np.arange(n, dtype=np.int64)
    stand_in = ImageDataset(data.name, pixels, labels, pixels, labels, data.classes, crop_padding=0, flip=False, mean=(0.5,), std=(0.25,))
    aligned = align_dataset(stand_in, meta)
    return data if aligned is stand_in else data.relabel(aligned.y_train, aligned.classes)
