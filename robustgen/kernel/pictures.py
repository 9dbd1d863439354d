"""Tiling images into one picture (torchvision's make_grid) and encoding it as PNG: the one home of both.

Sample grids, chain strips (samplers.grid) and the report's closest-pair strip all tile through `tile`.
"""

from __future__ import annotations

import io

import numpy as np
import torch


def tile(images: np.ndarray, *, per_row: int, zoom: int = 1, pad: int = 2, border: bool = True) -> np.ndarray:
    """uint8 (N, H, W, C) images -> one uint8 RGB picture, `per_row` images a row, `pad` white pixels between them.

    Images are enlarged `zoom` times (nearest neighbour, so pixels stay sharp); single-channel ones are shown grey.
    border=False drops the white frame around the whole picture (the gaps between images stay).
    """
    from torchvision.utils import make_grid

    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if x.shape[1] != 3:
        x = x[:, :1].expand(-1, 3, -1, -1)
    if zoom > 1:
        x = x.repeat_interleave(zoom, dim=2).repeat_interleave(zoom, dim=3)
    grid = make_grid(x, nrow=per_row, padding=pad, pad_value=255)
    if len(x) == 1:  # make_grid returns a lone image unframed
        grid = torch.nn.functional.pad(grid, (pad, pad, pad, pad), value=255)
    picture = grid.permute(1, 2, 0).numpy()
    return picture if border or pad == 0 else picture[pad:-pad, pad:-pad]


def zoom_for(height: int, width: int, min_cell: int) -> int:
    """The whole-number enlargement that makes an image at least `min_cell` pixels on its long side."""
    return max(1, int(np.ceil(min_cell / max(height, width))))


def png_bytes(picture: np.ndarray) -> bytes:
    """PNG of a uint8 HxWx3 (RGB) or HxWx1 / HxW (grey) picture."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture[..., 0] if picture.ndim == 3 and picture.shape[-1] == 1 else picture).save(buffer, format="PNG")
    return buffer.getvalue()
