"""Model sources: one loader for robustgen checkpoints, third-party robust classifiers and the user's own networks.

    model, meta = load_classifier("runs/cifar10-fgsm-rs-der/best.pt", device="cpu")
    model, meta = load_classifier("robustbench:cifar10/Linf/Wong2020Fast", device="cpu")
    model, meta = load_classifier("robustness:imagenet_linf_4.pt", device="cpu")
    model, meta = load_classifier("torchvision:resnet50=weights.pt", device="cpu", mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    model, meta = load_classifier("timm:resnet50=weights.safetensors", device="cpu")
    model, meta = load_classifier("python:models.py:resnet20=resnet20.th", data="npz:cifar10.npz", mean=..., std=...)
    model, meta = load_classifier("torchscript:model.ts", data="cifar10")
    model, meta = load_classifier("export:model.pt2", data="cifar10")

Every source yields the same thing: a module in eval mode mapping [0, 1] NCHW
images to logits (normalisation inside), with `features(x)` and `head` where the
network's last linear layer can be split off, plus the metadata robustgen
checkpoints carry (arch, arch_args, dataset, classes, input_shape, mean, std,
config with the threat model's norm/eps when known) and: source, spec,
weights_path, weights_sha256, notes. Weights holding NaN or infinity are refused,
whatever the source.

Third-party files are read with `torch.load(weights_only=True)`; a file that needs
full unpickling is refused unless `trust_checkpoint=True`. Zoo files live under
`model_dir` ($ROBUSTGEN_MODEL_DIR, default <cache>/models, i.e. ~/.cache/robustgen/models).
python:/torchscript:/export: live in `robustgen.kernel.models.own_models`.
"""

from __future__ import annotations

import difflib
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from robustgen.kernel.models.checkpoint import load_checkpoint
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import default_cache_dir, sha256_file
from robustgen.kernel.models.classes import MODEL_FLAGS, NormFlags, _meta, checked_normalisation, class_names
from robustgen.kernel.models.foreign import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    check_finite,
    find_normalisation,
    last_linear,
    load_fitting,
    read_weights_file,
    state_dict_of,
    strip_prefix,
    wrap_classifier,
)

SOURCES = ("robustbench", "robustness", "torchvision", "timm", "python", "torchscript", "export")
SPEC_HELP = ("a robustgen checkpoint path, robustbench:DATASET/THREAT/NAME, robustness:PATH, torchvision:ARCH=PATH, timm:ARCH=PATH, "
             "python:FILE.py:FACTORY=WEIGHTS, python:package.module:FACTORY=WEIGHTS, torchscript:PATH or export:PATH.pt2")
OWN_NORMALISATION = ("torchvision", "timm", "python", "torchscript", "export")  # sources whose normalisation --mean/--std give
ZOO_INSTALL = "pip install 'robustgen[zoo]'"


def default_model_dir() -> Path:
    """Where zoo files live: $ROBUSTGEN_MODEL_DIR, else <robustgen cache>/models (~/.cache/robustgen/models)."""
    env = os.environ.get("ROBUSTGEN_MODEL_DIR")
    return Path(env).expanduser() if env else default_cache_dir() / "models"


def split_spec(spec: str) -> tuple[str | None, str]:
    """("robustbench", "cifar10/Linf/X") for a source spec, (None, path) for a robustgen checkpoint path."""
    spec = str(spec)
    match = re.match(r"^([A-Za-z][A-Za-z0-9_-]+):(.*)$", spec)
    if match and match.group(1).lower() in SOURCES:
        return match.group(1).lower(), match.group(2)
    if match and not Path(spec).expanduser().exists():
        raise RobustgenError(f"unknown model source {match.group(1)!r} in {spec!r}: give {SPEC_HELP}")
    return None, spec


