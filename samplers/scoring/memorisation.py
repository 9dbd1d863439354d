"""Memorisation and novelty: how close samples sit to the training set, measured against real test images.

For every sample, the Euclidean distance to its nearest *training* image, in
pixel space ([0, 1] floats, flattened) and in the extractor's FID features; the
same distance for the real held-out *test* images is the yardstick (a real
image the model never saw is as far from the training set as novelty gets).
Per space:

- `nn_ratio`: median sample distance / median test distance (1: as novel as
  real held-out images; 0: copies);
- `near_copy_fraction`: samples closer to the training set than the 1st
  percentile of test images (1% for real held-out data, by construction);
- `copying` (C_T): the data-copying test of Meehan, Chaudhuri & Dasgupta,
  "A Non-Parametric Test to Detect Data-Copying in Generative Models",
  AISTATS 2020 (reference code: github.com/casey-meehan/data-copying).
  The training set's space is cut into cells by k-means (fitted on training
  points, fixed seed). In each cell pi, each test and generated point's
  distance to its nearest *training point of the same cell* is computed, and
  the Mann-Whitney U statistic of the generated distances against the test
  distances, U = #{(q, p): d(q) > d(p)} + #ties / 2, is standardised under the
  null, Z_U = (U - mn/2) / sqrt(mn(m + n + 1) / 12). C_T is the average of Z_U
  over the cells holding at least tau*m generated samples, weighted by the
  fraction of test points in the cell, P_n(pi). C_T << 0: samples sit closer to
  the training points than real data does (data-copying); C_T >> 0: farther
  (underfitting). Choices, after the paper's experiments: tau*m = 20 samples
  (their tau = 20/m); k = min(50, n_test // 20) cells, so a cell holds ~20 test
  points; the paper's Z_U without the reference code's 0.5 continuity
  correction; cells with no test point carry zero weight.

Nearest neighbours are searched in chunks (`nearest_neighbours`), so memory
stays within a budget at any size (50k samples x 50k training images x 3072
dims at CIFAR size); the training-set side (test -> train distances, cells) is
computed once per dataset and space and cached (`samplers.scoring.feature_cache`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from samplers.scoring import feature_cache as score_cache

NN_MEMORY_BYTES = 256 * 2**20  # working set of one nearest-neighbour block (float64 distances and rows)
NEAR_COPY_PERCENTILE = 1.0  # a near-copy is closer than this percentile of real test images
MAX_CELLS = 50  # C_T cells: at most this many (the paper's experiments use 50) ...
TEST_POINTS_PER_CELL = 20  # ... and about this many test points per cell
MIN_CELL_SAMPLES = 20  # tau * m: a cell enters C_T with at least this many generated samples (paper: tau = 20/m)
KMEANS_SEED = 0
KMEANS_MAX_FIT = 10_000  # k-means is fitted on at most this many training points (10k x 3072 float32: 123 MB), then all are assigned
COPYING_Z = 2.0  # |C_T| beyond this is read as copying / underfitting
N_CLOSEST_PAIRS = 8
SPACES = ("pixels", "features")


# --------------------------------------------------------------------------- nearest neighbours


@dataclass(frozen=True, eq=False)
class Vectors:
    """Rows of one space, kept compact (uint8 pixels stay uint8); float64 only one chunk at a time."""

    data: np.ndarray | torch.Tensor  # (N, D)
    scale: float = 1.0  # row values = data * scale (1/255 for uint8 pixels)

    def __len__(self) -> int:
        return len(self.data)

    @property
    def dim(self) -> int:
        return int(self.data.shape[1])

    def rows(self, start: int, stop: int, device: torch.device) -> torch.Tensor:
        return self._float(self.data[start:stop], device)

    def take(self, index: np.ndarray, device: torch.device) -> torch.Tensor:
        return self._float(self.data[torch.from_numpy(index) if isinstance(self.data, torch.Tensor) else index], device)

    def subset(self, index: np.ndarray) -> "Vectors":
        return Vectors(self.data[torch.from_numpy(index) if isinstance(self.data, torch.Tensor) else index], self.scale)

    def _float(self, part, device: torch.device) -> torch.Tensor:
        part = part if isinstance(part, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(part))
        # float64: the |x|^2 + |y|^2 - 2xy form cdist uses keeps ~1e-7 absolute precision at 3072 dims
        part = part.to(device=device, dtype=torch.float64, copy=True)  # a copy of our own: scaled in place
        return part.mul_(self.scale) if self.scale != 1.0 else part


def pixel_vectors(images_nhwc: np.ndarray) -> Vectors:
    """uint8 NHWC images as flattened [0, 1] pixel rows (no float copy of the whole set)."""
    return Vectors(images_nhwc.reshape(len(images_nhwc), -1), 1.0 / 255.0)


def nn_chunk_sizes(n_queries: int, dim: int, memory_bytes: int = NN_MEMORY_BYTES) -> tuple[int, int]:
    """(query rows, key rows) per block so that one block's float64 working set fits `memory_bytes`.

    A block holds the query and key rows twice (ours, and cdist's copies
    augmented with the norms) and about three (q x k) matrices (cdist's
    product, the distances, the comparison).
    """
    budget = memory_bytes // 8
    side = int((-4 * dim + math.sqrt(16 * dim * dim + 12 * budget)) / 6)  # 3 s^2 + 4 s dim = budget
    q = max(1, min(n_queries, side))
    k = max(1, (budget - 2 * q * dim) // (3 * q + 2 * dim))
    return q, k


def nn_block_bytes(q: int, k: int, dim: int) -> int:
    """The float64 working set `nn_chunk_sizes` budgets for one block."""
    return 8 * (3 * q * k + 2 * (q + k) * dim)


def nearest_neighbours(
    queries: Vectors, keys: Vectors, *, device: torch.device, memory_bytes: int = NN_MEMORY_BYTES, chunks: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """For each query row: (Euclidean distance to the nearest key row, that key's index).

    Chunked cdist with a running min/argmin on `device`; ties go to the lowest
    key index, as a brute-force argmin does. The winner's distance is then
    recomputed directly, so an exact copy is at distance 0.
    """
    q_size, k_size = chunks or nn_chunk_sizes(len(queries), queries.dim, memory_bytes)
    distance, index = np.empty(len(queries)), np.empty(len(queries), dtype=np.int64)
    for qs in range(0, len(queries), q_size):
        q = queries.rows(qs, qs + q_size, device)
        best = torch.full((len(q),), math.inf, dtype=torch.float64, device=device)
        arg = torch.zeros(len(q), dtype=torch.int64, device=device)
        for ks in range(0, len(keys), k_size):
            d, i = torch.cdist(q, keys.rows(ks, ks + k_size, device), compute_mode="use_mm_for_euclid_dist").min(dim=1)
            better = d < best  # strict: an equal distance in a later chunk keeps the earlier (lower) index
            best, arg = torch.where(better, d, best), torch.where(better, i + ks, arg)
        arg_np = arg.cpu().numpy()
        distance[qs : qs + len(q)] = (q - keys.take(arg_np, device)).norm(dim=1).cpu().numpy()
        index[qs : qs + len(q)] = arg_np
    return distance, index


# --------------------------------------------------------------------------- the training-set side (cached)


@dataclass(frozen=True, eq=False)
class TrainingSide:
    """What the measures need from the training and test sets in one space; independent of the samples."""

    test_nn_distance: np.ndarray  # (n_test,) each test image -> its nearest training image
    test_nn_index: np.ndarray  # (n_test,)
    centroids: np.ndarray  # (k, D) the C_T cells (k-means on the training set)
    train_cells: np.ndarray  # (n_train,) cell of each training point
    test_cells: np.ndarray  # (n_test,)
    test_cell_distance: np.ndarray  # (n_test,) to the nearest training point of the same cell

    ARRAYS = ("test_nn_distance", "test_nn_index", "centroids", "train_cells", "test_cells", "test_cell_distance")

    def fits(self, n_train: int, n_test: int, dim: int) -> bool:
        """Do cached arrays belong to sets of these sizes (a stale or damaged entry does not)?"""
        shapes_ok = all(len(getattr(self, a)) == n_test for a in ("test_nn_distance", "test_nn_index", "test_cells", "test_cell_distance"))
        cells_ok = self.centroids.ndim == 2 and self.centroids.shape[1] == dim and len(self.centroids) >= 1
        return shapes_ok and cells_ok and len(self.train_cells) == n_train and int(self.train_cells.max(initial=0)) < len(self.centroids)


def fit_training_side(train: Vectors, test: Vectors, *, n_cells: int, device: torch.device, memory_bytes: int = NN_MEMORY_BYTES) -> TrainingSide:
    """Test -> train nearest neighbours and the k-means cells of the training set, in one space."""
    test_nn_distance, test_nn_index = nearest_neighbours(test, train, device=device, memory_bytes=memory_bytes)
    centroids = _kmeans(train, n_cells)
    train_cells = nearest_neighbours(train, Vectors(centroids), device=device, memory_bytes=memory_bytes)[1]
    kept = np.unique(train_cells)  # a centroid no training point is nearest to would be a cell without training points
    centroids, train_cells = centroids[kept], np.searchsorted(kept, train_cells)
    test_cells = nearest_neighbours(test, Vectors(centroids), device=device, memory_bytes=memory_bytes)[1]
    test_cell_distance = in_cell_distances(test, test_cells, train, train_cells, device=device, memory_bytes=memory_bytes)
    return TrainingSide(test_nn_distance, test_nn_index, centroids, train_cells, test_cells, test_cell_distance)


def _kmeans(train: Vectors, n_cells: int) -> np.ndarray:
    """k-means centroids (float64) of (a fixed-seed subsample of) the training points."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    rng = np.random.default_rng(KMEANS_SEED)
    index = np.sort(rng.choice(len(train), size=min(len(train), KMEANS_MAX_FIT), replace=False))
    points = train.take(index, torch.device("cpu")).numpy().astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # fewer distinct points than cells: empty cells are dropped after
        model = KMeans(n_clusters=min(n_cells, len(points)), n_init=1, random_state=KMEANS_SEED).fit(points)
    return model.cluster_centers_.astype(np.float64)


def in_cell_distances(points: Vectors, cells: np.ndarray, train: Vectors, train_cells: np.ndarray, *, device: torch.device,
                      memory_bytes: int = NN_MEMORY_BYTES) -> np.ndarray:
    """Distance of each point to the nearest training point of its own cell (C_T's L_pi)."""
    out = np.empty(len(points))
    for cell in np.unique(cells).tolist():
        mine, theirs = np.flatnonzero(cells == cell), np.flatnonzero(train_cells == cell)
        out[mine] = nearest_neighbours(points.subset(mine), train.subset(theirs), device=device, memory_bytes=memory_bytes)[0]
    return out


def training_side(train: Vectors, test: Vectors, *, key: str, cache_dir: Path | None, device: torch.device,
                  memory_bytes: int = NN_MEMORY_BYTES) -> tuple[TrainingSide, bool, tuple[str, ...]]:
    """(side, came from the cache, cache files repaired): cached per dataset and space, recomputed if unreadable."""
    n_cells = number_of_cells(len(test))
    path = score_cache.entry_path(cache_dir, key) if cache_dir is not None else None
    repaired: tuple[str, ...] = ()
    if path is not None:
        arrays, corrupt = score_cache.read_arrays(path, TrainingSide.ARRAYS)
        if arrays is not None:
            side = TrainingSide(**arrays)
            if side.fits(len(train), len(test), train.dim):
                return side, True, ()
        if arrays is not None or corrupt:
            repaired = (path.name,)
    side = fit_training_side(train, test, n_cells=n_cells, device=device, memory_bytes=memory_bytes)
    if path is not None:
        score_cache.write_arrays(path, {name: getattr(side, name) for name in TrainingSide.ARRAYS})
    return side, False, repaired


def number_of_cells(n_test: int) -> int:
    return max(1, min(MAX_CELLS, n_test // TEST_POINTS_PER_CELL))


# --------------------------------------------------------------------------- C_T (Meehan et al. 2020)


@dataclass(frozen=True)
class CopyingTest:
    """The C_T data-copying statistic and how it was formed."""

    statistic: float | None  # None: no cell held enough generated samples
    n_cells: int
    cells_used: int  # cells with >= min_cell_samples generated samples and at least one test point
    min_cell_samples: int  # tau * m
    test_fraction_used: float  # sum of P_n(pi) over the cells used
    reading: str

    def to_dict(self) -> dict:
        return {"C_T": self.statistic, "n_cells": self.n_cells, "cells_used": self.cells_used, "min_cell_samples": self.min_cell_samples,
                "test_fraction_used": self.test_fraction_used, "reading": self.reading,
                "citation": "Meehan, Chaudhuri & Dasgupta 2020, A Non-Parametric Test to Detect Data-Copying in Generative Models (AISTATS)"}


def mann_whitney_z(generated: np.ndarray, test: np.ndarray) -> float:
    """Z_U of Meehan et al.: U = #{(q, p): d(q) > d(p)} + ties/2, standardised under the null."""
    from scipy.stats import rankdata

    m, n = len(generated), len(test)
    ranks = rankdata(np.concatenate([generated, test]))  # average ranks: a tie counts 1/2
    u = ranks[:m].sum() - m * (m + 1) / 2
    return float((u - m * n / 2) / math.sqrt(m * n * (m + n + 1) / 12))


def data_copying_test(*, sample_cells: np.ndarray, sample_distance: np.ndarray, test_cells: np.ndarray, test_distance: np.ndarray,
                      n_cells: int, min_cell_samples: int = MIN_CELL_SAMPLES) -> CopyingTest:
    """C_T = sum_pi P_n(pi) Z_U(pi) / sum_pi P_n(pi) over cells with >= min_cell_samples generated samples."""
    weights, scores = [], []
    for cell in range(n_cells):
        mine, theirs = sample_distance[sample_cells == cell], test_distance[test_cells == cell]
        if len(mine) >= min_cell_samples and len(theirs) > 0:
            weights.append(len(theirs) / len(test_cells))
            scores.append(mann_whitney_z(mine, theirs))
    if not weights:
        reading = f"not computed: no cell holds {min_cell_samples} samples (generate more samples)"
        return CopyingTest(None, n_cells, 0, min_cell_samples, 0.0, reading)
    statistic = float(np.dot(weights, scores) / np.sum(weights))
    return CopyingTest(statistic, n_cells, len(weights), min_cell_samples, float(np.sum(weights)), copying_reading(statistic))


def copying_reading(statistic: float) -> str:
    if statistic <= -COPYING_Z:
        return f"C_T = {statistic:.3g} << 0: data-copying (samples sit closer to their training neighbours than real test images do)"
    if statistic >= COPYING_Z:
        return f"C_T = {statistic:.3g} >> 0: underfitting (samples sit farther from the training set than real test images do)"
    return f"C_T = {statistic:.3g}: no evidence of data-copying (|C_T| < {COPYING_Z:g}: as close to the training set as real test images)"


# --------------------------------------------------------------------------- per space, and the whole result


@dataclass(frozen=True, eq=False)
class SpaceMemorisation:
    """The measures in one space ("pixels" or "features")."""

    space: str
    nn_distance: np.ndarray  # (n_samples,) each sample -> its nearest training image
    nn_index: np.ndarray  # (n_samples,) index into the training split
    median_sample: float
    median_test: float  # the same median for the real test images
    nn_ratio: float | None  # median_sample / median_test (None when median_test is 0: test images repeat training images)
    near_copy_threshold: float  # 1st percentile of the test images' distances
    near_copy_fraction: float
    test_in_train: int  # test images at distance 0 from the training set (duplicates across the splits)
    copying: CopyingTest

    def to_dict(self) -> dict:
        return {"median_nn_distance_samples": self.median_sample, "median_nn_distance_test": self.median_test, "nn_ratio": self.nn_ratio,
                "near_copy_threshold": self.near_copy_threshold, "near_copy_fraction": self.near_copy_fraction,
                "test_images_in_train": self.test_in_train, "copying": self.copying.to_dict()}


def measure_space(space: str, samples: Vectors, train: Vectors, side: TrainingSide, *, device: torch.device,
                  memory_bytes: int = NN_MEMORY_BYTES, min_cell_samples: int = MIN_CELL_SAMPLES) -> SpaceMemorisation:
    """Nearest-training-image distances of the samples in one space, against the test images' (from `side`)."""
    distance, index = nearest_neighbours(samples, train, device=device, memory_bytes=memory_bytes)
    cells = nearest_neighbours(samples, Vectors(side.centroids), device=device, memory_bytes=memory_bytes)[1]
    cell_distance = in_cell_distances(samples, cells, train, side.train_cells, device=device, memory_bytes=memory_bytes)
    copying = data_copying_test(sample_cells=cells, sample_distance=cell_distance, test_cells=side.test_cells,
                                test_distance=side.test_cell_distance, n_cells=len(side.centroids), min_cell_samples=min_cell_samples)
    median_sample, median_test = float(np.median(distance)), float(np.median(side.test_nn_distance))
    threshold = float(np.percentile(side.test_nn_distance, NEAR_COPY_PERCENTILE))
    return SpaceMemorisation(
        space=space, nn_distance=distance, nn_index=index, median_sample=median_sample, median_test=median_test,
        nn_ratio=median_sample / median_test if median_test > 0 else None, near_copy_threshold=threshold,
        near_copy_fraction=float(np.mean(distance < threshold)), test_in_train=int(np.sum(side.test_nn_distance == 0)), copying=copying,
    )


@dataclass(frozen=True)
class ClosestPair:
    sample_index: int
    train_index: int
    distance: float  # pixel-space Euclidean distance ([0, 1] pixels)


@dataclass(frozen=True, eq=False)
class MemorisationResult:
    """Memorisation measures in pixel and feature space, plus the closest (sample, training image) pairs."""

    spaces: dict[str, SpaceMemorisation]  # "pixels", "features"
    n_train: int
    n_test: int
    pairs: tuple[ClosestPair, ...]  # the closest in pixel space, closest first
    pair_sample_images: np.ndarray  # (P, H, W, C) uint8, the samples of `pairs`
    pair_train_images: np.ndarray  # (P, H, W, C) uint8, their nearest training images
    cached: bool  # the training-set side came from the cache
    repaired: tuple[str, ...] = ()  # cache files that were unreadable and have been recomputed

    def to_dict(self) -> dict:
        return {
            "n_train": self.n_train, "n_test": self.n_test, "training_side_cached": self.cached,
            "spaces": {name: space.to_dict() for name, space in self.spaces.items()},
            "closest_pairs": [{"sample_index": p.sample_index, "train_index": p.train_index, "pixel_distance": p.distance} for p in self.pairs],
            "pixel_space": "Euclidean distance of [0, 1] pixels, flattened", "feature_space": "Euclidean distance of the extractor's FID features",
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Per-sample distances and indices plus the pairs' pixels (memorisation.npz)."""
        out = {"pair_sample_images": self.pair_sample_images, "pair_train_images": self.pair_train_images,
               "pair_sample_index": np.array([p.sample_index for p in self.pairs], np.int64),
               "pair_train_index": np.array([p.train_index for p in self.pairs], np.int64),
               "pair_distance": np.array([p.distance for p in self.pairs], np.float64)}
        for name, space in self.spaces.items():
            out[f"nn_distance_{name}"], out[f"nn_index_{name}"] = space.nn_distance, space.nn_index
        return out


def closest_pairs(pixels: SpaceMemorisation, sample_images: np.ndarray, train_images: np.ndarray, count: int = N_CLOSEST_PAIRS):
    """The `count` samples nearest to a training image (pixel space): (pairs, their sample images, their training images)."""
    order = np.argsort(pixels.nn_distance, kind="stable")[:count]
    pairs = tuple(ClosestPair(int(i), int(pixels.nn_index[i]), float(pixels.nn_distance[i])) for i in order)
    return pairs, sample_images[order].copy(), train_images[pixels.nn_index[order]].copy()


def measure_memorisation(
    *, sample_images: np.ndarray, sample_features: torch.Tensor, train_images: np.ndarray, train_features: torch.Tensor,
    test_images: np.ndarray, test_features: torch.Tensor, keys: dict[str, str], cache_dir: Path | None, device: torch.device,
    memory_bytes: int = NN_MEMORY_BYTES,
) -> MemorisationResult:
    """Both spaces: `keys` = {"pixels": cache key, "features": cache key} of their training-set sides."""
    if device.type == "mps":  # the search runs in float64, which MPS does not have
        device = torch.device("cpu")
    vectors = {
        "pixels": (pixel_vectors(sample_images), pixel_vectors(train_images), pixel_vectors(test_images)),
        "features": (Vectors(sample_features), Vectors(train_features), Vectors(test_features)),
    }
    spaces, cached, repaired = {}, True, ()
    for name, (samples, train, test) in vectors.items():
        side, hit, fixed = training_side(train, test, key=keys[name], cache_dir=cache_dir, device=device, memory_bytes=memory_bytes)
        cached, repaired = cached and hit, repaired + fixed
        spaces[name] = measure_space(name, samples, train, side, device=device, memory_bytes=memory_bytes)
    pairs, pair_samples, pair_train = closest_pairs(spaces["pixels"], sample_images, train_images)
    return MemorisationResult(spaces, len(train_images), len(test_images), pairs, pair_samples, pair_train, cached, repaired)
