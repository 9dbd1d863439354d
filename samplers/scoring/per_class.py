"""Per-class scores: class-conditional FID and the accuracy of an independent judge.

Class-conditional FID compares the samples generated *for* class k (their
intended labels) with the reference images *of* class k. It is a function of
features and labels only: the features are those of the overall scores
(`samplers.scoring.features`), so there is no second pass over the images,
and the Frechet distance is torch-fidelity's own (`metrics.frechet_distance`).

Judge accuracy asks whether the samples look like their class to a classifier
that did not make them: the fraction of samples the judge assigns to their
intended label, overall and per class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from robustgen.kernel.errors import RobustgenError

MIN_CLASS_SAMPLES = 2  # FID needs a covariance, so at least two images per side


@dataclass(frozen=True)
class ClassScore:
    class_index: int
    class_name: str
    n_samples: int
    n_reference: int | None = None
    fid: float | None = None  # None: not computed (see note)
    judge_accuracy: float | None = None
    note: str | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class JudgeResult:
    checkpoint: str
    sha256: str
    accuracy: float  # fraction of samples classified as their intended label
    n_samples: int
    per_class: dict[int, float] = field(default_factory=dict)  # class index -> accuracy

    def to_dict(self) -> dict:
        return {
            "checkpoint": self.checkpoint,
            "sha256": self.sha256,
            "accuracy": self.accuracy,
            "n_samples": self.n_samples,
            "per_class": {str(k): v for k, v in self.per_class.items()},
        }


def class_fids_from_features(
    *,
    sample_features: torch.Tensor,
    sample_labels: np.ndarray,
    ref_features: torch.Tensor,
    ref_labels: np.ndarray,
    classes: tuple[str, ...],
) -> dict[int, tuple[float | None, int, str | None]]:
    """class index -> (FID or None, n_reference, note), for every class present in the samples."""
    from samplers.scoring.metrics import frechet_distance

    out: dict[int, tuple[float | None, int, str | None]] = {}
    sample_labels_t, ref_labels_t = torch.from_numpy(sample_labels), torch.from_numpy(ref_labels)
    for k in np.unique(sample_labels).tolist():
        mine = sample_features[sample_labels_t == k]
        theirs = ref_features[ref_labels_t == k]
        note = _too_few(len(mine), len(theirs), classes[k])
        out[k] = (None, len(theirs), note) if note else (frechet_distance(mine, theirs), len(theirs), None)
    return out


def _too_few(n_mine: int, n_theirs: int, name: str) -> str | None:
    if n_mine < MIN_CLASS_SAMPLES:
        return f"skipped: only {n_mine} sample{'s' if n_mine != 1 else ''} of class {name} (FID needs >= {MIN_CLASS_SAMPLES})"
    if n_theirs < MIN_CLASS_SAMPLES:
        return f"skipped: only {n_theirs} reference image{'s' if n_theirs != 1 else ''} of class {name} (FID needs >= {MIN_CLASS_SAMPLES})"
    return None


def judge_accuracy(
    model: torch.nn.Module,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    batch_size: int,
    checkpoint: str,
    sha256: str,
) -> JudgeResult:
    """Accuracy of `model` (eval mode, on its device) on uint8 NHWC `images` w.r.t. intended `labels`."""
    from robustgen.kernel.data import to_float

    device = next(model.parameters()).device
    preds = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            x = to_float(images[start : start + batch_size], device)
            preds.append(model(x).argmax(1).cpu())
    pred = torch.cat(preds).numpy()
    correct = pred == labels
    per_class = {int(k): float(correct[labels == k].mean()) for k in np.unique(labels).tolist()}
    return JudgeResult(checkpoint, sha256, float(correct.mean()), len(labels), per_class)


def check_judge(meta: dict, *, image_shape: tuple[int, int, int], labels: np.ndarray, path: str) -> None:
    """The judge must see images shaped like the samples and know every intended class."""
    expected = tuple(int(v) for v in meta.get("input_shape", ()))
    if expected and expected != tuple(image_shape):
        raise RobustgenError(
            f"--judge {path} takes {_shape(expected)} images but the samples are {_shape(image_shape)}: use a judge trained on the samples' dataset"
        )
    n_classes = len(meta.get("classes", ())) or None
    if n_classes is not None and int(labels.max()) >= n_classes:
        raise RobustgenError(
            f"--judge {path} knows {n_classes} classes but the samples carry label {int(labels.max())}: use a judge trained on the samples' dataset"
        )


def _shape(chw) -> str:
    c, h, w = chw
    return f"{h}x{w}x{c}"