@dataclass(frozen=True)
class ModelSpec:
    """A spec with the options that say how to read it, for APIs that load a model later (score's --features/--judge)."""

    spec: str
    mean: str | tuple[float, ...] | None = None  # normalisation of torchvision:/timm:/python:/torchscript:/export: networks
    std: str | tuple[float, ...] | None = None
    model_dir: str | None = None  # where zoo files live
    trust_checkpoint: bool = False
    flags: NormFlags = MODEL_FLAGS  # the flags mean/std came from (--judge-mean/--judge-std...): refusals name them
    option: str | None = None  # the flag that named this spec (--features, --judge): refusals name it
    check: str = "off"  # clean-accuracy check of a foreign model (models.sanity): "off", "warn" or "strict"

    def __str__(self) -> str:
        return self.spec


def load_classifier(
    spec: str | os.PathLike | ModelSpec,
    *,
    device: str | torch.device = "cpu",
    model_dir: str | os.PathLike | None = None,
    trust_checkpoint: bool = False,
    mean: str | Sequence[float] | None = None,
    std: str | Sequence[float] | None = None,
    data: str | None = None,
    data_root: str | os.PathLike | None = None,
    input_shape: Sequence[int] | None = None,
    download: bool = True,
    flags: NormFlags = MODEL_FLAGS,
    check: str = "off",
) -> tuple[nn.Module, dict[str, Any]]:
    """Load any supported classifier; returns (model in eval mode on `device`, meta).

    model_dir: where zoo files live (default `default_model_dir()`). mean/std: the
    normalisation of torchvision:/timm:/python:/torchscript:/export: networks ("0.485,0.456,0.406"
    or floats; torchvision:/timm: default to ImageNet's or timm's pretrained config, the others
    to none). data (+ data_root): the dataset spec recorded for sources that do not know their
    training data; python:/torchscript:/export: also take their classes and input size from it.
    input_shape (C, H, W): the images a python:/torchscript: network will see when no `data` is
    given (else the size is probed). download: fetch missing zoo files. flags: the options mean/std came from
    (refusals name them). check: "warn"/"strict" measures a foreign model's clean accuracy on `data` and warns or
    refuses near chance (`models.sanity`, the missing-normalisation trap). A ModelSpec carries its own
    mean/std/model_dir/trust_checkpoint/flags/check.
    """
    from robustgen.kernel.device import resolve_device
    from robustgen.kernel.models.sanity import AccuracyCheck, check_clean_accuracy

    option = None
    if isinstance(spec, ModelSpec):
        mean, std = (spec.mean, spec.std) if mean is None and std is None else (mean, std)
        model_dir = model_dir if model_dir is not None else spec.model_dir
        trust_checkpoint = trust_checkpoint or spec.trust_checkpoint
        spec, flags, option, check = spec.spec, spec.flags, spec.option, spec.check if check == "off" else check
    device = resolve_device(device) if isinstance(device, str) else device
    model_dir = Path(model_dir).expanduser() if model_dir is not None else default_model_dir()
    model, meta = _load_source(str(spec), device=device, model_dir=model_dir, trust=trust_checkpoint, mean=mean, std=std, data=data,
                               data_root=data_root, input_shape=input_shape, download=download, flags=flags)
    check_finite(model, source=str(spec))
    check_clean_accuracy(model, meta, check=AccuracyCheck(check, flags, option), normalisation_given=mean is not None or std is not None,
                         data=data, data_root=data_root)
    return model, meta


def _load_source(spec: str, *, device, model_dir: Path, trust: bool, mean, std, data, data_root, input_shape, download: bool,
                 flags: NormFlags) -> tuple[nn.Module, dict]:
    """The loader of the spec's source (no source: a robustgen checkpoint)."""
    source, rest = split_spec(spec)
    if source is not None and source not in OWN_NORMALISATION and (mean is not None or std is not None):
        _refuse_normalisation(spec, flags)
    if source is None:
        model, meta = _load_robustgen(Path(rest).expanduser(), spec=spec, device=device)  # a bare state dict: told to name its source
        if mean is not None or std is not None:
            _refuse_normalisation(spec, flags)
        return model, meta
    if source == "robustbench":
        return _load_robustbench(rest, spec=spec, device=device, model_dir=model_dir, trust=trust, download=download)
    if source == "robustness":
        return _load_robustness(rest, spec=spec, device=device, trust=trust, data=data)
    if source in ("torchvision", "timm"):
        return _load_state_dict(source, rest, spec=spec, device=device, trust=trust, mean=mean, std=std, data=data, flags=flags)
    from robustgen.kernel.models.own_models import load_own

    return load_own(source, rest, spec=spec, device=device, trust=trust, mean=mean, std=std, data=data, data_root=data_root,
                    input_shape=input_shape, flags=flags)


