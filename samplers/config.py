"""Typed, frozen configs for sampling. Units are in the comments.

Pixel values live in [0, 1]; energies are in logit units (E(x, y) = -f(x)[y]).
Defaults were chosen by experiment against independent judges (experiments/tune_generation.py and
the notes at the end of this file): local-pca start, normalised L2 PGD steps, adaptive stop at the
0.05 quantile of real data's class energy, at most 8 steps.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from robustgen.kernel.data import is_large
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import FiniteFields
from robustgen.kernel.threat import NORMS, check_norm

INITS = ("local-pca", "pca", "gaussian", "uniform", "images")
IMAGES_PREFIX = "images:"  # --init images:SPEC: real images of the dataset SPEC as seeds
SAMPLERS = ("pgd", "sgld")
ENERGIES = ("joint", "ce", "mix")
STOP_RULES = ("adaptive", "fixed")
NEIGHBOUR_SPACES = ("auto", "pixel", "features")
SANTURKAR_GRAIN = 4  # gaussian at large sizes: fit at 1/4 of the height and width (224 -> 56), as Santurkar et al.'s code


@dataclass(frozen=True)
class InitConfig(FiniteFields):
    """Where each chain starts (x0)."""

    kind: str = "local-pca"  # local-pca | pca | gaussian | uniform | images
    source: str | None = None  # images: dataset spec of the seed images (npz:, folder: of class folders or flat, tiny-imagenet, ...; SPEC@test: one split)
    variance: float = 0.95  # pca / local-pca: fraction of variance the kept components retain, in (0, 1]
    components: int | None = None  # pca / local-pca: keep exactly this many components (overrides variance)
    scale: float = 2.0  # pca / local-pca: sample coefficients in units of each component's std
    k: int = 50  # local-pca: neighbourhood size (images of the class, anchor included)
    neighbour_space: str = "auto"  # local-pca: "pixel", "features" (the model's penultimate features) or "auto": pixels up to 64x64x3 values per image, features above
    ridge: float = 1e-3  # gaussian: added to the covariance diagonal, in pixel-value^2
    resolution: int | None = None  # gaussian: fit at this height in pixels (width alike) and upsample; None = auto: full up to 64x64x3, height/4 above
    blur: float = 0.0  # std of a Gaussian low-pass applied to every start, in pixels per 32 pixels of image height (0 = off)

    @classmethod
    def parse_kind(cls, value: str) -> dict:
        """`--init` as typed: "local-pca" -> {"kind": "local-pca"}; "images:SPEC" -> {"kind": "images", "source": "SPEC"}."""
        if value.startswith(IMAGES_PREFIX):
            return {"kind": "images", "source": value[len(IMAGES_PREFIX):]}
        return {"kind": value}

    def label(self) -> str:
        """The init as `--init` takes it."""
        return f"{IMAGES_PREFIX}{self.source}" if self.kind == "images" else self.kind

    def validate(self) -> None:
        _choice("init", self.kind, INITS)
        if self.kind == "images" and not self.source:
            raise RobustgenError("--init images needs a dataset of seed images: --init images:SPEC (e.g. images:folder:DIR or images:npz:PATH@test)")
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
        if self.blur < 0:
            raise RobustgenError(f"--blur {self.blur} must be >= 0 (pixels per 32 of image height)")
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

    def blur_sigma(self, height: int) -> float:
        """The start's low-pass std in pixels for images `height` pixels high."""
        return self.blur * height / 32

    def fit_options(self) -> dict:
        """The options that change what is fitted (and so the cache key)."""
        if self.kind == "gaussian":
            return {"ridge": self.ridge, **({"resolution": self.resolution} if self.resolution is not None else {})}
        if self.kind == "pca":
            return {"variance": self.variance, "components": self.components}
        if self.kind == "local-pca":
            return {"k": self.k, "neighbour_space": self.neighbour_space}
        if self.kind == "images":
            return {"source": self.source}
        return {}


