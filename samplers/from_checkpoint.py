"""`sample_from_checkpoint`: load a checkpoint and the data it was trained on, then `sample`.

The data is needed to fit the initialiser and the reference energies; it is
found from the checkpoint's meta (dataset, data_root) unless overridden.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from robustgen.checkpoint import load_checkpoint
from robustgen.data import ImageDataset, load_dataset
from robustgen.device import resolve_device
from robustgen.errors import RobustgenError
from samplers.config import InitConfig, SamplerConfig, StopConfig
from samplers.sample import SampleResult, sample


def load_checkpoint_dataset(meta: dict, *, dataset: str | None = None, data_root: str | Path | None = None) -> ImageDataset:
    """The training data named in a checkpoint's meta, or a clear error saying how to provide it."""
    spec = dataset or meta.get("dataset")
    if not spec:
        raise RobustgenError("the checkpoint does not name its dataset: pass --dataset (e.g. digits, cifar10 or npz:PATH)")
    root = data_root if data_root is not None else meta.get("data_root")
    try:
        data = load_dataset(spec, root=root)
    except RobustgenError as exc:
        raise RobustgenError(
            f"sampling needs the training images of {spec!r} (to fit the initialiser and reference energies) "
            f"but they cannot be loaded ({str(exc).rstrip('.')}); point to them with --data-root DIR or --dataset npz:PATH"
        ) from None
    expected_shape = meta.get("input_shape")
    if expected_shape and list(data.image_shape) != list(expected_shape):
        raise RobustgenError(
            f"dataset {spec!r} has images shaped {list(data.image_shape)} but the checkpoint expects {list(expected_shape)}: pass the dataset it was trained on with --dataset"
        )
    classes = meta.get("classes")
    if classes and len(classes) != data.num_classes:
        raise RobustgenError(f"dataset {spec!r} has {data.num_classes} classes but the checkpoint has {len(classes)}: pass the dataset it was trained on with --dataset")
    return data


def default_out(dataset_name: str, class_names: Sequence[str] | None) -> Path:
    """runs/samples-<dataset>[-<class>...] with filesystem-safe names."""
    base = Path(dataset_name.split(":", 1)[-1]).stem if ":" in dataset_name else dataset_name
    parts = [base] + list(class_names or [])
    return Path("runs") / re.sub(r"[^A-Za-z0-9_.-]+", "_", "samples-" + "-".join(parts))


def sample_from_checkpoint(
    checkpoint: str | Path,
    *,
    classes: Sequence[int | str] | None = None,
    n: int = 100,
    init: InitConfig = InitConfig(),
    sampler: SamplerConfig = SamplerConfig(),
    stop: StopConfig = StopConfig(),
    seed: int = 0,
    batch_size: int = 250,
    out: str | Path | None = None,
    png: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    device: str = "auto",
    dataset: str | None = None,
    data_root: str | Path | None = None,
    cache_dir: str | Path | None | bool = None,
    progress: bool = True,
) -> SampleResult:
    """Sample from a robustgen checkpoint; `out=None` writes to runs/samples-<dataset>[-<class>]."""
    if n < 1:
        raise RobustgenError(f"--n {n}: ask for at least 1 image")
    model, meta = load_checkpoint(checkpoint, device=resolve_device(device))
    data = load_checkpoint_dataset(meta, dataset=dataset, data_root=data_root)
    if classes:
        names = [data.classes[data.class_index(c)] for c in classes]  # validates before anything runs
    else:
        names = None
    if out is None:
        out = default_out(data.name, names)
    return sample(
        model, data, classes=classes, n=n, init=init, sampler=sampler, stop=stop, seed=seed, batch_size=batch_size,
        out=out, png=png, overwrite=overwrite, resume=resume, cache_dir=cache_dir, checkpoint=checkpoint, progress=progress,
    )