def _refuse_normalisation(spec, flags: NormFlags) -> None:
    raise RobustgenError(f"{spec} carries its own normalisation, so {flags} do not apply: drop them (they are for torchvision:, timm:, python:, torchscript: and export: networks)")


# --------------------------------------------------------------------------- robustgen checkpoints


def _load_robustgen(path: Path, *, spec: str, device) -> tuple[nn.Module, dict]:
    try:
        model, meta = load_checkpoint(path, device=device)
    except RobustgenError as exc:
        if str(exc).startswith(f"{path} is not a robustgen checkpoint"):
            raise RobustgenError(
                f"{path} is not a robustgen checkpoint (no robustgen metadata): for third-party weights name the source, "
                f"e.g. python:FILE.py:FACTORY={path} (your network's code), torchvision:resnet50={path}, timm:ARCH={path} or robustness:{path}"
            ) from None
        raise
    meta = {**meta, "source": "robustgen", "spec": spec, "weights_path": str(path), "weights_sha256": sha256_file(path), "notes": []}
    return model, meta


# --------------------------------------------------------------------------- RobustBench


def _load_robustbench(rest: str, *, spec: str, device, model_dir: Path, trust: bool, download: bool) -> tuple[nn.Module, dict]:
    from robustgen.kernel.models import robustbench_zoo as zoo

    entry = zoo.resolve(rest, model_dir=model_dir)
    net = zoo.load_network(entry, trust=trust, download=download)
    classes = class_names(zoo.NUM_CLASSES[entry.dataset], entry.dataset)
    shape = zoo.INPUT_SHAPES[entry.dataset]
    model = wrap_classifier(net, num_classes=len(classes), input_shape=shape, mean=None, std=None, name=spec, device=device)
    mean, std = find_normalisation(net)
    eps = zoo.THREAT_EPS.get((entry.dataset, entry.threat))
    config = {"norm": entry.threat, "eps": eps} if eps is not None else {}
    meta = _meta(
        source="robustbench", spec=spec, arch=f"robustbench:{entry.name}", dataset=entry.dataset, classes=classes, input_shape=shape,
        mean=mean, std=std, weights_path=entry.path, config=config,
        notes=[] if mean is not None else ["normalisation is built into the architecture"],
    )
    return model, meta


# --------------------------------------------------------------------------- robustness library


