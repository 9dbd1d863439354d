"""Scoring generated images: IS, FID, KID, precision/recall, per class, via torch-fidelity.

    from samplers.scoring import score
    result = score("runs/samples-cifar10", ref="cifar10")                       # Inception: comparable with papers
    result = score("runs/samples", ref="npz:data.npz", features="runs/ref/best.pt",
                   metrics=("is", "fid", "kid", "prc"), judge="runs/judge/best.pt")
    result.metrics[KEY_FID], result.to_dict(), result.save("score.json")

The metrics are torch-fidelity's (`calculate_metrics`); this package chooses
inputs, extractor and cache keys, checks that each metric has enough samples
to mean something, and adds class-conditional FID and judge accuracy. Every
result names its extractor; numbers from a robustgen classifier extractor are
labelled as not comparable with Inception-based numbers in papers.
"""

from samplers.scoring.extractors import Extractor
from samplers.scoring.inputs import load_reference, load_samples
from samplers.scoring.per_class import ClassScore, JudgeResult
from samplers.scoring.result import (
    DEFAULT_METRICS,
    KEY_CLASS_FID_MEAN,
    KEY_F_SCORE,
    KEY_FID,
    KEY_IS_MEAN,
    KEY_IS_STD,
    KEY_JUDGE_ACCURACY,
    KEY_KID_MEAN,
    KEY_KID_STD,
    KEY_PRECISION,
    KEY_RECALL,
    METRICS,
    SCORE_FILE,
    ScoreResult,
    parse_metrics,
)
from samplers.scoring.scorer import default_output, score
from samplers.scoring.report import format_result

__all__ = [
    "DEFAULT_METRICS",
    "KEY_CLASS_FID_MEAN",
    "KEY_FID",
    "KEY_F_SCORE",
    "KEY_IS_MEAN",
    "KEY_IS_STD",
    "KEY_JUDGE_ACCURACY",
    "KEY_KID_MEAN",
    "KEY_KID_STD",
    "KEY_PRECISION",
    "KEY_RECALL",
    "METRICS",
    "SCORE_FILE",
    "ClassScore",
    "Extractor",
    "JudgeResult",
    "ScoreResult",
    "default_output",
    "format_result",
    "load_reference",
    "load_samples",
    "parse_metrics",
    "score",
]
