"""`sample_from_checkpoint`: load a model (any source) and the data it was trained on, then `sample`.

The model comes from `robustgen.kernel.models.sources.load_classifier`: a robustgen
checkpoint or a robustbench:/robustness:/torchvision:/timm:/python:/torchscript:/export: spec. The data is
needed to fit the initialiser and the reference energies; it is found from the
model's meta (dataset, data_root) unless overridden, and relabelled into the
model's classes when it holds only some of them (e.g. 2 ImageNet classes).
A folder of large images stays a LazyImageFolder (read one class at a time),
its images brought to the model's input size (ImageNet's evaluation crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robustgen.kernel.data import ImageDataset
from robustgen.kernel import distributed
from robustgen.kernel.io import safe_name
from robustgen.kernel.models.model_data import SAMPLING, model_dataset
from robustgen.kernel.models.sanity import flush_warnings
from robustgen.kernel.models.sources import load_classifier
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
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


@dataclass(frozen=True)
class ModelSource:
    """Which model and data a door samples from (the rest of load_classifier's and model_dataset's arguments)."""

    dataset: str | None = None  # dataset spec (None: the model's own); also the scores' reference
    data_root: str | None = None  # where that dataset lives (None: as recorded)
    model_dir: str | None = None  # where zoo files live
    trust_checkpoint: bool = False  # allow fully unpickling a third-party file
    mean: str | None = None  # input normalisation of python:/torchscript:/export: models ("M1,M2,M3")
    std: str | None = None
    check: str = "off"  # clean-accuracy check of a foreign model (robustgen.kernel.models.sanity): off | warn | strict (the CLI warns; --strict)

    def loader(self) -> dict:
        """load_classifier's keyword arguments (besides the device)."""
        return {"data": self.dataset, "data_root": self.data_root, "model_dir": self.model_dir, "trust_checkpoint": self.trust_checkpoint,
                "mean": self.mean, "std": self.std, "check": self.check}


def load_for_sampling(checkpoint, *, source: ModelSource, run: RunOptions, classes=None, log: Callable[[str], None] | None = None):
    """(model on this rank's device, meta, its dataset, the classes to sample): the one loading sequence of every sampling door."""
    dist = distributed.setup(run.device)  # under torchrun: this rank's device (cuda:LOCAL_RANK or cpu)
    model, meta = load_classifier(checkpoint, device=dist.device, **source.loader())
    for note in meta.get("notes", []) if log is not None else ():
        log(f"note: {note}")  # what the loader inferred (classes, input size, normalisation)
    data = load_checkpoint_dataset(meta, dataset=source.dataset, data_root=source.data_root)  # a subset of the model's classes comes relabelled
    present = np.unique(data.y_train)
    if not classes and len(present) < data.num_classes:
        classes = [int(c) for c in present]  # the subset of the model's classes the data holds
    for c in classes or ():
        data.class_index(c)  # validates before anything runs
    flush_warnings()  # model and data are read and checked: a near-chance warning now, before the chains run
    return model, meta, data, list(classes) if classes else None


def sample_from_checkpoint(
    checkpoint: str | Path,
    *,
    classes: Sequence[int | str] | None = None,
    init: InitConfig | None = None,
    sampler: SamplerConfig | None = None,
    stop: StopConfig | None = None,
    calibration: bool = True,
    run: RunOptions | None = None,
    source: ModelSource = ModelSource(),
    out: str | Path | None = None,
    png: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    cache_dir: str | Path | None | bool = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    check: str = "off",
) -> SampleResult:
    """Sample from a classifier spec (see `load_classifier`); `out=None` writes to runs/samples-<dataset>[-<class>].

    init/sampler/stop: None = the model's calibrated config (`robustgen calibrate`; samplers.calibrated) when there is one and
    `calibration`, else the dataclass defaults. run: how the chains run (RunOptions; None = its defaults). source: which
    model and data (ModelSource). log: receives one line per note of the loader (what it inferred about a
    python:/torchscript:/export: model) and the calibration used.
    """
    run = run if run is not None else RunOptions()
    run.validate()
    model, meta, data, classes = load_for_sampling(checkpoint, source=source, run=run, classes=classes, log=log)
    init, sampler, stop = chain_configs(model, checkpoint, (init, sampler, stop), calibration=calibration, cache_dir=cache_dir, log=log)
    if out is None:
        out = default_out(data.name, [data.classes[data.class_index(c)] for c in classes] if classes else None)
    return sample(model, data, classes=classes, init=init, sampler=sampler, stop=stop, run=run, out=out, png=png, overwrite=overwrite,
                  resume=resume, cache_dir=cache_dir, checkpoint=meta.get("weights_path") or checkpoint, progress=progress)


def chain_configs(model, checkpoint, given: tuple, *, calibration: bool, cache_dir=None, log: Callable[[str], None] | None = None) -> tuple:
    """(init, sampler, stop): each given config as is; each None from the model's calibration if any (and `calibration`),
    else the dataclass default. Says in one line (to `log`) which calibration it used."""
    if all(c is not None for c in given):
        return given
    base = (InitConfig(), SamplerConfig(), StopConfig())
    if calibration:
        from robustgen.kernel.models import model_fingerprint
        from samplers.calibrated import calibrated_configs, describe, find_calibration

        found = find_calibration(model_fingerprint(model), checkpoint=checkpoint, cache_dir=cache_dir or None)
        if found is not None:
            base = calibrated_configs(found[0])
            if log is not None:
                log(f"note: calibrated chain ({describe(found[0])}) from {found[1]}; --no-calibration ignores it")
    return tuple(g if g is not None else b for g, b in zip(given, base))
