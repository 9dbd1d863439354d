"""What a score is: result keys (like torch-fidelity's KEY_METRIC_*), defaults, and `ScoreResult`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from robustgen.kernel.errors import RobustgenError
from samplers.scoring.extractors import Extractor
from samplers.scoring.memorisation import MemorisationResult
from samplers.scoring.per_class import ClassScore, JudgeResult

# Result keys (like torch-fidelity's KEY_METRIC_*), the names in ScoreResult.metrics and score.json.
KEY_IS_MEAN = "is_mean"
KEY_IS_STD = "is_std"
KEY_FID = "fid"
KEY_KID_MEAN = "kid_mean"
KEY_KID_STD = "kid_std"
KEY_PRECISION = "precision"
KEY_RECALL = "recall"
KEY_F_SCORE = "f_score"
KEY_JUDGE_ACCURACY = "judge_accuracy"
KEY_CLASS_FID_MEAN = "class_fid_mean"  # mean of the class-conditional FIDs that could be computed
KEY_FID_TEST = "fid_test"  # FID against the reference dataset's test split (KEY_FID: its --ref-split, train by default)
KEY_PRECISION_TEST = "precision_test"  # precision / recall against the test split (KEY_PRECISION / KEY_RECALL: against --ref-split)
KEY_RECALL_TEST = "recall_test"
# Memorisation (samplers.scoring.memorisation): nearest-training-image distances against those of real test images.
KEY_NN_RATIO_PIXEL = "nn_ratio_pixel"  # median sample NN distance / median test NN distance, [0, 1] pixels
KEY_NN_RATIO_FEATURES = "nn_ratio_features"  # the same in the extractor's FID features
KEY_NEAR_COPY_FRACTION_PIXEL = "near_copy_fraction_pixel"  # samples closer than the 1st percentile of test images
KEY_NEAR_COPY_FRACTION_FEATURES = "near_copy_fraction_features"
KEY_DATA_COPYING_PIXEL = "data_copying_ct_pixel"  # C_T of Meehan et al. 2020 (<< 0 copying, >> 0 underfitting)
KEY_DATA_COPYING_FEATURES = "data_copying_ct_features"
MEMORISATION_KEYS = {  # space -> (ratio, near-copy fraction, C_T)
    "pixels": (KEY_NN_RATIO_PIXEL, KEY_NEAR_COPY_FRACTION_PIXEL, KEY_DATA_COPYING_PIXEL),
    "features": (KEY_NN_RATIO_FEATURES, KEY_NEAR_COPY_FRACTION_FEATURES, KEY_DATA_COPYING_FEATURES),
}

METRICS = ("is", "fid", "kid", "prc")  # what users ask for
DEFAULT_METRICS = ("is", "fid")
SCORE_FILE = "score.json"
MEMORISATION_FILE = "memorisation.npz"  # beside score.json: per-sample NN distances/indices and the closest pairs' pixels

_FIDELITY_KEYS = {  # torch-fidelity key -> ours
    "inception_score_mean": KEY_IS_MEAN,
    "inception_score_std": KEY_IS_STD,
    "frechet_inception_distance": KEY_FID,
    "kernel_inception_distance_mean": KEY_KID_MEAN,
    "kernel_inception_distance_std": KEY_KID_STD,
    "precision": KEY_PRECISION,
    "recall": KEY_RECALL,
    "f_score": KEY_F_SCORE,
}


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one sample set against one reference, with everything needed to read them."""

    metrics: dict[str, float]  # KEY_* -> value
    extractor: Extractor
    samples: str  # what was scored
    n_samples: int
    reference: str | None  # dataset spec (None: IS only, no reference)
    reference_split: str | None
    n_reference: int
    reference_fingerprint: str | None
    reference_cached: bool  # reference features came from the cache
    per_class: tuple[ClassScore, ...] = ()
    judge: JudgeResult | None = None
    warnings: tuple[str, ...] = ()  # things that change what a number means
    notes: tuple[str, ...] = ()  # things left out, and why
    settings: dict = field(default_factory=dict)  # metrics, batch size, KID subset size, IS splits, device, seed
    created: str = ""
    versions: dict = field(default_factory=dict)
    splits: dict = field(default_factory=dict)  # KEY_* -> the reference split it was measured against
    n_reference_test: int | None = None  # images in the reference's test split (None: no test split)
    memorisation: MemorisationResult | None = None

    @property
    def comparable_with_papers(self) -> bool:
        return self.extractor.comparable_with_papers

    @property
    def label(self) -> str:
        """One line naming the extractor and whether papers' (Inception) numbers compare."""
        return f"features: {self.extractor.description}"

    def to_dict(self) -> dict:
        return {
            "metrics": dict(self.metrics),
            "extractor": self.extractor.to_dict(),
            "comparable_with_papers": self.comparable_with_papers,
            "label": self.label,
            "samples": {"source": self.samples, "n": self.n_samples},
            "reference": {
                "dataset": self.reference,
                "split": self.reference_split,
                "n": self.n_reference,
                "fingerprint": self.reference_fingerprint,
                "cached": self.reference_cached,
                "test_n": self.n_reference_test,
            },
            "splits": dict(self.splits),
            "memorisation": self.memorisation.to_dict() if self.memorisation else None,
            "per_class": [c.to_dict() for c in self.per_class],
            "judge": self.judge.to_dict() if self.judge else None,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "settings": dict(self.settings),
            "created": self.created,
            "versions": dict(self.versions),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically; with memorisation results, `memorisation_path(path)` beside it.
        Under torchrun rank 0 alone writes (every rank holds the same result)."""
        from robustgen.kernel import distributed
        from robustgen.kernel.io import atomic_path, atomic_write_json

        path = Path(path)
        if not distributed.is_main():
            return path
        if path.is_dir():
            raise RobustgenError(f"--out {path} is a directory: give a file name, e.g. --out {path / SCORE_FILE}")
        record = self.to_dict()
        try:
            if self.memorisation is not None:
                companion = memorisation_path(path)
                with atomic_path(companion) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **self.memorisation.arrays())
                record["memorisation"]["file"] = companion.name  # relative: the pair travels together
            atomic_write_json(path, record)
        except OSError as exc:
            raise RobustgenError(f"cannot write {path} ({exc.strerror}): pass --out with a writable path") from None
        return path


def memorisation_path(score_path: str | os.PathLike) -> Path:
    """Where the per-sample memorisation arrays go: memorisation.npz beside score.json (else <stem>.memorisation.npz)."""
    score_path = Path(score_path)
    if score_path.name == SCORE_FILE:
        return score_path.with_name(MEMORISATION_FILE)
    return score_path.with_name(f"{score_path.stem}.{MEMORISATION_FILE}")


def memorisation_metrics(memorisation: MemorisationResult) -> dict[str, float]:
    """The memorisation numbers under their result keys (values that could not be computed are left out)."""
    out = {}
    for space, (ratio_key, near_key, copying_key) in MEMORISATION_KEYS.items():
        measured = memorisation.spaces.get(space)
        if measured is None:
            continue
        values = {ratio_key: measured.nn_ratio, near_key: measured.near_copy_fraction, copying_key: measured.copying.statistic}
        out.update({k: float(v) for k, v in values.items() if v is not None})
    return out


def parse_metrics(metrics: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'is,fid' or ("is", "fid") -> validated tuple in canonical order."""
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    aliases = {"isc": "is", "pr": "prc", "precision": "prc", "recall": "prc"}
    names = [aliases.get(m, m) for m in names]
    unknown = sorted(set(names) - set(METRICS))
    if unknown or not names:
        raise RobustgenError(f"unknown metric {', '.join(unknown) or '(none)'}: choose from {','.join(METRICS)} (e.g. --metrics is,fid,kid,prc)")
    return tuple(m for m in METRICS if m in names)