@dataclass(frozen=True)
class SamplerConfig(FiniteFields):
    """How each chain moves: SGLD with momentum, or normalised-gradient PGD."""

    kind: str = "pgd"  # pgd | sgld
    steps: int = 8  # maximum steps per chain (each costs one gradient evaluation)
    step_size: float | None = None  # sgld: eta (pixel change per unit gradient); pgd: pixel length of each step (L2 or Linf). None = default for the kind
    drift: float = 0.02  # sgld with step_size=None: eta is set per chain so the first drift step (eta/2) grad E(x0) moves pixels by this rms (pixel units)
    noise: float = 0.005  # sgld: sigma, std of the Gaussian noise added per step, in pixel units
    momentum: float = 0.5  # sgld: m in v <- m v - (eta/2) grad E
    norm: str = "L2"  # pgd: norm of the normalised step and of the ball around x0
    eps: float | None = None  # pgd: radius of the ball around x0 in pixel units (None = no ball)
    energy: str = "joint"  # joint: E(x, y); ce: E(x, y) - E(x); mix: E(x, y) + marginal_weight * E(x)
    marginal_weight: float = 0.5  # mix only: weight of the marginal energy E(x)
    smooth: float = 0.0  # std of a Gaussian low-pass of the gradient, in pixels per 32 pixels of image height (0 = off)
    spectrum: float = 0.0  # scale each spatial frequency of the gradient by the training images' amplitude spectrum to this power (0 = off)
    jitter: float = 0.0  # read the gradient at x shifted by up to this many pixels per 32 of height, drawn per chain and step (0 = off)
    flip: bool = False  # read the gradient at a randomly mirrored x (half the steps), drawn per chain and step

    def validate(self) -> None:
        _choice("sampler", self.kind, SAMPLERS)
        check_norm(self.norm)
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
        if self.smooth < 0 or self.jitter < 0:
            raise RobustgenError(f"--smooth {self.smooth} and --jitter {self.jitter} must be >= 0 (pixels per 32 of image height)")
        if self.spectrum < 0:
            raise RobustgenError(f"--spectrum {self.spectrum} must be >= 0: it is a power of the data's amplitude spectrum (0 = plain gradient)")
        if self.eps is not None and self.eps <= 0:
            raise RobustgenError(f"--eps {self.eps} must be > 0 (pixel units), or omitted for no ball")

    def smooth_sigma(self, height: int) -> float:
        """The gradient low-pass std in pixels for images `height` pixels high."""
        return self.smooth * height / 32

    def jitter_pixels(self, height: int) -> int:
        """The largest gradient-read shift in whole pixels for images `height` pixels high."""
        return int(round(self.jitter * height / 32))

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
class StopConfig(FiniteFields):
    """When a chain stops: `adaptive` (energy band of real data, or no progress) or `fixed` (all steps)."""

    rule: str = "adaptive"  # adaptive | fixed
    quantile: float = 0.05  # stop once E(x, y) <= this quantile of E(x, y) over real training images of the class
    marginal_quantile: float | None = None  # ... and (if set) E(x) <= this quantile of real E(x) of the class
    patience: int = 10  # ... or once the best E(x, y) has not improved by min_delta for this many steps
    min_delta: float = 0.01  # energy units (logits) counted as an improvement

    def validate(self) -> None:
        _choice("stop rule", self.rule, STOP_RULES)
        if not 0 <= self.quantile <= 1:
            raise RobustgenError(f"--quantile {self.quantile} must be in [0, 1]: it is a quantile of real images' class energy (0.05 = the default)")
        if self.marginal_quantile is not None and not 0 <= self.marginal_quantile <= 1:
            raise RobustgenError(f"--marginal-quantile {self.marginal_quantile} must be in [0, 1]: it is a quantile of real images' marginal energy")
        if self.patience < 1:
            raise RobustgenError(f"--patience {self.patience} must be at least 1 step")


@dataclass(frozen=True)
class RunOptions(FiniteFields):
    """How a sampling run executes, for every door (sample, sample_from_checkpoint, compare, sweep, strength, demo, CLI).

    The images depend on n, seed and precision only: batch size, refill, the number of ranks and
    interruptions leave them bit for bit the same (compile: the same to rounding).
    """

    n: int = 1000  # images in all, balanced over the classes (1,000: the fewest that FID and recall are read at here)
    seed: int = 0  # chain i draws all its randomness from (seed, i)
    batch_size: int = 250  # chains on the device at once
    refill: bool = True  # continuous batching: new chains take the slots of stopped ones
    precision: str = "auto"  # auto (bf16 where the hardware runs it natively: CUDA, AVX512-BF16/AMX CPUs, else fp32) | fp32 | bf16
    compile: str = "off"  # off | on | auto (torch.compile the chains' model for long runs)
    device: str = "auto"  # auto (cuda:LOCAL_RANK under torchrun, else cuda, mps or cpu) | cpu | cuda | cuda:N

    def validate(self) -> None:
        from robustgen.kernel.device import COMPILE_MODES, PRECISIONS

        if self.n < 1:
            raise RobustgenError(f"--num-images {self.n}: ask for at least 1 image")
        if self.batch_size < 1:
            raise RobustgenError(f"--batch-size {self.batch_size} must be at least 1")
        _choice("precision", self.precision, ("auto", *PRECISIONS))
        _choice("compile mode", self.compile, COMPILE_MODES)


