"""Calibrate the chain to the model: which start, step size and chain length this model draws with.

    record = calibrate("runs/x/best.pt", judge="python:resnet20.py:resnet20=w.th", judge_mean=..., judge_std=...)
    record["chosen"]                     # the chain `robustgen sample` then uses for this model by default

How long a chain should run depends on the model: one that draws (the published ResNet-4B)
wants tens of normalised L2 steps; one that cannot draw paints stripes on long chains; on
digits-like data steps can cost realism. So the chain is chosen per model:

- on a held-out part of the *training* split (the reported test split is never looked at):
  the chains start from initialisers fitted on the rest, and are compared with the held-out images;
- by an independent judge (never the sampled model): its accuracy on the samples, and FID,
  precision and recall against the held-out images in its penultimate features;
- by CRITERION, declared here before anything is measured;
- cheaply: each (start, step size) runs ONE fixed-length trajectory whose every frame and energy is
  kept; every fixed length and every adaptive stop (samplers.stopping.stop_now, the rule sampling
  runs) is read off that trajectory, since a chain's path does not depend on when it stops. At most
  MAX_TRAJECTORIES trajectories of `max_steps`: no more than 3 sampling runs of the longest chain.

The choice is written to the toolkit's cache keyed by the model's hash (and beside a robustgen
checkpoint as calibration.json); sampling finds it there (samplers.calibrated).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from robustgen.kernel import distributed
from robustgen.kernel.data import ImageDataset, LazyImageFolder, to_uint8
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import FiniteFields
from samplers.chains import run_queue
from samplers.config import InitConfig, SamplerConfig, StopConfig
from samplers.stopping import stop_now

CRITERION = ("among the finalists (every candidate is screened on `screen` chains; the `finalists` best of those that meet the rules "
             "below, the starts and today's default are judged again on all n): "
             "the lowest judge FID against held-out training images among chains whose judge accuracy is at least init-only's + "
             "min_accuracy_gain, whose recall is at least init-only's, whose near-copies stay at most max_near_copies, and whose own "
             "start (0 steps) is judged at most max_start_gain more accurate than init-only's; if none qualifies, today's default, "
             "or init-only itself where the default's FID is worse than init-only's (a model that cannot draw)")
MAX_TRAJECTORIES = 3  # local-pca at the first step size, then the seeds at each blur, then local-pca at the other step sizes: the first 3
DEFAULT_NAME = "default"
INIT_ONLY_NAME = "init-only"


@dataclass(frozen=True)
class CalibrationConfig(FiniteFields):
    """What calibration tries and how it judges. Steps are L2 pixel lengths at 32x32x3 (scaled by sqrt(D/3072))."""

    held_out: float = 0.2  # fraction of each class's training images held out as the reference
    max_held_out: int = 1000  # images held out at most, over all classes
    max_steps: int = 40  # longest chain considered (gradient evaluations per image)
    step_sizes: tuple[float, ...] = (0.5,)  # L2 step lengths tried from today's local-pca start, one trajectory each (0.2: never chosen, notes below)
    seed_step_size: float = 0.5  # L2 step length from --init images:SPEC seeds (0.2 and 1.0 measured: no better, notes below)
    seed_blurs: tuple[float, ...] = (1.0,)  # start blurs tried on the seeds (InitConfig.blur: pixels per 32 of height), one trajectory each
    fixed_steps: tuple[int, ...] = (5, 10, 15, 20, 25, 30, 40)  # fixed chain lengths read off each trajectory
    quantiles: tuple[float, ...] = (0.05, 0.01, 0.002)  # adaptive stops read off each trajectory (at most max_steps)
    min_accuracy_gain: float = 0.02  # the chain must beat init-only's judge accuracy by this much
    max_near_copies: float = 0.02  # fraction of samples closer to a training image than 99% of held-out images are (2x real data's 1%)
    max_start_gain: float = 0.05  # the chain's own start may be judged at most this much more accurate than init-only's
    screen: int = 200  # chains every candidate is first judged on (a seeded, class-balanced subset; the judge is the dear part)
    finalists: int = 3  # best screened chains judged again on all n, with the starts and today's default; the choice is among them

    def validate(self) -> None:
        if not 0 < self.held_out < 1:
            raise RobustgenError(f"--held-out {self.held_out} must be in (0, 1): the fraction of the training split held out")
        if self.max_steps < 1 or any(s < 1 for s in self.fixed_steps):
            raise RobustgenError(f"--max-steps {self.max_steps} must be at least 1")
        if any(s <= 0 for s in (*self.step_sizes, self.seed_step_size)) or not self.step_sizes:
            raise RobustgenError("step sizes must be > 0 (L2 pixel lengths), and local-pca needs at least one")
        if self.screen < 10 or self.finalists < 1:
            raise RobustgenError("calibration screens on at least 10 chains and keeps at least 1 finalist")
        if any(b < 0 for b in self.seed_blurs):
            raise RobustgenError("seed blurs must be >= 0 (pixels per 32 of image height)")


@dataclass(frozen=True)
class Trajectory:
    """One fixed-length run of n chains: every frame and its energies."""

    init: InitConfig
    sampler: SamplerConfig
    frames: np.ndarray  # (T + 1, n, H, W, C) uint8: x_t of every chain
    energy_joint: np.ndarray  # (T + 1, n) E(x_t, y)
    energy_marginal: np.ndarray  # (T + 1, n) E(x_t)
    labels: np.ndarray  # (n,)
    seconds: float


def split_held_out(data: ImageDataset, config: CalibrationConfig, *, seed: int = 0) -> ImageDataset:
    """The training split cut in two, per class and at random: `x_train` what the chains' starts are fitted on,
    `x_test` the held-out reference. The dataset's own test split is dropped: calibration never sees it."""
    if isinstance(data, LazyImageFolder):
        raise RobustgenError(f"{data.name}: calibration holds its training split in memory (images up to 64x64): use a smaller dataset")
    rng = np.random.default_rng(seed)
    share = min(config.held_out, config.max_held_out / max(1, len(data.y_train)))
    held = np.zeros(len(data.y_train), dtype=bool)
    for c in range(data.num_classes):
        rows = np.flatnonzero(data.y_train == c)
        take = int(round(share * len(rows)))
        if len(rows) - take < 2 or take < 1:
            raise RobustgenError(f"class {data.classes[c]} has {len(rows)} training images: calibration needs at least 3 per class")
        held[rng.choice(rows, take, replace=False)] = True
    return ImageDataset(f"{data.name} (calibration: training split minus held-out)", data.x_train[~held], data.y_train[~held],
                        data.x_train[held], data.y_train[held], data.classes, crop_padding=data.crop_padding, flip=data.flip)


