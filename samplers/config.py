"""Typed, frozen configs for sampling. Units are in the comments.

Pixel values live in [0, 1]; energies are in logit units (E(x, y) = -f(x)[y]).
Defaults were chosen by experiment (experiments/compare_samplers.py and the
notes at the end of this file): local-pca + sgld + adaptive stopping.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from robustgen.data import is_large
from robustgen.errors import RobustgenError

INITS = ("local-pca", "pca", "gaussian", "uniform")
SAMPLERS = ("sgld", "pgd")
ENERGIES = ("joint", "ce", "mix")
STOP_RULES = ("adaptive", "fixed")
NORMS = ("L2", "Linf")
NEIGHBOUR_SPACES = ("auto", "pixel", "features")
SANTURKAR_GRAIN = 4  # gaussian at large sizes: fit at 1/4 of the height and width (224 -> 56), as Santurkar et al.'s code


@dataclass(frozen=True)
class InitConfig:
    """Where each chain starts (x0)."""

    kind: str = "local-pca"  # local-pca | pca | gaussian | uniform
    variance: float = 0.95  # pca / local-pca: fraction of variance the kept components retain, in (0, 1]
    components: int | None = None  # pca / local-pca: keep exactly this many components (overrides variance)
    scale: float = 1.0  # pca / local-pca: sample coefficients in units of each component's std
    k: int = 20  # local-pca: neighbourhood size (images of the class, anchor included)
    neighbour_space: str = "auto"  # local-pca: "pixel", "features" (the model's penultimate features) or "auto": pixels up to 64x64x3 values per image, features above
    ridge: float = 1e-3  # gaussian: added to the covariance diagonal, in pixel-value^2
    resolution: int | None = None  # gaussian: fit at this height in pixels (width alike) and upsample; None = auto: full up to 64x64x3, height/4 above

    def validate(self) -> None:
        _choice("init", self.kind, INITS)
        _choice("neighbour space", self.neighbour_space, NEIGHBOUR_SPACES)
        if not 0 < self.variance <= 1:
            raise RobustgenError(f"--variance {self.variance} must be in (0, 1]: it is the fraction of variance kept")
        if self.components is not None and self.components < 1:
            raise RobustgenError(f"components {self.components} must be at least 1")
        if self.scale < 0:
            raise RobustgenError(f"--scale {self.scale} must be >= 0 (units of each component's std)")
        if self.k < 2:
            raise RobustgenError(f"--k {self.k} must be at least 2: a neighbourhood needs two images to have a direction")
        if self.ridge < 0:
            raise RobustgenError(f"ridge {self.ridge} must be >= 0")
        if self.resolution is not None and self.resolution < 1:
            raise RobustgenError(f"--resolution {self.resolution} must be at least 1 pixel (or omitted: automatic)")

    def resolved(self, image_shape: tuple[int, int, int], *, model_has_features: bool = True) -> InitConfig:
        """The config with its automatic choices made for images of `image_shape` (C, H, W).

        Small images (up to 64x64x3 values: digits, CIFAR, Tiny ImageNet) keep the choices
        measured on CIFAR: pixel neighbours, full-resolution Gaussian (resolution None).
        Larger ones (ImageNet's 224x224x3) search neighbours in the model's penultimate
        features (pixel distances at that size mostly compare backgrounds and colours;
        pixels if the model has no separable features) and fit the Gaussian at
        height/4, Santurkar et al.'s recipe. An explicit resolution is capped at the height.
        """
        large = is_large(image_shape)
        space = self.neighbour_space
        if space == "auto":
            space = "features" if large and model_has_features else "pixel"
        resolution = self.resolution if self.resolution is not None else (max(1, image_shape[1] // SANTURKAR_GRAIN) if large else None)
        if resolution is not None:
            resolution = min(resolution, image_shape[1])
        return replace(self, neighbour_space=space, resolution=resolution)

    def fit_options(self) -> dict:
        """The options that change what is fitted (and so the cache key)."""
        if self.kind == "gaussian":
            return {"ridge": self.ridge, **({"resolution": self.resolution} if self.resolution is not None else {})}
        if self.kind == "pca":
            return {"variance": self.variance, "components": self.components}
        if self.kind == "local-pca":
            return {"k": self.k, "neighbour_space": self.neighbour_space}
        return {}


@dataclass(frozen=True)
class SamplerConfig:
    """How each chain moves: SGLD with momentum, or normalised-gradient PGD."""

    kind: str = "sgld"  # sgld | pgd
    steps: int = 60  # maximum steps per chain (each costs one gradient evaluation)
    step_size: float | None = None  # sgld: eta (pixel change per unit gradient); pgd: pixel length of each step (L2 or Linf). None = default for the kind
    drift: float = 0.01  # sgld with step_size=None: eta is set per chain so the first drift step (eta/2) grad E(x0) moves pixels by this rms (pixel units)
    noise: float = 0.005  # sgld: sigma, std of the Gaussian noise added per step, in pixel units
    momentum: float = 0.5  # sgld: m in v <- m v - (eta/2) grad E
    norm: str = "L2"  # pgd: norm of the normalised step and of the ball around x0
    eps: float | None = None  # pgd: radius of the ball around x0 in pixel units (None = no ball)
    energy: str = "joint"  # joint: E(x, y); ce: E(x, y) - E(x); mix: E(x, y) + marginal_weight * E(x)
    marginal_weight: float = 0.5  # mix only: weight of the marginal energy E(x)

    def validate(self) -> None:
        _choice("sampler", self.kind, SAMPLERS)
        _choice("norm", self.norm, NORMS)
        _choice("energy", self.energy, ENERGIES)
        if self.steps < 0:
            raise RobustgenError(f"--steps {self.steps} must be >= 0")
        if self.step_size is not None and self.step_size < 0:
            raise RobustgenError(f"--step-size {self.step_size} must be >= 0")
        if self.drift <= 0:
            raise RobustgenError(f"drift {self.drift} must be > 0 (pixel units)")
        if self.noise < 0:
            raise RobustgenError(f"--noise {self.noise} must be >= 0 (pixel units)")
        if not 0 <= self.momentum < 1:
            raise RobustgenError(f"--momentum {self.momentum} must be in [0, 1)")
        if self.eps is not None and self.eps <= 0:
            raise RobustgenError(f"--eps {self.eps} must be > 0 (pixel units), or omitted for no ball")

    def resolved_step_size(self, image_dim: int) -> float | None:
        """Default step sizes. SGLD: None = calibrated per chain from its first gradient (see
        `drift`), because raw gradient scales differ ~50x between models (digits vs CIFAR).
        PGD L2 steps are scaled by sqrt(D / 3072) so one setting fits 8x8 digits and CIFAR."""
        if self.step_size is not None:
            return self.step_size
        if self.kind == "sgld":
            return None
        if self.norm == "L2":
            return 0.5 * (image_dim / 3072) ** 0.5
        return 2.0 / 255


@dataclass(frozen=True)
class StopConfig:
    """When a chain stops: `adaptive` (energy band of real data, or no progress) or `fixed` (all steps)."""

    rule: str = "adaptive"  # adaptive | fixed
    quantile: float = 0.2  # stop once E(x, y) <= this quantile of E(x, y) over real training images of the class
    marginal_quantile: float | None = None  # ... and (if set) E(x) <= this quantile of real E(x) of the class
    patience: int = 10  # ... or once the best E(x, y) has not improved by min_delta for this many steps
    min_delta: float = 0.01  # energy units (logits) counted as an improvement

    def validate(self) -> None:
        _choice("stop rule", self.rule, STOP_RULES)
        if not 0 <= self.quantile <= 1:
            raise RobustgenError(f"--quantile {self.quantile} must be in [0, 1]")
        if self.marginal_quantile is not None and not 0 <= self.marginal_quantile <= 1:
            raise RobustgenError(f"--marginal-quantile {self.marginal_quantile} must be in [0, 1]")
        if self.patience < 1:
            raise RobustgenError(f"--patience {self.patience} must be at least 1 step")


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RobustgenError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")


# How the defaults were chosen (2026-11-21; judge = an independently trained non-robust classifier,
# fd = Frechet distance in the judge's penultimate features, 200-500 samples, seed 0):
# - CIFAR-10 subset, robust PreActResNet-18 w16 (fgsm-rs 8/255, 10 epochs), local-pca k=20:
#     fixed 60 SGLD steps over-saturate (drift 0.002/0.005: fd 13.0/22.8, judge acc 0.52/0.49, 60 evals)
#     adaptive, drift 0.01: quantile 0.5 / 0.2 / 0.05 -> judge acc 0.42 / 0.49 / 0.56, fd 1.2 / 2.1 / 4.1,
#     2.4 / 5.1 / 9.8 evals per image (real images: judge acc 0.45). 0.2 gives real-data-level
#     accuracy at a small fd cost; drift 0.002-0.01 changes quality little but cost 12 -> 5 evals.
#     k in {5, 10, 20, 40} and pixel vs feature neighbours: differences within noise (acc 0.43-0.49,
#     fd 2.1-3.3); k=20 pixel had the best fd and needs no feature pass. momentum 0.9 was worse
#     (fd 3.1 vs 2.6), sgld noise 0-0.01 made no measurable difference.
# - digits (robust w16, fgsm-rs+DER 0.3): adaptive keeps fd 0.3-0.6 while fixed 60 steps degrades it
#     to 1.5-10 with any drift >= 0.01 (images saturate); quantile 0.2 / drift 0.01 stops after ~8.5 steps.
