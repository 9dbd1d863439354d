"""Third-party networks as robustgen classifiers: safe file reading, normalisation inside, features + head.

A network from RobustBench, the `robustness` library, torchvision, timm, the
user's own code, TorchScript or torch.export is wrapped in `ForeignClassifier`, which takes images in [0, 1] (normalising inside
when the network does not) and exposes `features(x)` and `head` like robustgen's
own models, so `model(x) == model.head(model.features(x))`. The split is found by
taking the network's last `nn.Linear` with one output per class as the head and
checking on a probe batch that removing it leaves the penultimate features.

Files are read here, in one place: `check_readable` (missing, empty, an HTML page),
`read_weights_file` (weights_only, any device, zip or legacy format), `unwrap_state_dict`
(the layouts people publish) and `state_dict_of` (DataParallel / wrapper prefixes);
`check_finite` refuses NaN or infinite weights.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import Tensor, nn

from robustgen.kernel.errors import RobustgenError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRUST_FIX = "pass --trust-checkpoint if you trust where it came from (unpickling can run code from the file)"


# --------------------------------------------------------------------------- reading files


def sniff_file(path: str | Path) -> str:
    """What a file holds, from its first bytes: "zip" (torch.save since 1.6, TorchScript, .pt2), "pickle"
    (legacy torch.save), "safetensors", "html" (a failed download saved as .pt), "empty" or "other"."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "empty"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":  # pickle protocol 2+ opcode: what legacy torch.save writes first
        return "pickle"
    if Path(path).suffix == ".safetensors" or (len(head) > 8 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 1 << 28):
        return "safetensors"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<!--")) or b"<html" in head.lower():
        return "html"
    return "other"


def check_readable(path: str | Path, *, what: str = "weights file", fix: str = "check the path in the spec") -> Path:
    """The path of an existing, non-empty file that is not an HTML page; one line naming the problem otherwise."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise RobustgenError(f"{what} {path} is a directory: give the file itself")
    if not path.is_file():
        raise RobustgenError(f"{what} {path} not found: {fix}")
    kind = sniff_file(path)
    if kind == "empty":
        raise RobustgenError(f"{what} {path} is empty (0 bytes): download or copy it again")
    if kind == "html":
        raise RobustgenError(
            f"{path} is an HTML page, not a {what} (a failed download, e.g. Google Drive's 'cannot scan for viruses' page saved under the "
            "file's name): download the file itself again (for Google Drive: gdown, or the link with &confirm=t)"
        )
    return path


def quiet_torch_load(source, *, weights_only: bool = True, map_location="cpu"):
    """torch.load without its two-line UserWarning about a pickle protocol other than 2 (any plain pickle.dumps file):
    the read either works, or ends in robustgen's one-line error; the warning tells the user nothing to do."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        return torch.load(source, map_location=map_location, weights_only=weights_only)


def read_weights_file(path: str | Path, *, trust: bool = False) -> Any:
    """Load a third-party weights file: `torch.load(weights_only=True)` unless `trust`; .safetensors too.

    Zip and legacy (non-zip) torch.save files, saved on any device, are read onto the CPU.
    Only a file that is a pickle can need --trust-checkpoint, so only then is it suggested.
    """
    path = check_readable(path)
    kind = sniff_file(path)
    if kind == "safetensors":
        try:
            from safetensors.torch import load_file
        except ImportError:
            raise RobustgenError(f"{path} is a .safetensors file, which needs the safetensors package: pip install 'robustgen[zoo]'") from None
        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise RobustgenError(f"cannot read {path} as safetensors ({_first_line(exc)}): it is corrupt or not a weights file") from None
    not_weights = f"cannot read {path}: it is not a PyTorch weights file (neither a torch.save zip nor a pickle): check that the spec names the weights file"
    if kind == "other":
        raise RobustgenError(not_weights)
    if kind == "zip" and _is_program_archive(path):  # torch.load would hand a TorchScript archive to torch.jit.load
        raise RobustgenError(f"{path} is a TorchScript or torch.export archive, not a torch.save file: load it as torchscript:{path} or export:{path}")
    try:
        return quiet_torch_load(path, weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights only load failed" in str(exc).lower():
            raise RobustgenError(f"{path} holds pickled Python objects, not just tensors, so it is not loaded: {TRUST_FIX}") from None
        raise RobustgenError(f"cannot read {path} ({_first_line(exc)}): it is corrupt or not a PyTorch weights file") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, AttributeError, ModuleNotFoundError, TypeError) as exc:
        raise RobustgenError(f"cannot read {path} ({_first_line(exc)}): it is corrupt or not a PyTorch weights file") from None