def record_trajectory(model, data: ImageDataset, init: InitConfig, sampler: SamplerConfig, *, n: int, seed: int, cache_dir, model_hash: str,
                      batch_size: int = 250, progress: bool = True) -> Trajectory:
    """Run n chains (all classes, balanced) for `sampler.steps` fixed steps, keeping every frame and its energies."""
    from tqdm.auto import tqdm

    from samplers.sampling import ChainSource, balanced_labels, prepare_chains

    t0, steps = time.perf_counter(), sampler.steps
    labels = balanced_labels(list(range(data.num_classes)), n)
    frames = np.zeros((steps + 1, n, *data.x_train.shape[1:]), dtype=np.uint8)
    energies = np.zeros((2, steps + 1, n), dtype=np.float32)
    device = next(model.parameters()).device
    inits, thresholds = prepare_chains(model, data, sorted(set(labels.tolist())), init, StopConfig(rule="fixed"), distributed.for_device(device),
                                 cache_dir=cache_dir, fingerprint=data.fingerprint(), model_hash=model_hash)

    desc = f"calibrating {init.label()} step {sampler.resolved_step_size(int(np.prod(data.image_shape))):.3g}"
    with tqdm(total=n * (steps + 1), desc=desc, unit="img-step", disable=not progress) as bar:
        def observe(chains, e_joint, e_marginal) -> None:  # every chain at every step, and at its end: frame and energies
            t, ids = chains.steps.cpu().numpy(), chains.ids.cpu().numpy()
            frames[t, ids] = to_uint8(chains.x)
            energies[:, t, ids] = torch.stack([e_joint, e_marginal]).float().cpu().numpy()
            bar.update(len(chains))

        source = ChainSource(list(range(n)), labels, inits, thresholds, seed=seed, device=device)
        run_queue(model, source, sampler=sampler, stop=StopConfig(rule="fixed"), batch_size=batch_size, refill=True, on_finish=observe,
                  observe=observe)
    return Trajectory(init, sampler, frames, energies[0], energies[1], labels, time.perf_counter() - t0)


def stop_step(trajectory: Trajectory, stop: StopConfig, thresholds: np.ndarray, max_steps: int) -> np.ndarray:
    """(n,) the step at which each chain of `trajectory` stops under `stop` with at most `max_steps` steps:
    the first t < max_steps where samplers.stopping.stop_now says stop, else max_steps."""
    n = trajectory.frames.shape[1]
    limits = torch.as_tensor(thresholds, dtype=torch.float32)
    best, since = torch.full((n,), float("inf")), torch.zeros(n, dtype=torch.long)
    stopped_at = torch.full((n,), max_steps, dtype=torch.long)
    for t in range(max_steps):
        stopping, best, since = stop_now(torch.as_tensor(trajectory.energy_joint[t]), torch.as_tensor(trajectory.energy_marginal[t]),
                                         limits, best, since, stop)
        first = stopping & (stopped_at == max_steps)
        stopped_at[first] = t
    return stopped_at.numpy()


# --------------------------------------------------------------------------- the judge


