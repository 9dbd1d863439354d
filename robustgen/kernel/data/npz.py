"""`npz:PATH` datasets: x_train, y_train, x_test, y_test (uint8 NHWC images, integer labels) and an optional classes array.

Read with allow_pickle=False; every malformed file gets one line saying how to write it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustgen.kernel.cache import read_user_npz
from robustgen.kernel.data import ImageDataset, with_channels
from robustgen.kernel.errors import RobustgenError



_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
_NPZ_HOWTO = "save it with numpy.savez(PATH, x_train=..., y_train=..., x_test=..., y_test=...)"


def load_npz(spec: str, *, channels: int | None = None) -> ImageDataset:
    """A .npz with uint8 NHWC x_train/x_test, integer y_train/y_test, optional classes (names).

    Labels are class indices: integers, or floats holding whole numbers (3.0 is read as 3;
    2.5 or NaN is refused). Without a `classes` array the labels must be 0..K-1 with every
    class present (5..14 is refused, not silently made into 15 classes).
    """
    path = Path(spec[len("npz:"):]).expanduser()
    if path.is_dir():
        raise RobustgenError(f"{spec}: {path} is a directory: give npz:PATH to a .npz file holding x_train, y_train, x_test, y_test")
    if not path.is_file():
        raise RobustgenError(f"{spec}: file {path} not found: give npz:PATH to a .npz holding x_train, y_train, x_test, y_test")
    arrays, classes = _read_npz(spec, path)
    for key in ("x_train", "x_test"):
        arrays[key] = _npz_images(spec, key, arrays[key])
    for key in ("y_train", "y_test"):
        arrays[key] = _npz_labels(spec, key, arrays[key])
    if classes is None:  # a classes array names its classes, gaps and test-only classes included
        _check_splits_share_classes(spec, arrays["y_train"], arrays["y_test"])
    classes = _npz_classes(spec, classes, np.concatenate([arrays["y_train"], arrays["y_test"]]))
    dataset = ImageDataset(
        spec, arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"], classes,
        crop_padding=max(1, arrays["x_train"].shape[1] // 8), flip=arrays["x_train"].shape[-1] == 3,
    )
    return with_channels(dataset, channels)


def _read_npz(spec: str, path: Path) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """The four arrays (and classes) of an .npz, refusing anything else with one line."""
    found = read_user_npz(path, what=spec, fix=_NPZ_HOWTO, pickled_fix="store numeric arrays and a string classes array")
    missing = [k for k in _NPZ_KEYS if k not in found]
    if missing:
        raise RobustgenError(
            f"{spec}: missing arrays {', '.join(missing)}: the .npz needs x_train, y_train, x_test, y_test (uint8 NHWC images, integer labels)"
        )
    return {k: found[k] for k in _NPZ_KEYS}, found.get("classes")


def _npz_images(spec: str, key: str, x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # grayscale without a channel axis
        x = x[..., None]
    if x.dtype != np.uint8:
        raise RobustgenError(f"{spec}: {key} is {x.dtype}; store images as uint8 in 0..255 (NHWC)")
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise RobustgenError(f"{spec}: {key} has shape {x.shape}; expected (N, H, W, C) with C = 1 or 3")
    if len(x) == 0:
        raise RobustgenError(f"{spec}: {key} holds no images: the .npz needs at least one train and one test image")
    if 0 in x.shape[1:3]:
        raise RobustgenError(f"{spec}: {key} has shape {x.shape}: images need at least 1x1 pixels")
    return np.ascontiguousarray(x)


def _npz_labels(spec: str, key: str, y: np.ndarray) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.reshape(-1)
    if y.ndim != 1:
        raise RobustgenError(f"{spec}: {key} has shape {y.shape}; store one class index per image, shape (N,) (one-hot labels: use y.argmax(1))")
    if y.dtype.kind == "b":
        y = y.astype(np.int64)
    elif y.dtype.kind == "f":
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            raise RobustgenError(f"{spec}: {key} holds non-integer labels (e.g. {y[bad][0]!r}): store class indices as integers 0..K-1")
    elif y.dtype.kind not in "iu":
        raise RobustgenError(f"{spec}: {key} is {y.dtype}; store class indices as integers 0..K-1 (names go in a classes array)")
    if len(y) and (y.min() < 0 or y.max() > np.iinfo(np.int32).max):
        raise RobustgenError(f"{spec}: {key} holds label {y.min() if y.min() < 0 else y.max()}: labels are class indices 0..K-1")
    return y.astype(np.int64)


def _check_splits_share_classes(spec: str, y_train: np.ndarray, y_test: np.ndarray) -> None:
    """Without a classes array, a test class the training split never shows is a labelling slip: train 5..14 with
    test 0..9 is two labellings, not 15 classes."""
    unseen = sorted(set(np.unique(y_test).tolist()) - set(np.unique(y_train).tolist()))
    if unseen:
        shown = ", ".join(map(str, unseen[:5])) + (", ..." if len(unseen) > 5 else "")
        raise RobustgenError(
            f"{spec}: y_test holds classes {shown} that y_train never has (train labels run {y_train.min()}..{y_train.max()}, "
            f"test {y_test.min()}..{y_test.max()}): label both splits with the same class indices 0..K-1, or add a classes array naming every class"
        )


def _npz_classes(spec: str, classes: np.ndarray | None, labels: np.ndarray) -> tuple[str, ...]:
    if classes is None:
        present = np.unique(labels)
        if len(present) and present[-1] != len(present) - 1:
            absent = sorted(set(range(int(present[-1]) + 1)) - set(present.tolist()))
            shown = ", ".join(map(str, absent[:5])) + (", ..." if len(absent) > 5 else "")
            raise RobustgenError(
                f"{spec}: labels run {present[0]}..{present[-1]} but classes {shown} never occur and there is no classes array: "
                "relabel to 0..K-1 or add a classes array naming every class"
            )
        return tuple(str(i) for i in range(len(present)))
    if classes.ndim != 1 or classes.dtype.kind not in "USiu" or len(classes) == 0:
        raise RobustgenError(f"{spec}: classes must be a 1-D array of class names (strings), got {classes.dtype} {classes.shape}")
    names = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c) for c in classes.tolist()]
    if len(set(names)) != len(names):
        duplicate = next(n for n in names if names.count(n) > 1)
        raise RobustgenError(f"{spec}: class name {duplicate!r} appears twice in classes: give every class a distinct name")
    if labels.max() >= len(names):
        raise RobustgenError(
            f"{spec}: labels go up to {labels.max()} but classes names only {len(names)} classes: give one name per class index 0..{labels.max()}"
        )
    return tuple(names)
