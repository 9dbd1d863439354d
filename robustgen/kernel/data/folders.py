"""`folder:PATH` datasets: an ImageFolder tree, read whole (small images) or one class at a time (large ones).

    PATH/train/<class>/*.png|jpg ...   and   PATH/test/<class>/ (or PATH/val/<class>/)

Small images (up to 64x64x3 values) are decoded at once into an ImageDataset. A folder
of large images (an ImageNet folder: 1.28M images of 224x224x3 would need 193 GB) is a
`LazyImageFolder`: only the file listing is read up front, and each class's images are
decoded when asked for (`class_images`). Both bring every image to the folder's channel
count (robustgen.kernel.data.images): the majority of the training images, or `channels`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from robustgen.kernel.data import ImageDataset, _class_index
from robustgen.kernel.data.images import IMAGE_SUFFIXES, check_channels, decode_image, image_header, majority_channels, read_images, to_channels
from robustgen.kernel.errors import RobustgenError

LARGE_IMAGE_DIM = 64 * 64 * 3  # values per image above which images count as large (ImageNet-size behaviour)
WHOLE_SPLIT_BYTES = 2 << 30  # a lazy folder's whole split is decoded into memory only up to this size
IMAGENET_CROP = 0.875  # evaluation preprocessing: resize the shorter side to size / 0.875 (224 -> 256), centre crop
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def is_large(image_shape: tuple[int, int, int]) -> bool:
    """Images above 64x64x3 values: read lazily, neighbours in feature space, Gaussian at reduced resolution."""
    return int(np.prod(image_shape)) > LARGE_IMAGE_DIM


def load_folder(spec: str, *, image_size: tuple[int, int] | None = None, lazy: bool | None = None,
                channels: int | None = None) -> ImageDataset | LazyImageFolder:
    """ImageFolder layout: PATH/train/<class>/*.png and PATH/test/ (or val/); large images are read lazily."""
    check_channels(channels)
    base, classes, train, test = folder_listing(spec)
    if lazy is None:  # decided by the files' own size: image_size never turns small images into large ones
        lazy = is_large(folder_image_shape(spec, train, None))
    if lazy:
        return LazyImageFolder(spec, base=base, classes=classes, train=train, test=test, image_size=image_size, channels=channels)
    x_tr, y_tr, converted = read_labelled(_flat_listing(train), spec, channels=channels)
    x_te, y_te, converted_test = read_labelled(_flat_listing(test), spec, channels=x_tr.shape[-1])  # the test split takes the train split's count
    return ImageDataset(spec, x_tr, y_tr, x_te, y_te, tuple(classes), crop_padding=max(1, x_tr.shape[1] // 8), flip=x_tr.shape[-1] == 3,
                        converted=converted + converted_test)


def read_labelled(items: list[tuple[Path, int]], what: str, *, channels: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    """(images, labels, converted) for (path, label) pairs: `read_images` plus the labels."""
    images, converted = read_images([p for p, _ in items], source=what, channels=channels)
    return images, np.asarray([label for _, label in items], dtype=np.int64), converted


def _flat_listing(per_class: list[list[Path]]) -> list[tuple[Path, int]]:
    return [(p, i) for i, paths in enumerate(per_class) for p in paths]


def folder_listing(spec: str) -> tuple[Path, tuple[str, ...], list[list[Path]], list[list[Path]]]:
    """(base, classes, train paths per class, test paths per class) of an ImageFolder; reads no image."""
    base = Path(spec[len("folder:"):]).expanduser()
    if not base.is_dir():
        raise RobustgenError(f"{spec}: {base} is not a directory: point folder: at a folder holding train/ and test/ (or val/)")
    test_dir = next((base / d for d in ("test", "val") if (base / d).is_dir()), None)
    if not (base / "train").is_dir() or test_dir is None:
        raise RobustgenError(f"{spec}: expected {base}/train/<class>/ and {base}/test/<class>/ (or val/) with images")
    classes = sorted(d.name for d in (base / "train").iterdir() if d.is_dir())
    if not classes:
        raise RobustgenError(f"{spec}: {base}/train holds no class folders")

    def listing(split_dir: Path) -> list[list[Path]]:
        unknown = sorted({d.name for d in split_dir.iterdir() if d.is_dir()} - set(classes))
        if unknown:
            raise RobustgenError(f"{spec}: {split_dir} has class folders not in train/: {', '.join(unknown)}")
        return [
            sorted(p for p in (split_dir / c).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if (split_dir / c).is_dir() else []
            for c in classes
        ]

    return base, tuple(classes), listing(base / "train"), listing(test_dir)


def folder_image_shape(spec: str, per_class: list[list[Path]], image_size: tuple[int, int] | None,
                       channels: int | None = None) -> tuple[int, int, int]:
    """(C, H, W) of a folder's images from file headers (no pixels decoded).

    H, W: the first training image's (or image_size). C: `channels`, else the majority over
    the first image of every class (one header per class: cheap even for ImageNet's 1,000).
    """
    firsts = [paths[0] for paths in per_class if paths]
    if not firsts:
        raise RobustgenError(f"{spec}: no images found: put PNG/JPEG files there")
    _, height, width = image_header(firsts[0], spec)
    if channels is None:
        channels = majority_channels(image_header(path, spec)[0] for path in firsts) if len(firsts) > 1 else image_header(firsts[0], spec)[0]
    height, width = image_size if image_size is not None else (height, width)
    return (int(channels), int(height), int(width))


class LazyImageFolder:
    """An ImageFolder whose images are decoded one class at a time, when asked for.

    Holds the file listing and the labels (y_train, y_test: cheap), never the
    pixels: `class_images(cls, split)` decodes that class's files (Pillow's plain
    raster decoders with robustgen's pixel limit, as `read_images`); nothing is
    kept between calls. `fingerprint()` hashes the listing (relative paths, sizes,
    mtimes, labels, image shape), not the pixels. Every image is brought to the
    folder's channel count (`channels`, else the majority over the first image of
    each class): ImageNet's few grayscale files become RGB; `converted` counts the
    images converted so far.

    image_size (H, W): images of another size get ImageNet's evaluation
    preprocessing (shorter side resized to H / 0.875 with bilinear filtering, then
    the centre H x W crop, as torchvision's Resize(256) + CenterCrop(224)); images
    already H x W are used as they are. Without it all images must share one size.

    mean/std are ImageNet's (measuring them would read every image); whole-split
    access (`split`, `x_train`, `x_test`) decodes the split while it fits in
    `WHOLE_SPLIT_BYTES` and refuses with one line otherwise.
    """

    def __init__(self, name: str, *, base: Path, classes: tuple[str, ...], train: list[list[Path]], test: list[list[Path]],
                 image_size: tuple[int, int] | None = None, channels: int | None = None):
        self.name, self.base, self.classes = name, Path(base), tuple(classes)
        self.files = {"train": [list(p) for p in train], "test": [list(p) for p in test]}
        self.image_size = tuple(int(v) for v in image_size) if image_size is not None else None
        self.images_read = 0  # files decoded so far (tests and benchmarks check laziness with it)
        self.converted = 0  # of those, files whose channel count was changed to the folder's
        if not self.classes:
            raise RobustgenError(f"{name}: no classes: a dataset needs at least one class")
        for split in ("train", "test"):
            if len(self.files[split]) != len(self.classes):
                raise ValueError(f"{split}: one list of files per class expected")
            if not any(self.files[split]):
                raise RobustgenError(f"{name}: the {split} split holds no images: a dataset needs at least one train and one test image")
        self.y_train = self._labels("train")
        self.y_test = self._labels("test")
        c, h, w = folder_image_shape(name, self.files["train"], self.image_size, check_channels(channels))
        self.image_shape = (c, h, w)
        self.crop_padding, self.flip = max(1, h // 8), c == 3
        self.mean = IMAGENET_MEAN if c == 3 else (0.449,)
        self.std = IMAGENET_STD if c == 3 else (0.226,)
        self._fingerprint: str | None = None
        self._whole: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def _labels(self, split: str) -> np.ndarray:
        return np.concatenate([np.full(len(paths), i, dtype=np.int64) for i, paths in enumerate(self.files[split])])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def class_index(self, name_or_index: str | int) -> int:
        """Resolve a class given by index ("3", 3) or by name ("n01440764")."""
        return _class_index(self, name_or_index)

    def class_images(self, cls: int, split: str = "train") -> np.ndarray:
        """uint8 NHWC images of class `cls` in `split`, decoded now (file order; (0, H, W, C) if none)."""
        paths = self._split_files(split)[cls]
        c, h, w = self.image_shape
        out = np.empty((len(paths), h, w, c), dtype=np.uint8)  # filled in place: no list of arrays plus a stacked copy
        for row, path in enumerate(paths):
            out[row] = self._fit(path, decode_image(path, self.name))
            self.images_read += 1
        return out

    def _fit(self, path: Path, image: np.ndarray) -> np.ndarray:
        """One decoded image brought to the folder's (H, W, C), or one line saying why it cannot be."""
        c, h, w = self.image_shape
        if image.shape[-1] != c:
            image = to_channels(image, c)
            self.converted += 1
        if image.shape[:2] != (h, w):
            if self.image_size is None:
                raise RobustgenError(
                    f"{self.name}: {path} is {image.shape[1]}x{image.shape[0]} but the folder's images are {w}x{h}: resize all images to one size"
                )
            image = _resize_centre_crop(image, h, w)
        return image

    def split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """The whole split decoded (kept for later calls) while it fits in WHOLE_SPLIT_BYTES, else one line."""
        files = self._split_files(split)
        if split not in self._whole:
            n = sum(len(p) for p in files)
            need = n * int(np.prod(self.image_shape))
            if need > WHOLE_SPLIT_BYTES:
                c, h, w = self.image_shape
                raise RobustgenError(
                    f"{self.name}: the {split} split ({n} images of {w}x{h}x{c}, {need / 2**30:.1f} GiB) is too large to hold in memory: "
                    f"this folder is read one class at a time, which `robustgen sample` does; to evaluate or train, point folder: at a "
                    f"smaller folder (a few classes, under {WHOLE_SPLIT_BYTES / 2**30:.0f} GiB) or convert it to npz:PATH"
                )
            x = np.concatenate([self.class_images(i, split) for i in range(self.num_classes)])
            self._whole[split] = (x, self.y_train if split == "train" else self.y_test)
        return self._whole[split]

    def _split_files(self, split: str) -> list[list[Path]]:
        if split not in self.files:
            raise RobustgenError(f"unknown split {split!r}: use train or test")
        return self.files[split]

    @property
    def x_train(self) -> np.ndarray:
        return self.split("train")[0]

    @property
    def x_test(self) -> np.ndarray:
        return self.split("test")[0]

    def fingerprint(self) -> str:
        """sha256 of the listing: each file's split, label, relative path, size and mtime, plus the image shape."""
        if self._fingerprint is None:
            import hashlib

            digest = hashlib.sha256(f"lazy-folder {self.image_shape} {self.image_size}\n".encode())
            for split in ("train", "test"):
                for label, paths in enumerate(self.files[split]):
                    for path in paths:
                        stat = path.stat()
                        digest.update(f"{split}\0{label}\0{path.relative_to(self.base).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    def relabel(self, mapping: np.ndarray, classes: tuple[str, ...]) -> LazyImageFolder:
        """The same files with class i relabelled mapping[i] among `classes` (classes no file maps to stay empty)."""
        mapping = np.asarray(mapping, dtype=np.int64)
        if len(mapping) != self.num_classes or len(set(mapping.tolist())) != len(mapping) or mapping.min() < 0 or mapping.max() >= len(classes):
            raise ValueError("mapping must send each class to a distinct index of `classes`")
        moved = {}
        for split, per_class in self.files.items():
            lists = [[] for _ in classes]
            for i, paths in enumerate(per_class):
                lists[int(mapping[i])] = paths
            moved[split] = lists
        return LazyImageFolder(self.name, base=self.base, classes=tuple(classes), train=moved["train"], test=moved["test"], image_size=self.image_size,
                               channels=self.image_shape[0])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return f"LazyImageFolder({self.name!r}, {len(self.y_train)} train / {len(self.y_test)} test images of {w}x{h}x{c}, {self.num_classes} classes)"


def _resize_centre_crop(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """ImageNet evaluation preprocessing: shorter side to size / 0.875 (bilinear, antialiased), centre crop."""
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(height, width) / IMAGENET_CROP / min(h, w)
    new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
    pil = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
    resized = np.asarray(pil.resize((new_w, new_h), Image.BILINEAR), dtype=np.uint8)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    crop = resized[top : top + height, left : left + width]
    return crop[..., None] if crop.ndim == 2 else crop
