"""Image grids: one row per class, readable size (small images upscaled, nearest neighbour)."""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from robustgen.io import atomic_write_bytes


def grid_array(
    images: np.ndarray, labels: np.ndarray, *, classes: Sequence[int], per_row: int = 10, rows_per_class: int = 1, min_cell: int = 32, pad: int = 2
) -> np.ndarray:
    """uint8 NHWC images -> one uint8 HxWx3 picture: `rows_per_class` rows of `per_row` images for each class, in order."""
    _, h, w, c = images.shape
    zoom = max(1, int(np.ceil(min_cell / max(h, w))))
    ch, cw = h * zoom, w * zoom
    rows = len(classes) * rows_per_class
    out = np.full((rows * (ch + pad) + pad, per_row * (cw + pad) + pad, 3), 255, dtype=np.uint8)
    for r, cls in enumerate(classes):
        for j, img in enumerate(images[labels == cls][: per_row * rows_per_class]):
            img = img if c == 3 else np.repeat(img[..., :1], 3, axis=-1)
            img = img.repeat(zoom, axis=0).repeat(zoom, axis=1)
            row, col = r * rows_per_class + j // per_row, j % per_row
            top, left = pad + row * (ch + pad), pad + col * (cw + pad)
            out[top : top + ch, left : left + cw] = img
    return out


def save_png(path: str | os.PathLike, picture: np.ndarray) -> None:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture if picture.shape[-1] == 3 else picture[..., 0]).save(buffer, format="PNG")
    atomic_write_bytes(path, buffer.getvalue())


def save_grid(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, *, classes: Sequence[int], per_row: int = 10, min_cell: int = 32) -> None:
    """Grid PNG; with few classes each gets several rows (about 10 rows in all)."""
    rows_per_class = max(1, 10 // max(len(classes), 1))
    save_png(path, grid_array(images, labels, classes=classes, per_row=per_row, rows_per_class=rows_per_class, min_cell=min_cell))


def strips_array(frames: np.ndarray, *, min_cell: int = 48, pad: int = 2) -> np.ndarray:
    """(S, 3, H, W, C) uint8 start/middle/final frames -> one picture, a chain per row."""
    s, k, h, w, c = frames.shape
    zoom = max(1, int(np.ceil(min_cell / max(h, w))))
    ch, cw = h * zoom, w * zoom
    out = np.full((s * (ch + pad) + pad, k * (cw + pad) + pad, 3), 255, dtype=np.uint8)
    for row in range(s):
        for col in range(k):
            img = frames[row, col]
            img = img if c == 3 else np.repeat(img[..., :1], 3, axis=-1)
            top, left = pad + row * (ch + pad), pad + col * (cw + pad)
            out[top : top + ch, left : left + cw] = img.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return out


def save_strips(path: str | os.PathLike, frames: np.ndarray, class_names: Sequence[str], *, steps: Sequence[int]) -> None:
    """strips.png: for each traced chain, start -> middle -> final, with a caption column (class, steps)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture = strips_array(frames)
    rows = len(frames)
    fig, ax = plt.subplots(figsize=(4.2, 0.55 * rows + 0.6))
    ax.imshow(picture, interpolation="nearest")
    height = picture.shape[0] / rows
    ax.set_yticks([height * (i + 0.5) for i in range(rows)], [f"{name} ({n} steps)" for name, n in zip(class_names, steps)], fontsize=7)
    ax.set_xticks([picture.shape[1] * (i + 0.5) / 3 for i in range(3)], ["start", "middle", "final"], fontsize=8)
    ax.tick_params(length=0)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
