"""Initialisers: where each chain starts. Fitted once per dataset/class/options and cached.

    init = fit_initializer(InitConfig(kind="local-pca", k=20), dataset, cls=3, model=model)
    x0 = init.draw(64, generator)            # (64, C, H, W) float in [0, 1], CPU

Each kind is a module with `fit(dataset, cls, config, model) -> arrays` (what is
cached, and what one rank computes and shares with the others under torchrun)
and `build(dataset, cls, config, arrays) -> Initializer`. The config's automatic
choices (neighbour_space="auto", resolution=None) are made for the dataset's image
size first (`InitConfig.resolved`); the cache key holds the resolved values.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from torch import nn

from robustgen.kernel.data import ImageDataset
from robustgen.kernel.models import model_fingerprint
from samplers.config import InitConfig
from samplers.initializers import gaussian, images, local_pca, pca, uniform
from samplers.initializers.base import Initializer, cache_key, cached_arrays, default_cache_dir
from samplers.initializers.gaussian import GaussianInit
from samplers.initializers.local_pca import LocalPCAInit
from samplers.initializers.pca import PCAInit
from samplers.initializers.uniform import UniformInit

KINDS = {"uniform": uniform, "gaussian": gaussian, "pca": pca, "local-pca": local_pca, "images": images}


def uses_model(config: InitConfig) -> bool:
    """Whether fitting needs the model (a resolved config: "auto" counts as pixels)."""
    return config.kind == "local-pca" and config.neighbour_space == "features"


def model_has_features(model: nn.Module | None) -> bool:
    """Whether `model.features(x)` gives penultimate features (third-party nets without a separable head do not)."""
    return model is not None and callable(getattr(model, "features", None)) and getattr(model, "feature_dim", 1) is not None


def resolve_init(config: InitConfig, dataset: ImageDataset, model: nn.Module | None = None) -> InitConfig:
    """`config` with its automatic choices made for `dataset`'s images (and `model`'s features, if any)."""
    return config.resolved(dataset.image_shape, model_has_features=model is None or model_has_features(model))


def fitted_arrays(
    config: InitConfig,
    dataset: ImageDataset,
    cls: int,
    *,
    model: nn.Module | None = None,
    cache_dir: str | Path | None | bool = None,
    dataset_fingerprint: str | None = None,
    model_hash: str | None = None,
) -> dict[str, np.ndarray]:
    """The fitted arrays of class `cls`, from `<cache_dir>/init/` or computed (and cached).
    cache_dir=None: the default cache; False: no cache."""
    config.validate()
    config = resolve_init(config, dataset, model)
    cls = dataset.class_index(cls)
    if uses_model(config) and model is None:
        raise ValueError("local-pca with neighbour_space='features' needs the model")
    key = cache_key(
        dataset=dataset_fingerprint or dataset.fingerprint(), cls=cls, kind=config.kind, options=config.fit_options(),
        model=(model_hash or model_fingerprint(model)) if uses_model(config) else None,
    )
    # images: the pool is read once per process and is the data itself; nothing worth a disk entry is fitted
    directory = None if cache_dir is False or config.kind == "images" else Path(cache_dir if cache_dir is not None else default_cache_dir()) / "init"
    return cached_arrays(directory, f"{config.kind}-{key}", lambda: KINDS[config.kind].fit(dataset, cls, config, model))


def build_initializer(config: InitConfig, dataset: ImageDataset, cls: int, arrays: dict[str, np.ndarray]) -> Initializer:
    """The initialiser of class `cls` from its fitted arrays (local-pca: reads the class's images now)."""
    return KINDS[config.kind].build(dataset, dataset.class_index(cls), resolve_init(config, dataset), arrays)


def fit_initializer(
    config: InitConfig,
    dataset: ImageDataset,
    cls: int,
    *,
    model: nn.Module | None = None,
    cache_dir: str | Path | None | bool = None,
    dataset_fingerprint: str | None = None,
    model_hash: str | None = None,
) -> Initializer:
    """Fit (or load from the cache) and build the initialiser of class `cls`."""
    arrays = fitted_arrays(config, dataset, cls, model=model, cache_dir=cache_dir, dataset_fingerprint=dataset_fingerprint, model_hash=model_hash)
    return build_initializer(config, dataset, cls, arrays)


__all__ = ["GaussianInit", "Initializer", "LocalPCAInit", "PCAInit", "UniformInit", "build_initializer", "fit_initializer", "fitted_arrays", "model_fingerprint",
           "model_has_features", "resolve_init", "uses_model"]
