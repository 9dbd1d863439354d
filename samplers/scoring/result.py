"""What a score is: result keys (like torch-fidelity's KEY_METRIC_*), defaults, and `ScoreResult`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from robustgen.errors import RobustgenError
from samplers.scoring.extractors import Extractor
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

METRICS = ("is", "fid", "kid", "prc")  # what users ask for
DEFAULT_METRICS = ("is", "fid")
DEFAULT_KID_SUBSET_SIZE = 1000  # torch-fidelity's default
IS_SPLITS = 10  # torch-fidelity's default, what papers use
PRC_NEIGHBORHOOD = 3  # torch-fidelity's default (Kynkaanniemi et al. 2019)
RNG_SEED = 2020  # torch-fidelity's default: IS split order and KID subsets are reproducible
SCORE_FILE = "score.json"

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
            },
            "per_class": [c.to_dict() for c in self.per_class],
            "judge": self.judge.to_dict() if self.judge else None,
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "settings": dict(self.settings),
            "created": self.created,
            "versions": dict(self.versions),
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the result as JSON, atomically."""
        from robustgen.io import atomic_write_json

        path = Path(path)
        try:
            atomic_write_json(path, self.to_dict())
        except OSError as exc:
            raise RobustgenError(f"cannot write {path} ({exc.strerror}): pass --out with a writable path") from None
        return path


def parse_metrics(metrics: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """'is,fid' or ("is", "fid") -> validated tuple in canonical order."""
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    aliases = {"isc": "is", "pr": "prc", "precision": "prc", "recall": "prc"}
    names = [aliases.get(m, m) for m in names]
    unknown = sorted(set(names) - set(METRICS))
    if unknown or not names:
        raise RobustgenError(f"unknown metric {', '.join(unknown) or '(none)'}: choose from {','.join(METRICS)} (e.g. --metrics is,fid,kid,prc)")
    return tuple(m for m in METRICS if m in names)