def _load_robustness(rest: str, *, spec: str, device, trust: bool, data: str | None) -> tuple[nn.Module, dict]:
    """MadryLab `robustness` checkpoint: {"model": {"module.model.*", "module.normalizer.new_mean", "module.attacker.*"}, "epoch", ...}."""
    arch, path = _arch_and_path(rest, source="robustness", default_arch="resnet50")
    payload = read_weights_file(path, trust=trust)
    raw = payload.get("model", payload.get("state_dict")) if isinstance(payload, dict) else None
    if not isinstance(raw, dict):
        keys = ", ".join(map(str, list(payload)[:6])) if isinstance(payload, dict) else type(payload).__name__
        raise RobustgenError(f"{path} is not a robustness-library checkpoint (no 'model' state dict; found {keys}): use torchvision:ARCH={path} for a plain state dict")
    state = strip_prefix(dict(raw), "module.")
    weights = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    if not weights:
        raise RobustgenError(f"{path} has no module.model.* weights, so it is not a robustness-library checkpoint: use torchvision:ARCH={path} for a plain state dict")
    notes = []
    if "normalizer.new_mean" in state and "normalizer.new_std" in state:
        mean = [round(float(v), 6) for v in state["normalizer.new_mean"].flatten()]
        std = [round(float(v), 6) for v in state["normalizer.new_std"].flatten()]
    else:
        mean, std = list(IMAGENET_MEAN), list(IMAGENET_STD)
        notes.append("no module.normalizer.* in the file: assumed ImageNet's mean/std")
    net, head = _torchvision_net(arch, weights, source=str(path))
    num_classes = net.get_submodule(head).out_features if head else int(weights.get("fc.weight", torch.zeros(1000, 1)).shape[0])
    load_fitting(net, weights, source=str(path), arch=f"torchvision's {arch}", fix=f"robustness:{arch}=PATH names another architecture, e.g. robustness:resnet18={path}")
    classes = class_names(num_classes, "imagenet" if num_classes == 1000 else data)
    shape = (3, 224, 224)
    model = wrap_classifier(net, num_classes=num_classes, input_shape=shape, mean=mean, std=std, name=spec, device=device)
    meta = _meta(
        source="robustness", spec=spec, arch=f"torchvision:{arch}", dataset=data or ("imagenet" if num_classes == 1000 else None),
        classes=classes, input_shape=shape, mean=mean, std=std, weights_path=path, config=_threat_from_name(path.name), notes=notes,
    )
    meta["epoch"] = payload.get("epoch") if isinstance(payload.get("epoch"), int) else None
    return model, meta


def _threat_from_name(name: str) -> dict:
    """MadryLab's file names carry the threat model: imagenet_linf_4.pt (4/255), imagenet_l2_3_0.pt (3.0)."""
    match = re.search(r"(linf|l2)_(\d+)(?:_(\d+))?", name.lower())
    if not match:
        return {}
    if match.group(1) == "linf":
        return {"norm": "Linf", "eps": int(match.group(2)) / 255}
    return {"norm": "L2", "eps": float(f"{match.group(2)}.{match.group(3) or 0}")}


# --------------------------------------------------------------------------- torchvision / timm state dicts


def _load_state_dict(source: str, rest: str, *, spec: str, device, trust: bool, mean, std, data: str | None, flags: NormFlags) -> tuple[nn.Module, dict]:
    arch, path = _arch_and_path(rest, source=source, default_arch=None)
    if source == "timm":
        _import_timm()  # say what to install before anything else
    state = state_dict_of(read_weights_file(path, trust=trust), source=str(path))
    notes = []
    if source == "torchvision":
        net, head = _torchvision_net(arch, state, source=str(path))
        shape, default_mean, default_std = _torchvision_input(arch), IMAGENET_MEAN, IMAGENET_STD
        fix = f"name the architecture the weights were saved from (torchvision:ARCH={path})"
    else:
        net, head, shape, default_mean, default_std = _timm_net(arch, state, source=str(path))
        fix = f"name the architecture the weights were saved from (timm:ARCH={path})"
    load_fitting(net, state, source=str(path), arch=f"{source}'s {arch}", fix=fix)
    if mean is None and std is None:
        notes.append(f"no {flags} given: assumed {'ImageNet' if tuple(default_mean) == IMAGENET_MEAN else arch + ' pretrained'} normalisation mean {list(default_mean)}, std {list(default_std)}")
    mean, std = checked_normalisation(mean if mean is not None else default_mean, std if std is not None else default_std, channels=shape[0], flags=flags)
    num_classes = net.get_submodule(head).out_features if head else _probe_classes(net, shape)
    classes = _torchvision_categories(arch, num_classes) if source == "torchvision" else None
    classes = classes or class_names(num_classes, "imagenet" if num_classes == 1000 else data)
    model = wrap_classifier(net, num_classes=num_classes, input_shape=shape, mean=mean, std=std, name=spec, device=device)
    meta = _meta(
        source=source, spec=spec, arch=f"{source}:{arch}", dataset=data or ("imagenet" if num_classes == 1000 else None), classes=classes,
        input_shape=shape, mean=mean, std=std, weights_path=path, config={}, notes=notes,
    )
    return model, meta


