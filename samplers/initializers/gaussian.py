"""`gaussian`: class-conditional Gaussian, full covariance plus a ridge (Santurkar et al. 2019).

x0 ~ N(mu_c, Sigma_c + ridge I). Sampling needs a factor F with F^T F = Sigma_c:
with more images than pixels that is the Cholesky factor (D x D); with fewer
(CIFAR: ~500 images, 3072 pixels) the centred data / sqrt(n - 1) is an exact,
much smaller factor, and the ridge is added as independent isotropic noise.
Both give exactly the same distribution.

At ImageNet size the Gaussian is fitted at reduced resolution and upsampled,
as Santurkar et al. do. Their code is the generation notebook of
MadryLab/robustness_applications (generation.ipynb; read here through copies of
its code: AminJun/robustness_applications and a script "adapted from" it). It
sets `GRAIN = 4 if DATA != 'CIFAR' else 1`, averages each 4x4 block of the
224x224 images (`downsample`: 56x56x3 = 9,408 dims), fits
`MultivariateNormal(mean, cov + 1e-4 I)` per class, samples at 56x56, clamps to
[0, 1] and repeats each value over its 4x4 block (`upsample`). Here:
`InitConfig.resolution` is the fitted height (auto: height // 4 above 64x64x3,
full resolution below, so CIFAR keeps its exact full-resolution Gaussian);
downsampling is area averaging (F.interpolate "area": their block mean when the
size divides) and upsampling nearest (their block repeat; clamping commutes with
it). Differences kept on purpose: they fitted on the test split with cov / n and
a 1e-4 ridge; robustgen fits on training images with cov / (n - 1) and `ridge`
(1e-3 by default), as at full resolution. An ImageNet class (1,300 images) gives
a 1,300 x 9,408 factor (49 MB); no D x D matrix at any resolution unless n > D.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from robustgen.kernel.data import to_float
from samplers.initializers.base import Initializer, batch_for, class_images, flat_pixels


class GaussianInit(Initializer):
    kind = "gaussian"

    def __init__(self, image_shape, *, mean: np.ndarray, factor: np.ndarray, extra_std: float, fit_shape: tuple[int, int, int] | None = None):
        super().__init__(image_shape)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.factor = torch.as_tensor(factor, dtype=torch.float32)  # (r, d), F^T F = covariance (minus the extra noise)
        self.extra_std = float(extra_std)  # std of the isotropic ridge noise not already inside `factor`
        self.fit_shape = tuple(int(v) for v in fit_shape) if fit_shape is not None else self.image_shape  # (C, h, w) the Gaussian lives at

    def _draw(self, generators) -> Tensor:
        z = torch.stack([torch.randn(self.factor.shape[0], generator=g) for g in generators])
        x = self.mean + z @ self.factor
        if self.extra_std > 0:
            x = x + self.extra_std * torch.stack([torch.randn(self.mean.numel(), generator=g) for g in generators])
        if self.fit_shape != self.image_shape:
            x = F.interpolate(x.view(-1, *self.fit_shape), size=self.image_shape[1:], mode="nearest").flatten(1)
        return self._images(x)


def reduced_shape(image_shape: tuple[int, int, int], resolution: int | None) -> tuple[int, int, int]:
    """(C, h, w) the Gaussian is fitted at: height `resolution`, width scaled alike (None: full size)."""
    c, h, w = image_shape
    if resolution is None or resolution >= h:
        return (c, h, w)
    return (c, resolution, max(1, round(w * resolution / h)))


def downsampled_rows(images: np.ndarray, shape: tuple[int, int, int]) -> Tensor:
    """uint8 NHWC images -> float64 (n, C*h*w) rows area-averaged to `shape`, a batch at a time."""
    step = batch_for(int(np.prod(images.shape[1:])))
    rows = [F.interpolate(to_float(images[i : i + step]), size=shape[1:], mode="area").flatten(1).double() for i in range(0, len(images), step)]
    return torch.cat(rows)


def fit(dataset, cls: int, config, model) -> dict:
    images = class_images(dataset, cls, minimum=2, what="--init gaussian")
    shape = reduced_shape(dataset.image_shape, config.resolution)
    full = shape == tuple(dataset.image_shape)
    x = torch.from_numpy(flat_pixels(images)).double() if full else downsampled_rows(images, shape)
    del images
    n, d = x.shape
    mean = x.mean(0)
    centred = x - mean
    at = {} if full else {"fit_shape": np.asarray(shape, dtype=np.int64)}
    if n - 1 < d:
        return {"mean": mean.float().numpy(), "factor": (centred / (n - 1) ** 0.5).float().numpy(), "extra_std": np.float32(config.ridge**0.5), **at}
    cov = centred.T @ centred / (n - 1) + config.ridge * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)  # cov = L L^T, so x = mu + z L^T
    return {"mean": mean.float().numpy(), "factor": chol.T.float().numpy(), "extra_std": np.float32(0.0), **at}


def build(dataset, cls: int, config, arrays: dict) -> GaussianInit:
    fit_shape = tuple(arrays["fit_shape"].tolist()) if "fit_shape" in arrays else None
    return GaussianInit(dataset.image_shape, mean=arrays["mean"], factor=arrays["factor"], extra_std=float(arrays["extra_std"]), fit_shape=fit_shape)
