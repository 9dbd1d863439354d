"""How a chain reads the model's gradient: plain, preconditioned, low-passed, or under a random small transformation.

A robust classifier's input gradient carries class evidence at every spatial frequency. The
high frequencies make class *texture* that a classifier rewards and people (and other
classifiers' features) do not; the remedies from feature visualisation are here:

    precondition(grad, spectrum, power=0.5)   every spatial frequency scaled by the training images'
                                              amplitude spectrum ** power (`--spectrum`, off by default):
                                              steps vary images the way the data varies
    low_pass(grad, sigma=1.0)                 Gaussian low-pass of the gradient (sigma in pixels)
    shifted / flipped reads                   the gradient at a randomly shifted or mirrored copy of x,
                                              mapped back: only evidence that survives the transformation adds up

Each chain draws its own shifts and flips from its own generator, so a chain's path does not
depend on the batch it runs in.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def gaussian_kernel(sigma: float, *, dtype=torch.float32, device=None) -> Tensor:
    """1-D normalised Gaussian taps for std `sigma` pixels (radius ceil(2 sigma))."""
    radius = max(1, math.ceil(2 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    taps = torch.exp(-0.5 * (t / sigma) ** 2)
    return taps / taps.sum()


def low_pass(images: Tensor, *, sigma: float) -> Tensor:
    """Separable Gaussian blur of NCHW `images` (or gradients) with std `sigma` pixels (reflect padding); sigma <= 0: unchanged.

    Computed in float64, whose convolution does not change its last bits with the batch size (a
    chain's result must not depend on the chains beside it), and returned in the input's dtype.
    """
    if sigma <= 0:
        return images
    grad = images.double()
    channels = grad.shape[1]
    taps = gaussian_kernel(sigma, dtype=grad.dtype, device=grad.device)
    radius = (len(taps) - 1) // 2
    height, width = grad.shape[-2:]
    pad_h, pad_w = min(radius, height - 1), min(radius, width - 1)  # reflect padding needs pad < size
    out = grad
    if pad_w > 0:
        row = taps[radius - pad_w : radius + pad_w + 1].view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
        out = F.conv2d(F.pad(out, (pad_w, pad_w, 0, 0), mode="reflect"), row, groups=channels)
    if pad_h > 0:
        col = taps[radius - pad_h : radius + pad_h + 1].view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
        out = F.conv2d(F.pad(out, (0, 0, pad_h, pad_h), mode="reflect"), col, groups=channels)
    return out.to(images.dtype)


def draw_transforms(generators, *, jitter: int, flip: bool, device) -> tuple[Tensor, Tensor]:
    """Per chain: (shift (B, 2) whole pixels in [-jitter, jitter], flip (B,) bool), from each chain's generator."""
    shifts, flips = [], []
    for g in generators:
        shifts.append(torch.randint(-jitter, jitter + 1, (2,), generator=g, device=device) if jitter > 0 else torch.zeros(2, dtype=torch.long, device=device))
        flips.append(torch.rand((), generator=g, device=device) < 0.5 if flip else torch.zeros((), dtype=torch.bool, device=device))
    return torch.stack(shifts), torch.stack(flips)


def apply_transforms(x: Tensor, shifts: Tensor, flips: Tensor, *, inverse: bool = False) -> Tensor:
    """Circularly shift each image by its (dy, dx) and mirror it where `flips`; `inverse` undoes it."""
    out = []
    sign = -1 if inverse else 1
    for image, (dy, dx), mirrored in zip(x, shifts.tolist(), flips.tolist()):
        if inverse and mirrored:
            image = image.flip(-1)
        if dy or dx:
            image = torch.roll(image, shifts=(sign * dy, sign * dx), dims=(-2, -1))
        if not inverse and mirrored:
            image = image.flip(-1)
        out.append(image)
    return torch.stack(out)


def amplitude_spectrum(images, *, batch: int = 512) -> Tensor:
    """Mean amplitude |FFT2| of uint8 NHWC images, mean-centred per image, over images and channels: (H, W // 2 + 1), max 1."""
    total = None
    for start in range(0, len(images), batch):
        x = torch.from_numpy(np.ascontiguousarray(images[start : start + batch])).double().permute(0, 3, 1, 2) / 255.0
        x = x - x.mean(dim=(-2, -1), keepdim=True)
        amplitude = torch.fft.rfft2(x).abs().sum(dim=(0, 1))
        total = amplitude if total is None else total + amplitude
    total[0, 0] = total.flatten()[1:].max()  # the mean was removed: give DC the largest non-DC amplitude
    return (total / total.max()).float()


SPECTRUM_IMAGES_PER_CLASS = 500  # enough for a stable mean spectrum; bounds the cost on large datasets


def dataset_spectrum(dataset) -> Tensor:
    """The amplitude spectrum of the dataset's training images (at most SPECTRUM_IMAGES_PER_CLASS per class, all
    classes): one prior for every class and chain, so a chain's image does not depend on which classes run beside it."""
    return amplitude_spectrum(np.concatenate([dataset.class_images(c, "train")[:SPECTRUM_IMAGES_PER_CLASS] for c in range(dataset.num_classes)]))


def gradient_prior(dataset, sampler) -> Tensor | None:
    """The spectrum `precondition` needs for `sampler`, or None when its steps read the plain gradient."""
    return dataset_spectrum(dataset) if sampler.spectrum > 0 and sampler.steps > 0 else None


def precondition(grad: Tensor, spectrum: Tensor, *, power: float) -> Tensor:
    """The gradient with every spatial frequency scaled by spectrum ** power (the data's own amplitude spectrum):
    steps then change images the way natural images of the dataset vary (the feature-visualisation recipe)."""
    if power <= 0:
        return grad
    weights = spectrum.to(device=grad.device, dtype=torch.float64) ** power
    shaped = torch.fft.irfft2(torch.fft.rfft2(grad.double()) * weights, s=grad.shape[-2:])
    return shaped.to(grad.dtype)
