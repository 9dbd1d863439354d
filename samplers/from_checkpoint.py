"""`sample_from_checkpoint`: load a model (any source) and the data it was trained on, then `sample`.

The model comes from `robustgen.models.sources.load_classifier`: a robustgen
checkpoint or a robustbench:/robustness:/torchvision:/timm:/python:/torchscript:/export: spec. The data is
needed to fit the initialiser and the reference energies; it is found from the
model's meta (dataset, data_root) unless overridden, and relabelled into the
model's classes when it holds only some of them (e.g. 2 ImageNet classes).
A folder of large images stays a LazyImageFolder (read one class at a time),
its images brought to the model's input size (ImageNet's evaluation crop).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robustgen.data import ImageDataset
from robustgen import distributed
from robustgen.io import safe_name
from robustgen.errors import RobustgenError
from robustgen.models.model_data import SAMPLING, model_dataset
from robustgen.models.sanity import flush_warnings
from robustgen.models.sources import load_classifier
from samplers.config import InitConfig, SamplerConfig, StopConfig
from samplers.sampling import SampleResult, sample


def load_checkpoint_dataset(meta: dict, *, dataset: str | None = None, data_root: str | Path | None = None) -> ImageDataset:
    """The training data named in a model's meta (in the model's class indices), or a clear error saying how to provide it."""
    return model_dataset(meta, data=dataset, data_root=data_root, purpose=SAMPLING,
                         data_hint="--data npz:PATH / folder:PATH (--dataset npz:PATH works too)")


def default_out(dataset_name: str, class_names: Sequence[str] | None) -> Path:
    """runs/samples-<dataset>[-<class>...] with filesystem-safe names."""
    base = Path(dataset_name.split(":", 1)[-1]).stem if ":" in dataset_name else dataset_name
    parts = [base] + list(class_names or [])
    return Path("runs") / safe_name("samples-" + "-".join(parts))


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
    refill: bool = True,
    precision: str = "fp32",
    compile: str = "off",
    out: str | Path | None = None,
    png: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    device: str = "auto",
    dataset: str | None = None,
    data_root: str | Path | None = None,
    model_dir: str | Path | None = None,
    trust_checkpoint: bool = False,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    cache_dir: str | Path | None | bool = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    check: str = "off",
) -> SampleResult:
    """Sample from a classifier spec (see `load_classifier`); `out=None` writes to runs/samples-<dataset>[-<class>].

    log: receives one line per note of the loader (what it inferred about a python:/torchscript:/export: model).
    check: "warn"/"strict": the loader's clean-accuracy check of a foreign model (robustgen.models.sanity).
    """
    if n < 1:
        raise RobustgenError(f"--num-images {n}: ask for at least 1 image")
    dist = distributed.setup(device)  # under torchrun: this rank's device (cuda:LOCAL_RANK or cpu)
    model, meta = load_classifier(checkpoint, device=dist.device, model_dir=model_dir, trust_checkpoint=trust_checkpoint, mean=mean, std=std,
                                  data=dataset, data_root=data_root, check=check)
    for note in meta.get("notes", []) if log is not None else ():
        log(f"note: {note}")  # what the loader inferred (classes, input size, normalisation)
    data = load_checkpoint_dataset(meta, dataset=dataset, data_root=data_root)  # a subset of the model's classes comes relabelled
    present = np.unique(data.y_train)
    if not classes and len(present) < data.num_classes:
        classes = [int(c) for c in present]  # the subset of the model's classes the data holds
    if classes:
        names = [data.classes[data.class_index(c)] for c in classes]  # validates before anything runs
    else:
        names = None
    if out is None:
        out = default_out(data.name, names)
    flush_warnings()  # model and data are read and checked: a near-chance warning now, before the chains run
    return sample(
        model, data, classes=classes, n=n, init=init, sampler=sampler, stop=stop, seed=seed, batch_size=batch_size, refill=refill, precision=precision, compile=compile,
        out=out, png=png, overwrite=overwrite, resume=resume, cache_dir=cache_dir, checkpoint=meta.get("weights_path") or checkpoint, progress=progress,
    )