def _is_program_archive(path: Path) -> bool:
    """A TorchScript (constants.pkl + code/) or torch.export (.pt2: models/*.json) zip rather than a torch.save one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/models/" in n and n.endswith(".json") for n in names)


WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params")
PREFIXES = ("module.", "model.")  # DataParallel / DistributedDataParallel, and Lightning-style wrappers


def unwrap_state_dict(payload: Any, *, source: str, depth: int = 3) -> dict[str, Tensor]:
    """The tensor dict inside a loaded file, as published: the payload itself, under one of `WRAPPER_KEYS`
    (nested up to `depth`, e.g. {"state_dict": {"model": {...}}}), or a list/tuple holding one state dict."""
    found = _find_state_dict(payload, depth)
    if found is None:
        if isinstance(payload, dict):
            what = f"a dict with keys {', '.join(map(str, list(payload)[:6]))}"
        elif isinstance(payload, (list, tuple)):
            what = f"a {type(payload).__name__} of {len(payload)} items"
        else:
            what = type(payload).__name__
        raise RobustgenError(f"{source} holds {what}, not a state dict: save the network's state_dict() (tensors by parameter name)")
    return dict(found)


def _find_state_dict(obj: Any, depth: int) -> dict | None:
    if _is_state_dict(obj):
        return obj
    if isinstance(obj, nn.Module):  # torch.save(model), read with --trust-checkpoint
        return obj.state_dict()
    if depth <= 0:
        return None
    if isinstance(obj, (list, tuple)) and len(obj) == 1:
        return _find_state_dict(obj[0], depth - 1)
    if isinstance(obj, dict):
        for key in WRAPPER_KEYS:
            found = _find_state_dict(obj.get(key), depth - 1)
            if found is not None:
                return found
    return None


def state_dict_of(payload: Any, *, source: str, expected: Sequence[str] | None = None) -> dict[str, Tensor]:
    """`unwrap_state_dict`, then the published prefixes removed (`prefix_variants`): the variant whose keys
    are `expected` (a network's own keys) when one is, else the one sharing most keys with it, else all stripped."""
    variants = prefix_variants(unwrap_state_dict(payload, source=source))
    if expected is None:
        return variants[-1]
    want = set(expected)
    exact = [v for v in variants if set(v) == want]
    return exact[0] if exact else max(reversed(variants), key=lambda v: len(want & set(v)))


def prefix_variants(state: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """`state` with each of `PREFIXES` stripped in turn, each only when every key carries it (the last is the most stripped)."""
    variants = [state]
    for prefix in PREFIXES:
        stripped = strip_prefix(variants[-1], prefix)
        if stripped is not variants[-1]:
            variants.append(stripped)
    return variants


def strip_prefix(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Drop `prefix` from every key when all keys carry it (DataParallel's `module.`); `state` itself otherwise."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and len(obj) > 0 and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


def load_fitting(net: nn.Module, state: dict[str, Tensor], *, source: str, arch: str, fix: str) -> None:
    """load_state_dict(strict) with one line naming what does not fit (the style of robustgen.kernel.models.checkpoint.load_weights)."""
    problem = fit_problem(net, state)
    if problem:
        raise RobustgenError(f"{source} does not fit {arch} ({problem}): {fix}")
    load_checked(net, state)


def load_checked(net: nn.Module, state: dict[str, Tensor]) -> None:
    """load_state_dict of a state `fit_problem` passed: the optional keys it lacks keep the network's own values."""
    own = net.state_dict()
    net.load_state_dict({**{k: own[k] for k in own if k not in state and _optional(k)}, **state})


def _optional(key: str) -> bool:
    """BatchNorm's step counter: files saved before torch 0.4.1 lack it, and evaluation never reads it."""
    return key.endswith("num_batches_tracked")


def fit_problem(net: nn.Module, state: dict[str, Tensor], *, shown: int = 3) -> str | None:
    """None when `state` fits `net` exactly (old files may lack BatchNorm's num_batches_tracked), else a
    short description naming the first few mismatches."""
    own = net.state_dict()
    missing = [k for k in own if k not in state and not _optional(k)]
    unexpected = [k for k in state if k not in own]
    mismatched = [k for k in own if k in state and own[k].shape != state[k].shape]
    detail = []
    for k in mismatched[:2]:
        detail.append(f"{k} is {tuple(state[k].shape)} in the file but {tuple(own[k].shape)} in the model")
    if missing:
        detail.append(f"{len(missing)} missing: {_few(missing, shown)}")
    if unexpected:
        detail.append(f"{len(unexpected)} unexpected: {_few(unexpected, shown)}")
    if missing and unexpected and _numbered(missing) and _numbered(unexpected):
        detail.append("both number nn.Sequential layers: build the Sequential with the file's layers at the same positions (activations count)")
    return "; ".join(detail) or None


def _few(keys: list[str], shown: int) -> str:
    return ", ".join(keys[:shown]) + (", ..." if len(keys) > shown else "")


def _numbered(keys: list[str]) -> bool:
    return all(k.split(".", 1)[0].isdigit() for k in keys)


def check_finite_weights(state_dict: Mapping[str, Any], *, source: str) -> None:
    """Refuse weights holding NaN or inf, with one line naming the first such tensor.

    A model with them evaluates to chance and samples black images without any other sign.
    Every robustgen checkpoint read goes through it (`read_checkpoint`); loaders of
    third-party files call it on the state dict they load. `source` starts the message.
    """
    bad = [name for name, value in state_dict.items()
           if isinstance(value, torch.Tensor) and not value.is_meta and (value.is_floating_point() or value.is_complex())
           and not bool(torch.isfinite(value).all())]
    if bad:
        more = f" and {len(bad) - 1} more tensor{'s' if len(bad) > 2 else ''}" if len(bad) > 1 else ""
        raise RobustgenError(
            f"{source} holds non-finite weights (NaN or inf in {bad[0]}{more}), which would evaluate to chance and sample black images: "
            "use a checkpoint from before the training diverged (e.g. best.pt), or get an undamaged copy of the file"
        )


def check_finite(net: nn.Module, *, source: str) -> None:
    """Refuse weights holding NaN or infinity (a damaged file or a diverged run), naming the first such tensor in the file's own names."""
    strip = "body." if isinstance(net, ForeignClassifier) else ""
    state = {(name[len(strip):] if strip and name.startswith(strip) else name): tensor for name, tensor in net.state_dict().items()}
    check_finite_weights(state, source=source)


# --------------------------------------------------------------------------- the wrapper


class ForeignClassifier(nn.Module):
    """[0, 1] images -> logits around a third-party network, with `features(x)` and `head` when separable.

    body: normalised images -> penultimate features (its head replaced by Identity), or -> logits
    when no head could be split off (`head` is None and `features` raises a RobustgenError).
    mean/std: per-channel normalisation applied before `body` (None: the body normalises itself).
    """

    def __init__(self, body: nn.Module, head: nn.Linear | None, *, num_classes: int, mean: Sequence[float] | None, std: Sequence[float] | None, name: str):
        super().__init__()
        self.body = body
        self.head = head
        self.num_classes = num_classes
        self.feature_dim = head.in_features if head is not None else None
        self.name = name
        self.normalises = mean is not None
        if mean is not None:
            self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
            self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def _normalise(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std if self.normalises else x

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features of images `x` in [0, 1]."""
        if self.head is None:
            raise RobustgenError(
                f"{self.name}: no linear head could be split off, so it has no penultimate features: use pixel space (--neighbour-space pixel), "
                "another feature extractor, or load the network from its code (python:FILE.py:FACTORY=WEIGHTS) or as an export: program"
            )
        return self.body(self._normalise(x))

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(self._normalise(x))
        if self.head is None:
            return out
        if out.dtype == torch.float32:
            return self.head(out)
        with torch.autocast(device_type=out.device.type, enabled=False):  # logits in fp32, as robustgen's Classifier
            return self.head(out.float())


def wrap_classifier(
    net: nn.Module,
    *,
    num_classes: int,
    input_shape: Sequence[int],
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    name: str,
    device: torch.device | str = "cpu",
) -> ForeignClassifier:
    """Split `net` into body + head (verified on a probe batch) and wrap it; returned in eval mode on `device`."""
    net = net.to(device).eval()
    head_name = last_linear(net, num_classes)
    head = None
    if head_name is not None:
        generator = torch.Generator().manual_seed(0)
        probe = torch.rand((2, *input_shape), generator=generator).to(device)
        if mean is not None:
            probe = (probe - torch.tensor(list(mean), device=device).view(1, -1, 1, 1)) / torch.tensor(list(std), device=device).view(1, -1, 1, 1)
        candidate = net.get_submodule(head_name)
        with torch.no_grad():
            reference = net(probe)
            _replace(net, head_name, nn.Identity())
            try:
                feats = net(probe)
                ok = feats.dim() == 2 and feats.shape[1] == candidate.in_features and torch.allclose(
                    candidate(feats), reference, rtol=1e-4, atol=1e-4 * max(1.0, float(reference.abs().max()))
                )
            except RuntimeError:
                ok = False
        if ok:
            head = candidate
        else:
            _replace(net, head_name, candidate)
    return ForeignClassifier(net, head, num_classes=num_classes, mean=mean, std=std, name=name).to(device).eval()


def last_linear(net: nn.Module, num_classes: int) -> str | None:
    """Name of the last registered nn.Linear with `num_classes` outputs (the usual classifier head)."""
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear) and m.out_features == num_classes and n]
    return names[-1] if names else None


def _replace(net: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = net.get_submodule(parent_name) if parent_name else net
    setattr(parent, child, module)


def find_normalisation(net: nn.Module) -> tuple[list[float] | None, list[float] | None]:
    """(mean, std) buffers a network normalises with inside (mu/sigma, mean/std, new_mean/new_std), if any."""
    buffers = dict(net.named_buffers())
    for mean_name, std_name in (("mu", "sigma"), ("mean", "std"), ("new_mean", "new_std")):
        for key, value in buffers.items():
            prefix = key[: -len(mean_name)]
            if key.endswith(mean_name) and (not prefix or prefix.endswith(".")) and prefix + std_name in buffers and value.numel() in (1, 3):
                return [round(float(v), 6) for v in value.flatten()], [round(float(v), 6) for v in buffers[prefix + std_name].flatten()]
    return None, None
