"""Initialisers: where each chain starts. Fitted once per dataset/class/options and cached.

    init = fit_initializer(InitConfig(kind="local-pca", k=20), dataset, cls=3, model=model)
    x0 = init.draw(64, generator)            # (64, C, H, W) float in [0, 1], CPU
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from robustgen.data import ImageDataset
from samplers.config import InitConfig
from samplers.initializers.base import Initializer, cache_key, default_cache_dir, model_fingerprint
from samplers.initializers.gaussian import GaussianInit, fit_gaussian
from samplers.initializers.local_pca import LocalPCAInit, fit_local_pca
from samplers.initializers.pca import PCAInit, fit_pca
from samplers.initializers.uniform import UniformInit, fit_uniform

_FITTERS = {"uniform": fit_uniform, "gaussian": fit_gaussian, "pca": fit_pca, "local-pca": fit_local_pca}


def fit_initializer(
    config: InitConfig,
    dataset: ImageDataset,
    cls: int,
    *,
    model: nn.Module | None = None,
    cache_dir: str | Path | None = None,
    dataset_fingerprint: str | None = None,
    model_hash: str | None = None,
) -> Initializer:
    """Fit (or load from `<cache_dir>/init/`) the initialiser of class `cls`. cache_dir=None: default cache;
    pass False to disable caching."""
    config.validate()
    cls = dataset.class_index(cls)
    uses_model = config.kind == "local-pca" and config.neighbour_space == "features"
    if uses_model and model is None:
        raise ValueError("local-pca with neighbour_space='features' needs the model")
    key = cache_key(
        dataset=dataset_fingerprint or dataset.fingerprint(),
        cls=cls,
        kind=config.kind,
        options=config.fit_options(),
        model=(model_hash or model_fingerprint(model)) if uses_model else None,
    )
    if cache_dir is False:
        directory = None
    else:
        directory = Path(cache_dir if cache_dir is not None else default_cache_dir()) / "init"
    return _FITTERS[config.kind](
        dataset=dataset, cls=cls, image_shape=dataset.image_shape, config=config, cache_dir=directory, key=key, model=model
    )


__all__ = ["GaussianInit", "Initializer", "LocalPCAInit", "PCAInit", "UniformInit", "fit_initializer", "model_fingerprint"]
