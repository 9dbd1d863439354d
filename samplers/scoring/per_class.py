"""Per-class scores: class-conditional FID and the accuracy of an independent judge.

Class-conditional FID compares the samples generated *for* class k (their
intended labels) with the reference images *of* class k. The features come
from the overall `calculate_metrics` call (torch-fidelity caches them under
keys we choose), and the Frechet distance is torch-fidelity's own, so there is
no second pass over the images; if those features cannot be found, one
`calculate_metrics` call per class does the same work.

Judge accuracy asks whether the samples look like their class to a classifier
that did not make them: the fraction of samples the judge assigns to their
intended label, overall and per class.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from robustgen.errors import RobustgenError

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
    """Class-conditional FID from features already extracted by torch-fidelity in the overall call.

    Same statistics and Frechet distance as calculate_metrics (torch-fidelity's
    fid_features_to_statistics / fid_statistics_to_metric), without a second pass
    over the images.
    """
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    out: dict[int, tuple[float | None, int, str | None]] = {}
    sample_labels_t, ref_labels_t = torch.from_numpy(sample_labels), torch.from_numpy(ref_labels)
    for k in np.unique(sample_labels).tolist():
        mine = sample_features[sample_labels_t == k]
        theirs = ref_features[ref_labels_t == k]
        note = _too_few(len(mine), len(theirs), classes[k])
        if note:
            out[k] = (None, len(theirs), note)
            continue
        fid = fid_statistics_to_metric(fid_features_to_statistics(mine), fid_features_to_statistics(theirs), False)[KEY_METRIC_FID]
        out[k] = (float(fid), len(theirs), None)
    return out


def _too_few(n_mine: int, n_theirs: int, name: str) -> str | None:
    if n_mine < MIN_CLASS_SAMPLES:
        return f"skipped: only {n_mine} sample{'s' if n_mine != 1 else ''} of class {name} (FID needs >= {MIN_CLASS_SAMPLES})"
    if n_theirs < MIN_CLASS_SAMPLES:
        return f"skipped: only {n_theirs} reference image{'s' if n_theirs != 1 else ''} of class {name} (FID needs >= {MIN_CLASS_SAMPLES})"
    return None


def class_fids(
    *,
    sample_images: np.ndarray,
    sample_labels: np.ndarray,
    ref_images: np.ndarray,
    ref_labels: np.ndarray,
    classes: tuple[str, ...],
    make_inputs,
    fidelity_kwargs: dict,
    ref_key_for_class,
) -> dict[int, tuple[float | None, int, str | None]]:
    """Class-conditional FID with one calculate_metrics call per class (fallback: a second pass).

    class index -> (FID or None, n_reference, note), for every class present in the samples.
    `make_inputs(images_nhwc)` builds the torch Dataset torch-fidelity reads;
    `ref_key_for_class(k)` names class k's reference cache entry.
    """
    from torch_fidelity import KEY_METRIC_FID, calculate_metrics

    out: dict[int, tuple[float | None, int, str | None]] = {}
    for k in np.unique(sample_labels).tolist():
        mine = sample_images[sample_labels == k]
        theirs = ref_images[ref_labels == k]
        note = _too_few(len(mine), len(theirs), classes[k])
        if note:
            out[k] = (None, len(theirs), note)
            continue
        metrics = calculate_metrics(
            input1=make_inputs(mine),
            input2=make_inputs(theirs),
            input2_cache_name=ref_key_for_class(k),
            fid=True,
            **fidelity_kwargs,
        )
        out[k] = (float(metrics[KEY_METRIC_FID]), len(theirs), None)
    return out


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
    from robustgen.data import to_float

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
