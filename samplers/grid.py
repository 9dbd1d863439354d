"""Image grids: one row per class, readable size (small images upscaled, nearest neighbour)."""

from __future__ import annotations

import io
import os
from typing import Sequence

import numpy as np

from robustgen.kernel.io import atomic_write_bytes
from robustgen.kernel.pictures import png_bytes, tile, zoom_for


def grid_array(
    images: np.ndarray, labels: np.ndarray, *, classes: Sequence[int], per_row: int = 10, rows_per_class: int = 1, min_cell: int = 32, pad: int = 2
) -> np.ndarray:
    """uint8 NHWC images -> one uint8 HxWx3 picture: `rows_per_class` rows of `per_row` images for each class, in order
    (a class with fewer images leaves white cells)."""
    _, h, w, c = images.shape
    cells_per_class = per_row * rows_per_class
    cells = np.full((len(classes) * cells_per_class, h, w, c), 255, dtype=np.uint8)
    for r, cls in enumerate(classes):
        mine = images[labels == cls][:cells_per_class]
        cells[r * cells_per_class : r * cells_per_class + len(mine)] = mine
    return tile(cells, per_row=per_row, zoom=zoom_for(h, w, min_cell), pad=pad)


def save_png(path: str | os.PathLike, picture: np.ndarray) -> None:
    atomic_write_bytes(path, png_bytes(picture))


def save_grid(path: str | os.PathLike, images: np.ndarray, labels: np.ndarray, *, classes: Sequence[int], per_row: int = 10, min_cell: int = 32) -> None:
    """Grid PNG; with few classes each gets several rows (about 10 rows in all)."""
    rows_per_class = max(1, 10 // max(len(classes), 1))
    save_png(path, grid_array(images, labels, classes=classes, per_row=per_row, rows_per_class=rows_per_class, min_cell=min_cell))


def strips_array(frames: np.ndarray, *, min_cell: int = 48, pad: int = 2) -> np.ndarray:
    """(S, 3, H, W, C) uint8 start/middle/final frames -> one picture, a chain per row."""
    s, k, h, w, c = frames.shape
    return tile(frames.reshape(s * k, h, w, c), per_row=k, zoom=zoom_for(h, w, min_cell), pad=pad)


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
