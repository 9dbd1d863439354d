"""Shared fixtures: tiny trained digits checkpoints (session-scoped, a few seconds each).

    robust_digits_checkpoint    Path to best.pt of a width-8 PreActResNet-18 trained with
                                fgsm-rs + DER at Linf eps 0.1 on digits (robust enough for tests
                                of sampling/scoring, not a good model).
    standard_digits_checkpoint  Path to best.pt of the same network trained without attacks.
    digits                      the digits ImageDataset.
    cifar_subset_path           Path to ../shared/data/cifar10-subset.npz (skips if absent).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
# Hermetic caches: tests never read or fill the user's ~/.cache/robustgen.
os.environ["ROBUSTGEN_CACHE"] = tempfile.mkdtemp(prefix="robustgen-test-cache-")

CIFAR_SUBSET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10-subset.npz"

# Tiny, fast settings shared by the fixtures (seconds on one CPU core).
TINY = dict(dataset="digits", width=8, epochs=4, batch_size=64, lr=0.1, eval_pgd_steps=3, eval_subset=120, device="cpu", seed=0)


def _train_tiny(out: Path, **overrides) -> Path:
    from training import TrainConfig, train

    result = train(TrainConfig(**{**TINY, **overrides, "out": str(out)}), progress=False, log=None)
    return result.best


@pytest.fixture(scope="session")
def robust_digits_checkpoint(tmp_path_factory) -> Path:
    return _train_tiny(tmp_path_factory.mktemp("robust-digits") / "run", method="fgsm-rs", der=True, eps=0.1)


@pytest.fixture(scope="session")
def standard_digits_checkpoint(tmp_path_factory) -> Path:
    return _train_tiny(tmp_path_factory.mktemp("standard-digits") / "run", method="standard")


@pytest.fixture(scope="session")
def digits():
    from robustgen.data import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def cifar_subset_path() -> Path:
    if not CIFAR_SUBSET.is_file():
        pytest.skip(f"{CIFAR_SUBSET} not present")
    return CIFAR_SUBSET