def _arch_and_path(rest: str, *, source: str, default_arch: str | None) -> tuple[str, Path]:
    arch, sep, path = rest.partition("=")
    if not sep or "/" in arch or "\\" in arch:
        if default_arch is None:
            raise RobustgenError(f"{source}:{rest}: give {source}:ARCH=PATH, e.g. {source}:resnet50=weights.pt")
        arch, path = default_arch, rest
    if not path:
        raise RobustgenError(f"{source}:{rest}: the weights path is empty: give {source}:ARCH=PATH")
    return arch, Path(path).expanduser()


def _torchvision_net(arch: str, state: dict, *, source: str) -> tuple[nn.Module, str | None]:
    """A torchvision classification architecture sized to the file's head; (net, name of its head)."""
    import torchvision.models as tvm

    names = tvm.list_models(module=tvm)
    if arch not in names:
        close = difflib.get_close_matches(arch, names, n=5, cutoff=0.5)
        raise RobustgenError(f"unknown torchvision architecture {arch!r}" + (f": did you mean {', '.join(close)}?" if close else f": choose one of torchvision.models.list_models(), e.g. {', '.join(names[:4])}"))
    kwargs = {"aux_logits": False, "init_weights": False} if arch in ("inception_v3", "googlenet") else {}
    net = tvm.get_model(arch, weights=None, **kwargs)
    head = last_linear(net, net_out_features(net))
    weight = state.get(f"{head}.weight") if head else None
    if weight is not None and weight.dim() == 2 and weight.shape[0] != net.get_submodule(head).out_features:
        net = tvm.get_model(arch, weights=None, num_classes=int(weight.shape[0]), **kwargs)
        head = last_linear(net, int(weight.shape[0]))
    return net, head


def net_out_features(net: nn.Module) -> int:
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    return linears[-1].out_features if linears else -1


def _torchvision_input(arch: str) -> tuple[int, int, int]:
    import torchvision.models as tvm

    try:
        crop = list(tvm.get_model_weights(arch))[0].transforms().crop_size
        return (3, int(crop[0]), int(crop[-1]))
    except Exception:  # no published weights for this architecture: the usual ImageNet crop
        return (3, 224, 224)


def _torchvision_categories(arch: str, num_classes: int) -> list[str] | None:
    """Class names from torchvision's weights metadata (shipped with torchvision, no download)."""
    import torchvision.models as tvm

    try:
        categories = list(tvm.get_model_weights(arch))[0].meta.get("categories")
    except Exception:
        return None
    return list(categories) if categories and len(categories) == num_classes else None


def _import_timm():
    try:
        with warnings.catch_warnings():  # timm's imports warn about torch deprecations the user cannot act on
            warnings.simplefilter("ignore")
            import timm
    except ImportError:
        raise RobustgenError(f"timm: specs need the timm package: {ZOO_INSTALL}") from None
    return timm


def _timm_net(arch: str, state: dict, *, source: str):
    timm = _import_timm()
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.6)
        raise RobustgenError(f"unknown timm architecture {arch!r}" + (f": did you mean {', '.join(close)}?" if close else ": see timm.list_models()"))
    net = timm.create_model(arch, pretrained=False)
    head = last_linear(net, net_out_features(net))
    weight = state.get(f"{head}.weight") if head else None
    if weight is not None and weight.dim() == 2 and weight.shape[0] != net.get_submodule(head).out_features:
        net = timm.create_model(arch, pretrained=False, num_classes=int(weight.shape[0]))
        head = last_linear(net, int(weight.shape[0]))
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    shape = tuple(int(v) for v in cfg.get("input_size", (3, 224, 224)))
    return net, head, shape, tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))


def _probe_classes(net: nn.Module, shape) -> int:
    with torch.no_grad():
        return int(net.eval()(torch.zeros(1, *shape)).shape[1])


# --------------------------------------------------------------------------- metadata and classes
