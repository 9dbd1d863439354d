"""RobustBench models (`robustbench:DATASET/THREAT/NAME`), built by the `robustbench` package.

Files live in RobustBench's own layout, `<model_dir>/<dataset>/<threat>/<name>.pt`,
so a folder filled by `robustbench.utils.load_model` works as it is. A file
already there is used without network access; a missing one is fetched with
RobustBench's own downloader (gdown), written atomically, or reported in one
line naming the path to put it at and the URL to get it from.

The weights are read with `torch.load(weights_only=True)` and mapped onto the
architecture exactly as `robustbench.utils.load_model` (1.1.1) does.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import io
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import atomic_path, download_dir
from robustgen.kernel.models.foreign import fit_problem, load_checked, read_weights_file, state_dict_of

INSTALL = "pip install 'robustgen[zoo]'"
GDRIVE_URL = "https://drive.google.com/uc?id={}"
# threat -> eps RobustBench evaluates at (pixel units), per dataset
THREAT_EPS = {("cifar10", "Linf"): 8 / 255, ("cifar100", "Linf"): 8 / 255, ("imagenet", "Linf"): 4 / 255, ("cifar10", "L2"): 0.5}
INPUT_SHAPES = {"cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "imagenet": (3, 224, 224)}
NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}
# robustbench.utils.load_model (1.1.1): ImageNet checkpoints whose keys get no "model." prefix, and Swin ones to re-key
_IMAGENET_NO_PREFIX = {
    "Singh2023Revisiting_ConvNeXt-T-ConvStem", "Singh2023Revisiting_ViT-B-ConvStem", "Singh2023Revisiting_ConvNeXt-S-ConvStem",
    "Singh2023Revisiting_ConvNeXt-B-ConvStem", "Singh2023Revisiting_ConvNeXt-L-ConvStem", "Peng2023Robust", "Chen2024Data_WRN_50_2",
    "Xu2024MIMIR_Swin-B", "Xu2024MIMIR_Swin-L",
}
_IMAGENET_SWIN = {"Liu2023Comprehensive_Swin-B", "Liu2023Comprehensive_Swin-L", "Mo2022When_Swin-B",
                  "RodriguezMunoz2024Characterizing_Swin-B", "RodriguezMunoz2024Characterizing_Swin-L"}


@dataclass(frozen=True)
class RobustBenchModel:
    dataset: str  # "cifar10" | "cifar100" | "imagenet"
    threat: str  # "Linf" | "L2" | "corruptions"
    name: str  # e.g. "Wong2020Fast"
    entry: dict  # robustbench's model_dicts entry: {"model": builder, "gdrive_id": ...}
    path: Path  # <model_dir>/<dataset>/<threat>/<name>.pt

    @property
    def gdrive_id(self) -> str | None:
        gid = self.entry.get("gdrive_id")
        return gid if isinstance(gid, str) else None

    @property
    def timm_name(self) -> str:
        """robustbench registers some models with timm under this name (weights on the Hugging Face hub)."""
        return f"{self.name.lower().replace('-', '_')}_{self.dataset.lower()}_{self.threat.lower()}"


def import_robustbench() -> SimpleNamespace:
    """robustbench's model zoo, enums and utils, or one line saying how to install it.

    robustbench 1.1.1's package __init__ also imports its dataset loaders, which need
    `pkg_resources` (gone from setuptools >= 81), and its benchmark, which imports the
    module `autoattack` (PyPI's pyautoattack installs as `pyautoattack`). The model zoo
    needs neither, so when that __init__ fails the zoo is imported without running it.
    """
    with warnings.catch_warnings():  # its imports (timm, torch.jit) warn about deprecations the user cannot act on
        warnings.simplefilter("ignore")
        try:
            import robustbench  # noqa: F401
        except ModuleNotFoundError as exc:
            if exc.name == "robustbench":
                raise RobustgenError(f"robustbench: model specs need the robustbench package: {INSTALL}") from None
            _install_package_stub("robustbench")
        except ImportError:
            _install_package_stub("robustbench")
        try:
            zoo = importlib.import_module("robustbench.model_zoo")
            enums = importlib.import_module("robustbench.model_zoo.enums")
            utils = importlib.import_module("robustbench.utils")
        except ImportError as exc:
            missing = getattr(exc, "name", None) or str(exc)
            raise RobustgenError(f"robustbench's model zoo cannot be imported (missing {missing}): {INSTALL}") from None
    return SimpleNamespace(model_dicts=zoo.model_dicts, BenchmarkDataset=enums.BenchmarkDataset, ThreatModel=enums.ThreatModel, utils=utils)


def _install_package_stub(name: str) -> None:
    """Register package `name` with its search path but without running its __init__."""
    spec = importlib.util.find_spec(name) if name not in sys.modules else sys.modules[name].__spec__
    if spec is None or spec.submodule_search_locations is None:
        raise RobustgenError(f"{name} is not installed: {INSTALL}")
    sys.modules[name] = importlib.util.module_from_spec(spec)  # module_from_spec does not execute the module


def resolve(spec_rest: str, *, model_dir: Path) -> RobustBenchModel:
    """`cifar10/Linf/Wong2020Fast` -> the zoo entry and its file path; one line for unknown names."""
    parts = spec_rest.strip("/").split("/")
    if len(parts) != 3 or not all(parts):
        raise RobustgenError(f"robustbench:{spec_rest}: give robustbench:DATASET/THREAT/NAME, e.g. robustbench:cifar10/Linf/Wong2020Fast")
    dataset, threat, name = parts
    rb = import_robustbench()
    datasets = {d.value.lower(): d for d in rb.BenchmarkDataset}
    threats = {t.value.lower(): t for t in rb.ThreatModel}
    ds = datasets.get(dataset.lower())
    if ds is None:
        raise RobustgenError(f"unknown RobustBench dataset {dataset!r}: choose one of {', '.join(sorted(datasets))}")
    tm = threats.get(threat.lower().replace("_3d", ""))
    zoo = rb.model_dicts[ds]
    if tm is None or tm not in zoo:
        raise RobustgenError(f"unknown RobustBench threat model {threat!r} for {ds.value}: choose one of {', '.join(t.value for t in zoo)}")
    models = zoo[tm]
    if name not in models:
        close = difflib.get_close_matches(name, list(models), n=5, cutoff=0.4) or [n for n in models if n.lower().startswith(name.lower()[:4])][:5]
        hint = f"close names: {', '.join(close)}" if close else f"e.g. {', '.join(list(models)[:3])}"
        raise RobustgenError(f"unknown RobustBench model {name!r} in {ds.value}/{tm.value} ({len(models)} models there; {hint})")
    return RobustBenchModel(ds.value, tm.value, name, models[name], Path(model_dir) / ds.value / tm.value / f"{name}.pt")


def load_network(model: RobustBenchModel, *, trust: bool, download: bool) -> nn.Module:
    """Build the architecture with robustbench and load the file into it (downloading it first if allowed)."""
    rb = import_robustbench()
    gid = model.entry.get("gdrive_id")
    if isinstance(gid, list):
        raise RobustgenError(f"RobustBench model {model.name} is an ensemble of {len(gid)} files, which robustgen does not load: pick a single-network model")
    if gid is None:
        return _load_timm_hosted(model, trust=trust, download=download)
    if not model.path.is_file():
        fetch(model, download=download)
    net = _build(model)
    payload = read_weights_file(model.path, trust=trust)
    state = _robustbench_state_dict(payload, model, rb.utils)
    safe_load = getattr(rb.utils, "_safe_load_state_dict", None)
    try:
        if safe_load is not None:
            safe_load(net, model.name, state, rb.BenchmarkDataset(model.dataset))
        else:
            net.load_state_dict(state)
    except RuntimeError as exc:
        problem = fit_problem(net, state) or str(exc).strip().splitlines()[0][:120]
        raise RobustgenError(
            f"{model.path} does not fit RobustBench's {model.name} ({problem}): it is not that model's file; "
            f"delete it and get {_where(model)}"
        ) from None
    return net.eval()


def _build(model: RobustBenchModel) -> nn.Module:
    try:
        return model.entry["model"]()
    except Exception as exc:  # builders of e.g. ImageNet "Standard" models fetch torchvision weights themselves
        raise RobustgenError(f"robustbench cannot build {model.name} here ({str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__})") from None


def _robustbench_state_dict(payload: Any, model: RobustBenchModel, utils) -> dict:
    """The key rewriting of robustbench.utils.load_model (1.1.1), applied to an already loaded payload."""
    if not isinstance(payload, dict):
        raise RobustgenError(f"{model.path} holds a {type(payload).__name__}, not RobustBench weights: delete it and get {_where(model)}")
    if "Kireev2021Effectiveness" in model.name or model.name == "Andriushchenko2020Understanding":
        payload = payload.get("last", payload)
    if isinstance(payload.get("state_dict"), dict):
        state = utils.rm_substr_from_state_dict(payload["state_dict"], "module.")
    else:
        state = utils.rm_substr_from_state_dict(payload, "module.")
    state = utils.rm_substr_from_state_dict(state, "model.")
    if model.dataset == "imagenet":
        if model.name in _IMAGENET_SWIN:
            with contextlib.suppress(Exception):
                from timm.models.swin_transformer import checkpoint_filter_fn

                state = checkpoint_filter_fn(state, _build(model).model)
        if model.name not in _IMAGENET_NO_PREFIX:
            state = utils.add_substr_to_state_dict(state, "model.")
    return dict(state)


def _where(model: RobustBenchModel) -> str:
    if model.gdrive_id:
        return f"{GDRIVE_URL.format(model.gdrive_id)} and save it as {model.path}"
    url = None
    with contextlib.suppress(Exception):
        import timm

        cfg = timm.models.get_pretrained_cfg(model.timm_name)
        url = cfg.url or (f"https://huggingface.co/{cfg.hf_hub_id}" if cfg.hf_hub_id else None)
    return f"{url or 'the weights of timm model ' + model.timm_name} and save it (or its state dict) as {model.path}"


def fetch(model: RobustBenchModel, *, download: bool) -> None:
    """Download the file with robustbench's downloader into its place (atomically), or say where it goes."""
    where = f"download {_where(model)} (or point --model-dir / $ROBUSTGEN_MODEL_DIR at a folder holding {model.dataset}/{model.threat}/{model.name}.pt)"
    if not download:
        raise RobustgenError(f"RobustBench model {model.name} is not at {model.path} and downloads are off: {where}")
    try:
        with download_dir(model.path.parent), atomic_path(model.path) as tmp:  # a failed download leaves no empty model dir
            try:
                gdrive_download(model.gdrive_id, tmp)
            except Exception as exc:  # requests/gdown/socket errors all mean the same to the user
                raise _DownloadFailed(_reason(exc)) from None
            if not tmp.is_file() or tmp.stat().st_size == 0:
                raise _DownloadFailed("the download produced no file")
    except _DownloadFailed as exc:
        raise RobustgenError(f"RobustBench model {model.name} is not at {model.path} and the download failed ({exc}): {where}") from None
    except RobustgenError as exc:  # the model dir is not writable
        raise RobustgenError(f"RobustBench model {model.name} is not at {model.path} and cannot be stored there ({exc}): {where}") from None


class _DownloadFailed(Exception):
    """A download error, kept apart from the OSErrors atomic_path reports as write errors."""


def _reason(exc: BaseException) -> str:
    """A short reason for a failed download: "no network" rather than a urllib3 retry message."""
    text = str(exc).strip()
    if any(s in text for s in ("Name or service not known", "Failed to resolve", "Temporary failure in name resolution", "nodename nor servname")):
        return f"no network: {type(exc).__name__}, the host name does not resolve"
    return text.splitlines()[0][:100] if text else type(exc).__name__


def gdrive_download(gdrive_id: str, path: Path) -> None:
    """robustbench's own downloader (gdown); its progress lines stay off stdout."""
    utils = import_robustbench().utils
    with contextlib.redirect_stdout(io.StringIO()):
        utils.download_gdrive_new(gdrive_id, path)


def _load_timm_hosted(model: RobustBenchModel, *, trust: bool, download: bool) -> nn.Module:
    """Models robustbench registers with timm (weights on the Hugging Face hub): the state dict lives at model.path."""
    import timm

    if not timm.is_model(model.timm_name):
        raise RobustgenError(f"RobustBench lists {model.name} without a download: robustgen cannot load it")
    if not model.path.is_file():
        if not download:
            raise RobustgenError(f"RobustBench model {model.name} is not at {model.path} and downloads are off: download {_where(model)}")
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # torch.hub's progress lines
                pretrained = timm.create_model(model.timm_name, num_classes=NUM_CLASSES[model.dataset], pretrained=True)
        except Exception as exc:
            raise RobustgenError(f"RobustBench model {model.name} is not at {model.path} and the download failed ({_reason(exc)}): download {_where(model)}") from None
        import torch

        with download_dir(model.path.parent), atomic_path(model.path) as tmp:
            torch.save(pretrained.state_dict(), tmp)
    net = timm.create_model(model.timm_name, num_classes=NUM_CLASSES[model.dataset], pretrained=False)
    state = state_dict_of(read_weights_file(model.path, trust=trust), source=str(model.path))
    problem = fit_problem(net, state)
    if problem:
        raise RobustgenError(f"{model.path} does not fit RobustBench's {model.name} ({problem}): delete it and get {_where(model)}")
    load_checked(net, state)
    return net.eval()
