"""`gaussian`: class-conditional Gaussian, full covariance plus a ridge (Santurkar et al. 2019).

x0 ~ N(mu_c, Sigma_c + ridge I). Sampling needs a factor F with F^T F = Sigma_c:
with more images than pixels that is the Cholesky factor (D x D); with fewer
(CIFAR: ~500 images, 3072 pixels) the centred data / sqrt(n - 1) is an exact,
much smaller factor, and the ridge is added as independent isotropic noise.
Both give exactly the same distribution.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from samplers.initializers.base import Initializer, class_pixels


class GaussianInit(Initializer):
    kind = "gaussian"

    def __init__(self, image_shape, *, mean: np.ndarray, factor: np.ndarray, extra_std: float):
        super().__init__(image_shape)
        self.mean = torch.as_tensor(mean, dtype=torch.float32)
        self.factor = torch.as_tensor(factor, dtype=torch.float32)  # (r, D), F^T F = covariance (minus the extra noise)
        self.extra_std = float(extra_std)  # std of the isotropic ridge noise not already inside `factor`

    def _draw(self, generators) -> Tensor:
        z = torch.stack([torch.randn(self.factor.shape[0], generator=g) for g in generators])
        x = self.mean + z @ self.factor
        if self.extra_std > 0:
            x = x + self.extra_std * torch.stack([torch.randn(self.mean.numel(), generator=g) for g in generators])
        return self._images(x)


def fit(dataset, cls: int, config, model) -> dict:
    x = torch.from_numpy(class_pixels(dataset, cls, minimum=2, what="--init gaussian")).double()
    n, d = x.shape
    mean = x.mean(0)
    centred = x - mean
    if n - 1 < d:
        return {"mean": mean.float().numpy(), "factor": (centred / (n - 1) ** 0.5).float().numpy(), "extra_std": np.float32(config.ridge**0.5)}
    cov = centred.T @ centred / (n - 1) + config.ridge * torch.eye(d, dtype=torch.float64)
    chol = torch.linalg.cholesky(cov)  # cov = L L^T, so x = mu + z L^T
    return {"mean": mean.float().numpy(), "factor": chol.T.float().numpy(), "extra_std": np.float32(0.0)}


def build(dataset, cls: int, config, arrays: dict) -> GaussianInit:
    return GaussianInit(dataset.image_shape, mean=arrays["mean"], factor=arrays["factor"], extra_std=float(arrays["extra_std"]))
