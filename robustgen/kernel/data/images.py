"""Image files -> uint8 arrays: Pillow's plain raster decoders only, a pixel limit, one channel count per dataset.

Every reader of image files (the Tiny ImageNet reader, `folder:` datasets read whole, and
`LazyImageFolder`) decodes through `decode_image` and brings each image to the dataset's
channel count with `to_channels`: grayscale files in a colour dataset (Tiny ImageNet has
168 among its 10,000 validation JPEGs, ImageNet has some too) are repeated to RGB, colour
files in a grayscale dataset are converted to luminance (ITU-R 601-2, Pillow's "L"). The
channel count is the one most of the training images have, unless the caller names it
(`--channels`); how many images were converted is counted and reported.
"""

from __future__ import annotations

import warnings
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from robustgen.kernel.errors import RobustgenError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
# Pillow decoders allowed to open a file (by content, whatever its suffix): plain raster formats only.
# This keeps out e.g. EPS, which Pillow renders by running Ghostscript.
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")
MAX_IMAGE_PIXELS = 4096 * 4096  # per image; far above any dataset here, far below a decompression bomb
CHANNELS = (1, 3)  # grayscale or RGB: what robustgen's models take
_GRAY_MODES = ("L", "1", "LA")
_WIDE_GRAY_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")  # 16/32-bit grayscale (16-bit PNG, TIFF)
_TOO_LARGE = f"larger than robustgen decodes ({MAX_IMAGE_PIXELS} pixels; a decompression bomb?): resize it or remove it"


def check_channels(channels: int | None, *, what: str = "--channels") -> int | None:
    """None (the majority of the images) or 1 or 3."""
    if channels is not None and (isinstance(channels, bool) or channels not in CHANNELS):
        raise RobustgenError(f"{what} {channels!r}: use 1 (grayscale) or 3 (RGB), or leave it out for the channel count most images have")
    return channels


def majority_channels(counts: Iterable[int]) -> int:
    """The channel count most images have (a tie goes to 3: repeating gray to RGB loses nothing)."""
    tally = Counter(counts)
    if not tally:
        return 3
    return max(CHANNELS, key=lambda c: (tally.get(c, 0), c))


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """uint8 images (..., H, W, 1|3) with `channels` channels: gray repeated to RGB, or RGB to luminance.

    Luminance is ITU-R 601-2 in Pillow's integer arithmetic (what Image.convert("L") gives, bit for bit).
    """
    if images.shape[-1] == channels:
        return images
    if channels == 3:
        return np.repeat(images, 3, axis=-1)
    rgb = images.astype(np.uint32)
    return ((rgb[..., 0] * 19595 + rgb[..., 1] * 38470 + rgb[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]


def read_images(paths: list[Path], *, source: str, channels: int | None = None) -> tuple[np.ndarray, int]:
    """Decode image files into one uint8 NHWC array with `channels` channels; returns (images, how many were converted).

    channels None: the channel count most of these images have (see `majority_channels`).
    Grayscale means modes L, 1, LA, I;16*/I (16-bit: scaled to 0..255) and palette
    images whose palette is gray; everything else is RGB (alpha dropped). All images
    must have one size. `source` names where they came from in messages.
    """
    check_channels(channels)
    if not paths:
        raise RobustgenError(f"{source}: no images found: put PNG/JPEG files there")
    decoded, first = [], None
    for path in paths:
        image = decode_image(Path(path), source)
        if first is None:
            first = (Path(path), image.shape)
        elif image.shape[:2] != first[1][:2]:
            (h, w, c), (h0, w0, c0) = image.shape, first[1]
            raise RobustgenError(f"{source}: {path} is {w}x{h}x{c} but {first[0]} is {w0}x{h0}x{c0}: resize all images to one size")
        decoded.append(image)
    target = channels if channels is not None else majority_channels(image.shape[-1] for image in decoded)
    out = np.empty((len(decoded), *first[1][:2], target), dtype=np.uint8)  # filled in place: no list plus a stacked copy
    converted = 0
    for row, image in enumerate(decoded):
        converted += image.shape[-1] != target
        out[row] = to_channels(image, target)
        decoded[row] = None  # let each decoded image go once copied
    return out, converted


def decode_image(path: Path, source: str) -> np.ndarray:
    """One image file as uint8 (H, W, 1) or (H, W, 3), or one line saying why not."""
    from PIL import Image, UnidentifiedImageError

    unreadable = f"{source}: {path} is not a readable image: remove it or convert it to PNG/JPEG"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                width, height = img.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise RobustgenError(f"{source}: {path} is {width}x{height} pixels, {_TOO_LARGE}")
                arr = _image_array(img)
    except RobustgenError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):  # Pillow's own, larger limit
        raise RobustgenError(f"{source}: {path} claims a huge size, {_TOO_LARGE}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise RobustgenError(unreadable) from None
    if arr is None:
        raise RobustgenError(f"{source}: {path} is a floating-point image: convert it to 8-bit PNG")
    return arr[..., None] if arr.ndim == 2 else arr


def image_header(path: Path, source: str) -> tuple[int, int, int]:
    """(C, H, W) of an image file from its header (no pixels decoded): C is 1 for grayscale, else 3."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path, formats=IMAGE_FORMATS) as img:
                (width, height), gray = img.size, _is_gray(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise RobustgenError(f"{source}: {path} claims a huge size, {_TOO_LARGE}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
        raise RobustgenError(f"{source}: {path} is not a readable image: remove it or convert it to PNG/JPEG") from None
    if width * height > MAX_IMAGE_PIXELS:
        raise RobustgenError(f"{source}: {path} is {width}x{height} pixels, {_TOO_LARGE}")
    return (1 if gray else 3, int(height), int(width))


def _is_gray(img) -> bool:
    return img.mode in _GRAY_MODES + _WIDE_GRAY_MODES or (img.mode in ("P", "PA") and _palette_is_gray(img))


def _image_array(img) -> np.ndarray | None:
    if img.mode in _WIDE_GRAY_MODES:
        wide = np.asarray(img).astype(np.int64)
        return ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)  # 0..65535 -> 0..255
    if img.mode == "F":
        return None
    return np.asarray(img.convert("L" if _is_gray(img) else "RGB"), dtype=np.uint8)


def _palette_is_gray(img) -> bool:
    palette = img.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))
