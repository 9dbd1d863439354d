"""The user's own networks: `python:FILE.py:FACTORY=WEIGHTS`, `python:package.module:FACTORY=WEIGHTS`,
`torchscript:PATH` and `export:PATH.pt2`.

    python:tests/fixtures/third_party_cifar.py:resnet20=resnet20.th   import the file, call resnet20(), load the weights
    python:mylab.models:lenet5=lenet.pt                               the same from an importable module
    torchscript:model.ts                                              torch.jit.load
    export:model.pt2                                                  torch.export.load (checked first: no pickle)

The spec is parsed simply: TARGET:FACTORY=WEIGHTS, split at the first "=" and at the
last ":" before it; a TARGET ending in .py is a file, anything else a dotted module
name (importable, or under the current directory). Importing the user's code is the
user's explicit consent to run it; the WEIGHTS are still read with weights_only=True.
A file is imported under a private module name (`_robustgen_user_<stem>_<hash>`), never
under its own generic name, with its directory on sys.path only while it is imported
(so it can import its neighbours).

None of these knows its data: the classes and input size come from `data` (--data),
else from the network itself (its output width; the input size the program was
exported for, or the first common size the network accepts). Normalisation comes from
--mean/--std, else none: the network gets [0, 1] pixels as they are. Each inference is
said in one note.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.classes import MODEL_FLAGS, NormFlags, _meta, checked_normalisation, class_names, model_class_index
from robustgen.kernel.models.foreign import (
    ForeignClassifier,
    check_readable,
    load_fitting,
    read_weights_file,
    sniff_file,
    state_dict_of,
    wrap_classifier,
)

OWN_SOURCES = ("python", "torchscript", "export")
PYTHON_FORM = "python:FILE.py:FACTORY=WEIGHTS or python:package.module:FACTORY=WEIGHTS"
PROBE_SIZES = (32, 28, 64, 224, 96, 299, 16, 8, 128, 256, 384, 512)  # input sizes tried when nothing says (common first)
_IMPORTED: dict[tuple[str, int, int], Any] = {}  # (resolved file, mtime_ns, size) -> module: one import per file version


def load_own(source: str, rest: str, *, spec: str, device, trust: bool, mean, std, data: str | None, data_root, input_shape,
             flags: NormFlags = MODEL_FLAGS) -> tuple[nn.Module, dict]:
    """Load a python:/torchscript:/export: spec; returns (ForeignClassifier in eval mode on `device`, meta)."""
    known_shape, split = None, None
    if source == "python":
        net, arch, weights = _python_network(rest, spec=spec, trust=trust)
    elif source == "torchscript":
        net, arch, weights = _torchscript_network(rest)
    else:
        from robustgen.kernel.models.exported import load_program

        weights = Path(rest).expanduser()
        net, known_shape = load_program(weights, trust=trust)
        arch = f"torch.export program{f' (fixed batch {net.batch})' if net.batch else ''}"
    facts = _data_facts(data, data_root)
    shape, shape_note = _input_shape(net, spec=spec, facts=facts, given=input_shape, known=known_shape)
    num_classes = _output_width(net, shape, spec=spec)
    classes, class_note = _classes(num_classes, facts, spec=spec)
    norm, norm_note = _normalisation(mean, std, channels=shape[0], flags=flags)
    if source == "export":
        split = _export_split(net, shape, norm)
    model = _wrap(net, split, num_classes=num_classes, shape=shape, norm=norm, spec=spec, device=device)

    meta = _meta(
        source=source, spec=spec, arch=arch, dataset=facts["name"] if facts else None, classes=classes, input_shape=shape,
        mean=norm[0] if norm else None, std=norm[1] if norm else None, weights_path=weights, config={},
        notes=[f"{class_note}, {shape_note}", *([norm_note] if norm_note else [])],
    )
    meta["data_root"] = str(data_root) if data_root is not None and facts else None
    return model, meta


# --------------------------------------------------------------------------- python:


def parse_python_spec(rest: str) -> tuple[str, str, str]:
    """"FILE.py:FACTORY=WEIGHTS" -> (target, factory, weights): split at the first "=" and the last ":" before it."""
    head, sep, weights = rest.partition("=")
    target, colon, factory = head.rpartition(":")
    if not sep or not colon or not target or not factory or not weights:
        raise RobustgenError(f"python:{rest}: give {PYTHON_FORM}, e.g. python:models.py:resnet20=resnet20.th")
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", factory):
        raise RobustgenError(f"python:{rest}: factory {factory!r} is not a Python name: give {PYTHON_FORM}")
    return target, factory, weights


def _python_network(rest: str, *, spec: str, trust: bool) -> tuple[nn.Module, str, Path]:
    target, factory_name, weights = parse_python_spec(rest)
    weights = check_readable(weights, what="weights file", fix=f"give the weights after '=' in {spec}")
    module = import_target(target)
    factory = _factory(module, factory_name, target=target)
    net = _call_factory(factory, f"{target}:{factory_name}")
    payload = read_weights_file(weights, trust=trust)
    state = state_dict_of(payload, source=str(weights), expected=list(net.state_dict()))
    name = f"{target}:{factory_name}() ({type(net).__name__})"
    load_fitting(net, state, source=str(weights), arch=name,
                 fix=f"make {factory_name}() build the network the weights were saved from (same layer names and sizes)")
    return net.eval(), f"python:{target}:{factory_name} ({type(net).__name__})", weights


def import_target(target: str):
    """The module of a python: spec: a .py file (private module name) or an importable dotted module."""
    if target.endswith(".py"):
        return _import_file(Path(target).expanduser())
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", target):
        raise RobustgenError(f"python:{target}: {target!r} is neither a .py file nor a module name: give {PYTHON_FORM}")
    sys.path.append(str(Path.cwd()))  # last, so installed packages win; as `python -m` would find it
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and target.startswith(exc.name):
            raise RobustgenError(f"python:{target}: no module named {exc.name!r}: install the package, run from the directory that holds it, or give FILE.py") from None
        raise RobustgenError(f"cannot import {target}: it imports {exc.name!r}, which is not installed: pip install it") from None
    except Exception as exc:  # the module's own code failed
        raise RobustgenError(f"cannot import {target} ({_where(exc)}): fix the module") from None
    finally:
        sys.path.remove(str(Path.cwd()))


def _import_file(path: Path):
    if not path.is_file():
        raise RobustgenError(f"python: file {path} not found: give the path of the .py file that defines the network")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key in _IMPORTED:
        return _IMPORTED[key]
    digest = hashlib.sha256(key[0].encode()).hexdigest()[:10]
    name = f"_robustgen_user_{re.sub(r'[^0-9A-Za-z_]', '_', path.stem)}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # under its private name: dataclasses, TorchScript and inspect need the module registered
    sys.path.insert(0, str(path.resolve().parent))
    try:
        module_spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:
        del sys.modules[name]
        raise RobustgenError(f"cannot import {path}: it imports {exc.name!r}, which is not installed: pip install it or put it beside {path.name}") from None
    except BaseException as exc:  # SyntaxError, NameError, anything the file raises at import
        del sys.modules[name]
        if isinstance(exc, KeyboardInterrupt):
            raise
        raise RobustgenError(f"cannot import {path} ({_where(exc)}): fix the file") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    _IMPORTED[key] = module
    return module


def _where(exc: BaseException, *, locate: bool = True) -> str:
    """"NameError: name 'x' is not defined at models.py line 3" from an exception raised in user code
    (without the location when `locate` is False: errors raised inside torch, e.g. by a layer of the wrong size)."""
    text = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:160] if str(exc).strip() else ''}".rstrip(": ")
    if isinstance(exc, SyntaxError) or not locate:
        return text
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    return f"{text} at {Path(frames[-1].filename).name} line {frames[-1].lineno}" if frames else text


def _factory(module, name: str, *, target: str):
    value = module
    for part in name.split("."):
        value = getattr(value, part, None)
        if value is None:
            break
    if value is not None and callable(value):
        return value
    own = sorted(n for n, v in vars(module).items() if not n.startswith("_") and callable(v) and getattr(v, "__module__", None) == module.__name__)
    close = difflib.get_close_matches(name, own, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else (f"it defines {', '.join(own[:8])}" if own else "it defines no function or class")
    what = "no factory" if value is None else "a non-callable"
    raise RobustgenError(f"{target} has {what} {name!r}: {hint}")


def _call_factory(factory, name: str) -> nn.Module:
    try:
        net = factory()
    except TypeError as exc:
        try:
            inspect.signature(factory).bind()
        except (TypeError, ValueError):
            raise RobustgenError(f"{name}() needs arguments ({_where(exc, locate=False)}): give a factory that takes none, e.g. def build(): return Net(num_classes=10)") from None
        raise RobustgenError(f"{name}() failed ({_where(exc)}): fix the factory") from None
    except Exception as exc:
        raise RobustgenError(f"{name}() failed ({_where(exc)}): fix the factory") from None
    if not isinstance(net, nn.Module):
        raise RobustgenError(f"{name}() returned {type(net).__name__}, not a torch.nn.Module: make it return the network (e.g. return Net())")
    return net


# --------------------------------------------------------------------------- torchscript:


def _torchscript_network(rest: str) -> tuple[nn.Module, str, Path]:
    path = check_readable(rest, what="TorchScript file")
    howto = "save it with torch.jit.save(torch.jit.script(model), PATH) (or torch.jit.trace)"
    if sniff_file(path) != "zip":
        raise RobustgenError(f"{path} is not a TorchScript archive (a zip written by torch.jit.save): {howto}")
    try:
        with warnings.catch_warnings():  # torch.jit.load warns that TorchScript is deprecated: nothing the user must act on here
            warnings.simplefilter("ignore")
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # RuntimeError from the archive reader
        from robustgen.kernel.models.foreign import _is_program_archive

        if not _is_program_archive(path):
            raise RobustgenError(f"{path} is a torch.save file, not TorchScript: load weights with python:FILE.py:FACTORY={path}") from None
        if any("/models/" in n for n in _zip_names(path)):
            raise RobustgenError(f"{path} is a torch.export program, not TorchScript: load it as export:{path}") from None
        raise RobustgenError(f"cannot read {path} as TorchScript ({_where(exc)}): {howto}") from None
    return net.eval(), f"torchscript ({getattr(net, 'original_name', type(net).__name__)})", path


def _zip_names(path: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(path) as archive:
        return archive.namelist()


# --------------------------------------------------------------------------- what the network takes and gives


def _data_facts(data: str | None, data_root) -> dict | None:
    """name, image_shape and classes of --data (a large image folder is listed, not decoded)."""
    if not data:
        return None
    from robustgen.kernel.data import LazyImageFolder, load_dataset

    try:
        dataset = load_dataset(data, root=data_root, **({"lazy": True} if str(data).startswith("folder:") else {}))
    except RobustgenError as exc:
        raise RobustgenError(f"the model's classes and input size come from --data {data}, which cannot be loaded ({str(exc).rstrip('.')}): fix --data or --data-root") from None
    large = isinstance(dataset, LazyImageFolder) and dataset.image_size is None
    from robustgen.kernel.data import is_large

    return {"name": dataset.name, "image_shape": tuple(dataset.image_shape), "classes": list(dataset.classes),
            "resized": large and is_large(dataset.image_shape)}


def _input_shape(net: nn.Module, *, spec: str, facts, given, known) -> tuple[tuple[int, int, int], str]:
    if facts is not None:
        shape = facts["image_shape"]
        if facts["resized"]:  # a folder of large photos: the usual ImageNet evaluation crop, as for torchvision:
            shape = (shape[0], 224, 224)
        if known is not None and tuple(known) != tuple(shape):
            raise RobustgenError(f"{spec} was exported for {_hw(known)} images but {facts['name']} has {_hw(shape)}: pass --data with the images it takes, or export it for that size")
        _check_runs(net, shape, spec=spec, where=f"{facts['name']}'s")
        return tuple(shape), f"input {_hw(shape)}" + (" (images resized and centre-cropped)" if facts["resized"] else "")
    if given is not None:
        _check_runs(net, tuple(given), spec=spec, where="the")
        return tuple(int(v) for v in given), f"input {_hw(given)} (the images it is used on)"
    if known is not None:
        return tuple(known), f"input {_hw(known)} (the size the program was exported for)"
    for channels in _channel_guesses(net):
        for size in PROBE_SIZES:
            if _runs(net, (channels, size, size)):
                return (channels, size, size), f"input {_hw((channels, size, size))} guessed (the first common size it accepts: pass --data to be sure)"
    raise RobustgenError(f"{spec}: no common input size ({', '.join(map(str, PROBE_SIZES[:6]))}, ... pixels) runs through the network: pass --data with the images it takes")


def _check_runs(net, shape, *, spec: str, where: str) -> None:
    problem = _runs(net, shape, reason=True)
    if problem is not True:
        raise RobustgenError(f"{spec} cannot take {where} {_hw(shape)} images ({problem}): pass --data with the images the network was trained on")


def _runs(net: nn.Module, shape, *, reason: bool = False):
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, *shape))
    except Exception as exc:  # shape errors from any layer
        return _where(exc, locate=False) if reason else False
    ok = isinstance(out, torch.Tensor) and out.dim() == 2
    return True if ok else (f"it returns {type(out).__name__} {tuple(getattr(out, 'shape', ()))}, not (N, classes) logits" if reason else False)


def _channel_guesses(net: nn.Module) -> list[int]:
    first = next((m for m in net.modules() if hasattr(m, "in_channels") and isinstance(getattr(m, "in_channels"), int)), None)
    return [first.in_channels] if first is not None else [3, 1]


def _output_width(net: nn.Module, shape, *, spec: str) -> int:
    problem = _runs(net, shape, reason=True)
    if problem is not True:
        raise RobustgenError(f"{spec}: {problem}: the network must map images to one row of class logits each")
    with torch.no_grad():
        return int(net(torch.zeros(2, *shape)).shape[1])


def _classes(num_classes: int, facts, *, spec: str) -> tuple[list[str], str]:

    if facts is None:
        names = class_names(num_classes, None)
        named = "ImageNet's names" if num_classes == 1000 and names[0] != "0" else f"named 0..{num_classes - 1}"
        return names, f"{num_classes} classes from the model's output width ({named}; pass --data for the dataset's names)"
    data_classes = facts["classes"]
    if len(data_classes) == num_classes:
        return list(data_classes), f"{num_classes} classes from {facts['name']} ({_few(data_classes)})"
    names = class_names(num_classes, facts["name"])
    try:  # only a model whose classes have names (ImageNet's 1000) can be used on data holding some of them
        if names == [str(i) for i in range(num_classes)]:
            raise RobustgenError("the model's classes have no names")
        for name in data_classes:
            model_class_index(str(name), names, what=facts["name"])
    except RobustgenError:
        raise RobustgenError(
            f"{spec} outputs {num_classes} classes but {facts['name']} has {len(data_classes)} ({_few(data_classes)}): pass --data with the "
            f"model's {num_classes} classes (or folders named by class index), or the factory of the network trained on this data"
        ) from None
    return names, f"{num_classes} classes from the model's output width; {facts['name']} holds {len(data_classes)} of them"


def _normalisation(mean, std, *, channels: int, flags: NormFlags):
    if mean is None and std is None:
        return None, f"no {flags}: the network gets [0, 1] pixels as they are (pass the normalisation it was trained with, if any)"
    if mean is None or std is None:
        given, missing = (flags.mean, flags.std) if std is None else (flags.std, flags.mean)
        raise RobustgenError(f"{given} without {missing}: give both {flags.mean} and {flags.std} (one value per channel each), or neither")
    return checked_normalisation(mean, std, channels=channels, flags=flags), None


def _export_split(net, shape, norm):
    from robustgen.kernel.models.exported import split_head

    probe = torch.rand((2, *shape), generator=torch.Generator().manual_seed(0))
    if norm is not None:
        probe = (probe - torch.tensor(norm[0]).view(1, -1, 1, 1)) / torch.tensor(norm[1]).view(1, -1, 1, 1)
    return split_head(net, probe)


def _wrap(net, split, *, num_classes: int, shape, norm, spec: str, device) -> ForeignClassifier:
    mean, std = norm if norm else (None, None)
    if split is not None:
        body, head = split
        return ForeignClassifier(body, head, num_classes=num_classes, mean=mean, std=std, name=spec).to(device).eval()
    return wrap_classifier(net, num_classes=num_classes, input_shape=shape, mean=mean, std=std, name=spec, device=device)


def _hw(shape: Sequence[int]) -> str:
    c, h, w = (int(v) for v in shape)
    return f"{c}x{h}x{w}"


def _few(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join(map(str, list(names)[:shown])) + (", ..." if len(names) > shown else "")
