"""Scoring generated images: IS, FID, KID, precision/recall, per class, via torch-fidelity.

    from samplers.scoring import score
    result = score("runs/samples-cifar10", ref="cifar10")                       # Inception: comparable with papers
    result.metrics[KEY_FID], result.metrics[KEY_FID_TEST]                         # vs the train split, vs the test split
    result.metrics[KEY_NN_RATIO_PIXEL], result.memorisation.pairs                 # memorisation (on by default)
    result = score("runs/samples", ref="npz:data.npz", features="runs/ref/best.pt",
                   metrics=("is", "fid", "kid", "prc"), judge="runs/judge/best.pt")
    result.metrics[KEY_FID], result.to_dict(), result.save("score.json")

Layout: `inputs` (samples and reference splits) -> `features` (the one
extraction stage; torch-fidelity's extractors, reference features cached by
`cache`) -> `metrics` (torch-fidelity's metric functions on those features:
the numbers `calculate_metrics` gives) -> `per_class` (class-conditional FID,
judge accuracy) and `memorisation` (nearest-training-image distances,
near-copies, C_T) -> `result` (keys, ScoreResult, score.json) and `report`
(console table); `scorer.score` runs the stages. FID is against the train split
(comparable with papers) and, as `fid_test`, against the test split. Every
result names its extractor; numbers from a robustgen classifier extractor are
labelled as not comparable with Inception-based numbers in papers.
"""

from samplers.scoring.extractors import Extractor
from samplers.scoring.features import build_network, extract_features
from samplers.scoring.inputs import load_reference, load_reference_splits, load_samples
from samplers.scoring.memorisation import MemorisationResult, measure_memorisation, nearest_neighbours
from samplers.scoring.per_class import ClassScore, JudgeResult
from samplers.scoring.result import (
    DEFAULT_METRICS,
    KEY_CLASS_FID_MEAN,
    KEY_DATA_COPYING_FEATURES,
    KEY_DATA_COPYING_PIXEL,
    KEY_F_SCORE,
    KEY_FID,
    KEY_FID_TEST,
    KEY_IS_MEAN,
    KEY_IS_STD,
    KEY_JUDGE_ACCURACY,
    KEY_KID_MEAN,
    KEY_KID_STD,
    KEY_NEAR_COPY_FRACTION_FEATURES,
    KEY_NEAR_COPY_FRACTION_PIXEL,
    KEY_NN_RATIO_FEATURES,
    KEY_NN_RATIO_PIXEL,
    KEY_PRECISION,
    KEY_PRECISION_TEST,
    KEY_RECALL,
    KEY_RECALL_TEST,
    MEMORISATION_FILE,
    METRICS,
    SCORE_FILE,
    ScoreResult,
    parse_metrics,
)
from samplers.scoring.scorer import default_output, score
from samplers.scoring.console import format_result

__all__ = [
    "DEFAULT_METRICS",
    "KEY_CLASS_FID_MEAN",
    "KEY_DATA_COPYING_FEATURES",
    "KEY_DATA_COPYING_PIXEL",
    "KEY_FID",
    "KEY_FID_TEST",
    "KEY_F_SCORE",
    "KEY_IS_MEAN",
    "KEY_IS_STD",
    "KEY_JUDGE_ACCURACY",
    "KEY_KID_MEAN",
    "KEY_KID_STD",
    "KEY_NEAR_COPY_FRACTION_FEATURES",
    "KEY_NEAR_COPY_FRACTION_PIXEL",
    "KEY_NN_RATIO_FEATURES",
    "KEY_NN_RATIO_PIXEL",
    "KEY_PRECISION",
    "KEY_PRECISION_TEST",
    "KEY_RECALL",
    "KEY_RECALL_TEST",
    "MEMORISATION_FILE",
    "METRICS",
    "SCORE_FILE",
    "ClassScore",
    "Extractor",
    "JudgeResult",
    "MemorisationResult",
    "ScoreResult",
    "build_network",
    "default_output",
    "extract_features",
    "format_result",
    "load_reference",
    "load_reference_splits",
    "load_samples",
    "measure_memorisation",
    "nearest_neighbours",
    "parse_metrics",
    "score",
]
