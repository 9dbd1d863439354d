"""IS, FID, KID and precision/recall from features, with torch-fidelity's own functions.

`calculate_metrics` is features -> these functions; calling them directly with
the keyword arguments `calculate_metrics` would pass (rng_seed 2020, IS splits,
KID subsets and subset size, PRC neighbourhood and batch size, save_cpu_ram)
gives the same numbers (tests/test_scoring.py checks this to 1e-6) while
letting robustgen own extraction and caching.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robustgen.kernel.errors import RobustgenError

DEFAULT_KID_SUBSET_SIZE = 1000  # torch-fidelity's default
KID_SUBSETS = 100  # torch-fidelity's default
IS_SPLITS = 10  # torch-fidelity's default, what papers use
PRC_NEIGHBORHOOD = 3  # torch-fidelity's default (Kynkaanniemi et al. 2019)
PRC_BATCH_SIZE = 10000  # torch-fidelity's default: rows of the distance matrix held at once
RNG_SEED = 2020  # torch-fidelity's default: IS split order and KID subsets are reproducible


@dataclass(frozen=True)
class MetricSettings:
    """The knobs of torch-fidelity's metrics (its calculate_metrics keyword arguments)."""

    is_splits: int = IS_SPLITS
    kid_subset_size: int | None = None  # None: KID not computed
    kid_subsets: int = KID_SUBSETS
    prc_neighborhood: int = PRC_NEIGHBORHOOD
    prc_batch_size: int = PRC_BATCH_SIZE
    rng_seed: int = RNG_SEED
    verbose: bool = False

    def fidelity_kwargs(self) -> dict:
        """The keyword arguments calculate_metrics would hand its metric functions."""
        kwargs = {
            "rng_seed": self.rng_seed,
            "isc_splits": self.is_splits,
            "kid_subsets": self.kid_subsets,
            "prc_neighborhood": self.prc_neighborhood,
            "prc_batch_size": self.prc_batch_size,
            "save_cpu_ram": True,  # the chunked PRC: distance matrices of prc_batch_size rows, not N x N
            "verbose": self.verbose,
        }
        if self.kid_subset_size is not None:
            kwargs["kid_subset_size"] = self.kid_subset_size
        return kwargs


def inception_score(logits: torch.Tensor, settings: MetricSettings) -> dict[str, float]:
    """torch-fidelity's IS of the samples' logits: {inception_score_mean, inception_score_std}."""
    from torch_fidelity.metric_isc import isc_features_to_metric

    return _call(isc_features_to_metric, logits, settings.is_splits, True, settings.rng_seed)  # True: shuffle, as torch-fidelity does


def frechet_distance(features_1: torch.Tensor, features_2: torch.Tensor, *, verbose: bool = False) -> float:
    """torch-fidelity's FID between two feature sets (statistics in float64 numpy, as it computes them)."""
    from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_features_to_statistics, fid_statistics_to_metric

    stats_1, stats_2 = fid_features_to_statistics(features_1), fid_features_to_statistics(features_2)
    return float(_call(fid_statistics_to_metric, stats_1, stats_2, verbose)[KEY_METRIC_FID])


def kernel_distance(features_1: torch.Tensor, features_2: torch.Tensor, settings: MetricSettings) -> dict[str, float]:
    """torch-fidelity's KID: {kernel_inception_distance_mean, kernel_inception_distance_std}."""
    from torch_fidelity.metric_kid import kid_features_to_metric

    return _call(kid_features_to_metric, features_1, features_2, **settings.fidelity_kwargs())


def precision_recall(generated: torch.Tensor, real: torch.Tensor, settings: MetricSettings) -> dict[str, float]:
    """torch-fidelity's precision/recall/F-score (Kynkaanniemi et al. 2019); generated first, real second."""
    from torch_fidelity.metric_prc import prc_features_to_metric

    return _call(prc_features_to_metric, generated, real, **settings.fidelity_kwargs())


def _call(fn, *args, **kwargs) -> dict:
    """A torch-fidelity metric function; its input validation (vassert) errors become one line."""
    try:
        return fn(*args, **kwargs)
    except ValueError as exc:
        raise RobustgenError(f"torch-fidelity rejected the input: {str(exc).splitlines()[0][:200]}") from None