def _choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise RobustgenError(f"unknown {what} {value!r}: choose one of {', '.join(allowed)}")


# How the defaults were chosen (2026-11-22, issue 8; runs/tune and experiments/score_samplers.py). Judge and
# feature extractor: independently trained *standard* classifiers (digits w16 99.4%, CIFAR-subset w32 71.7% test
# accuracy), never the sampled model; 1,000 samples, seed 0; FID / precision / recall against the *test* split;
# near-copies = samples closer to a training image than 99% of real test images are.
# - The previous default (local-pca k=20, scale 1, SGLD, adaptive) copied its training images: CIFAR near-copies
#   8.5% (nearest-train ratio 0.76) and on digits it was worse than its own start (FID test 0.63 vs 0.37).
# - Starts further from any training image: k=50 and scale 2 (k=30..100, scale 1..2 measured) give 0.0% near-copies
#   and ratios 1.25 (CIFAR) / 1.26 (digits); scale 1-1.5 kept 0.6-3% near-copies on CIFAR.
# - From that start, on CIFAR: SGLD (drift 0.01-0.05, noise 0-0.005, momentum 0-0.9, quantile 0.05-0.35, energies
#   joint/ce/mix, an E(x) band) improves FID and judge accuracy but never beats the start's precision
#   (0.813-0.836 vs 0.835); normalised L2 PGD steps with the same adaptive stop do: FID 3.90 -> 3.53, judge
#   0.514 -> 0.602, precision 0.835 -> 0.842, recall 0.474 -> 0.480, 6.7 gradient evaluations per image. Fixed
#   SGLD runs of 5-12 steps reach better FID (2.98-3.10) and judge accuracy (0.67-0.71) on CIFAR but cost recall
#   (0.36-0.40) and, on digits, every quality measure (fixed 8: FID 1.31 vs adaptive PGD 0.84).
# - digits, PGD from the same start: FID 1.38 -> 0.84, judge 0.951 -> 0.988, precision 0.848 -> 0.874, 7.7 evals.
#
# Issue 17 (2026-11-29; experiments/tune_generation.py, runs/tune/*.jsonl). Tuned on one model, the CIFAR-subset
# `--preset generation` model (L2 PGD-5 eps 0.5, w16, 15 epochs: clean 0.561, PGD-5 0.443), checked on digits, then
# reported on every other dataset/model (experiments/generation_table.py). Judges: the third-party ResNet-20 (91.6% on
# the subset's test split) and a weaker own standard w16 CNN (66.6%); n=300, seed 0, FID/recall vs the test split.
#   init only:                          ResNet-20 acc 0.520 FID 15.08 recall 0.149 | w16 FID 1.90 | 0 evals
#   previous default (q 0.2, 20 steps): ResNet-20 acc 0.697 FID 12.01 (0.80x) recall 0.191 | w16 FID 1.30 | 6.6 evals
#   q 0.05, 20 steps:                   ResNet-20 acc 0.723 FID 10.85 (0.72x) recall 0.159 | w16 FID 1.95 (1.03x: texture) | 10.2 evals
#   q 0.05, 8 steps (the default):      ResNet-20 acc 0.710 FID 11.47 (0.76x) recall 0.183 | w16 FID 1.56 (0.82x) | 6.9 evals
#   + spectrum 0.5 / 1 (preconditioned reads, 8-10 steps): acc 0.713 / 0.710, FID 0.80x / 0.82x, w16 0.77x / 0.80x: no better
#   fixed 20 steps (n=500): acc 0.776 but w16 FID 3.7x init (class texture); gradient low-pass (smooth 2-4), shifted/flipped
#   reads, a high-pass, blurred starts and a ball around the start traded strong-judge FID for weak-judge FID, never both.
# digits (robust --der model; judges: own standard w16 and a weak w4): init acc 0.950 FID 1.48 | weak FID 0.347;
#   default acc 0.984 FID 0.675 recall 0.908 | weak FID 0.303; previous default 0.992 / 0.687 / weak 0.278.
# The strong judge's accuracy stays near 0.71: the model, not the sampler, is the limit (its classifier-only samples
# reach 0.70 with this judge).