@dataclass(frozen=True)
class Judge:
    """An independent classifier's view of images: penultimate features (FID, precision/recall) and predictions."""

    network: torch.nn.Module
    extractor: object  # samplers.scoring.extractors.Extractor
    device: torch.device

    def view(self, images: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        from samplers.scoring.extractors import CLASSIFIER_FEATURES, CLASSIFIER_LOGITS
        from samplers.scoring.features import extract_features

        out = extract_features(self.network, images, channels=self.extractor.channels, batch_size=250, device=self.device)
        return out[CLASSIFIER_FEATURES], out[CLASSIFIER_LOGITS].argmax(1).numpy()


def load_judge_view(judge, *, data: str, input_shape, device: torch.device, model_sha256: str) -> Judge:
    """The judge (any classifier spec; a ModelSpec carries --judge-mean/--judge-std) as a torch-fidelity extractor."""
    from samplers.scoring.extractors import CLASSIFIER_FEATURES, CLASSIFIER_LOGITS, resolve_extractor
    from samplers.scoring.features import build_network

    extractor = resolve_extractor(judge, data=data, input_shape=tuple(input_shape))
    if extractor.checkpoint_sha256 == model_sha256:
        raise RobustgenError("--judge is the model being calibrated: a model cannot judge its own samples; pass an independent classifier")
    network = build_network(extractor, layers=[CLASSIFIER_FEATURES, CLASSIFIER_LOGITS], device=device)
    return Judge(network, extractor, device)


@dataclass(frozen=True)
class CopyCheck:
    """Near-copies in pixels, as scoring measures them: closer to a (fit-part) training image than the
    NEAR_COPY_PERCENTILE of held-out images are."""

    train: object  # samplers.scoring.memorisation.Vectors of the fit part
    threshold: float

    @classmethod
    def fit(cls, data: ImageDataset, device: torch.device) -> "CopyCheck":
        from samplers.scoring.memorisation import NEAR_COPY_PERCENTILE, nearest_neighbours, pixel_vectors

        train = pixel_vectors(data.x_train)
        held, _ = nearest_neighbours(pixel_vectors(data.x_test), train, device=device)
        return cls(train, float(np.percentile(held, NEAR_COPY_PERCENTILE)))

    def fraction(self, images: np.ndarray, device: torch.device) -> float:
        from samplers.scoring.memorisation import nearest_neighbours, pixel_vectors

        distance, _ = nearest_neighbours(pixel_vectors(images), self.train, device=device)
        return float((distance < self.threshold).mean())


def judged_metrics(judge: Judge, images: np.ndarray, labels: np.ndarray, reference: torch.Tensor) -> dict[str, float]:
    """Judge accuracy, and FID / precision / recall against the held-out reference features."""
    from samplers.scoring import result as keys
    from samplers.scoring.metrics import MetricSettings, frechet_distance, precision_recall

    features, predictions = judge.view(images)
    prc = precision_recall(features, reference, MetricSettings())
    return {keys.KEY_JUDGE_ACCURACY: float((predictions == labels).mean()), keys.KEY_FID: frechet_distance(features, reference),
            keys.KEY_PRECISION: float(prc["precision"]), keys.KEY_RECALL: float(prc["recall"])}


# How the candidate grid was chosen (issue 26, 2026-12-07; judge: the third-party standard ResNet-20, never the sampled model;
# ResNet-4B with its published normalisation; numbers on the held-out 20% of the CIFAR subset's training split, n=300 or 1000,
# acc / FID / recall; init-only (local-pca) 0.62 / 15.5 / 0.23 at n=300, 0.56 / 15.6 / 0.14 at n=1000):
# - local-pca, L2 step 0.2 never beat 0.5 at equal path length (40 x 0.2: 0.950 / 5.53 / 0.292; 15 x 0.5: 0.950 / 5.69 / 0.317);
#   it was never chosen on any model of the table (README section 1), so it was dropped to save a trajectory.
# - real-image seeds (Tiny-ImageNet val, 10k JPEGs at 32 px): step 0.5 beat 0.2 (40 steps: 0.887 / 5.57 / 0.41 against
#   0.747 / 5.41 / 0.51) and 1.0 (20 steps: 0.863 / 5.61 / 0.46; longer chains lost realism); the class-margin energy (ce) was
#   worse (0.83 / 7.48 / 0.38 at 30 steps). A low-pass of the seeds (blur 1 px per 32) let the model overwrite their content:
#   40 steps 0.915 / 4.02 / 0.32 (n=1000) against 0.892 / 4.91 / 0.34 unblurred; blur 2 was worse (0.901 / 4.40 / 0.28).
# - local-pca with k=15 (starts closer to single images) reached 0.943 / 4.61 / 0.31 at 20 steps, but its start alone is judged
#   0.645, +0.084 above init-only: the start rule (max_start_gain) refuses it, as it should. scale 3 was worse everywhere.
