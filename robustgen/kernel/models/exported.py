"""torch.export programs (`export:PATH.pt2`) as networks: checked before loading, batch-size free, head split off.

`torch.export.load` falls back to full unpickling for some archive members (pickled
tensors, opaque objects, sample inputs it cannot read with weights_only=True), and an
archive can carry AOTInductor native code. `check_archive` refuses all of these before
torch reads anything, unless the user trusts the file; what is left is JSON (the graph)
and raw tensor bytes.

`ProgramNet` runs the program's module: it ignores train()/eval() (an exported graph is
fixed in the mode it was exported in) and, for a program exported with a fixed batch
size, runs any batch in chunks of that size. `split_head` cuts a program whose output
is a linear layer into penultimate features and that layer, so an exported classifier
can serve as a feature extractor.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
import zipfile
from pathlib import Path

import torch
from torch import Tensor, nn

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.foreign import TRUST_FIX, check_readable, quiet_torch_load, sniff_file

EXPORT_HOWTO = "save it with torch.export.save(torch.export.export(model.eval(), (x,), dynamic_shapes=({0: torch.export.Dim('batch')},)), PATH)"


def load_program(path: str | Path, *, trust: bool) -> tuple["ProgramNet", tuple[int, int, int] | None]:
    """(network, input shape (C, H, W) the program was exported for, if static) of a .pt2 file."""
    path = check_readable(path, what="torch.export file")
    if sniff_file(path) != "zip":
        raise RobustgenError(f"{path} is not a torch.export archive (a .pt2 zip): {EXPORT_HOWTO}")
    if not trust:
        check_archive(path)
    try:
        with _quiet():
            program = torch.export.load(str(path))
    except Exception as exc:  # RuntimeError, KeyError, AssertionError, version mismatches: all mean "cannot read"
        raise RobustgenError(f"cannot read {path} as a torch.export program ({_first_line(exc)}): {EXPORT_HOWTO}") from None
    inputs = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in set(program.graph_signature.user_inputs)]
    values = [n.meta.get("val") for n in inputs]
    if len(inputs) != 1 or not isinstance(values[0], Tensor) or values[0].dim() != 4:
        raise RobustgenError(f"{path}: the program takes {len(inputs)} inputs, not one batch of NCHW images: export a classifier forward(x) -> logits")
    dims = list(values[0].shape)
    batch = dims[0] if isinstance(dims[0], int) else None
    shape = tuple(dims[1:]) if all(isinstance(d, int) for d in dims[1:]) else None
    return ProgramNet(program.module(), batch=batch), shape


def check_archive(path: Path) -> None:
    """Refuse an archive torch would partly unpickle or that carries native code (one line naming what)."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            if not any("/models/" in n and n.endswith(".json") for n in names):
                raise RobustgenError(_not_a_program(path, names))
            if any("/aotinductor/" in n or n.endswith((".so", ".dll", ".dylib")) for n in names):
                raise RobustgenError(f"{path} carries AOTInductor native code, which robustgen does not load: save the program itself, {EXPORT_HOWTO}")
            for name in names:
                if name.endswith("_config.json") and ("/weights/" in name or "/constants/" in name):
                    _check_payload_config(path, name, json.loads(archive.read(name)))
                elif name.endswith(".pt"):  # sample inputs, legacy weights: torch retries these with weights_only=False
                    try:
                        quiet_torch_load(io.BytesIO(archive.read(name)), weights_only=True)
                    except Exception:
                        raise RobustgenError(f"{path}: {name} inside it holds pickled Python objects, so it is not loaded: {TRUST_FIX}") from None
    except (zipfile.BadZipFile, ValueError, KeyError) as exc:
        raise RobustgenError(f"cannot read {path} as a torch.export archive ({_first_line(exc)}): it is damaged; {EXPORT_HOWTO}") from None


def _not_a_program(path: Path, names: list[str]) -> str:
    if any(n.endswith("/constants.pkl") for n in names):
        return f"{path} is a TorchScript archive, not a torch.export program: load it as torchscript:{path}"
    if any(n.endswith("/data.pkl") for n in names):
        return f"{path} is a torch.save file (a state dict), not a torch.export program: load it with your network's code, python:FILE.py:FACTORY={path}"
    return f"{path} is not a torch.export program of this torch version (no models/*.json; older formats are pickled): {EXPORT_HOWTO}"


def _check_payload_config(path: Path, name: str, config: dict) -> None:
    for fqn, entry in (config.get("config") or {}).items():
        pickled = bool(entry.get("use_pickle")) or str(entry.get("path_name", "")).startswith(("custom_obj", "opaque"))
        if pickled:
            raise RobustgenError(f"{path}: {fqn} is stored as a pickled object, not raw tensor bytes, so it is not loaded: {TRUST_FIX}")


@contextlib.contextmanager
def _quiet():
    """torch.export.load logs tracebacks and warns on its way to an exception: the user gets our one line instead."""
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:120] if text else type(exc).__name__


class ProgramNet(nn.Module):
    """An exported program's module as a network: fixed train/eval mode, any batch size."""

    def __init__(self, program: nn.Module, *, batch: int | None):
        super().__init__()
        self.program = program
        self.batch = batch  # the program's static batch size, None when it takes any

    def train(self, mode: bool = True) -> "ProgramNet":
        self.training = mode  # the graph keeps the mode it was exported in (its module refuses eval())
        return self

    def forward(self, x: Tensor) -> Tensor:
        if self.batch is None or x.shape[0] == self.batch:
            return self.program(x)
        outputs = []
        for start in range(0, x.shape[0], self.batch):
            chunk = x[start : start + self.batch]
            short = self.batch - chunk.shape[0]
            if short:  # the last chunk is padded to the program's batch size, and the padding dropped again
                chunk = torch.cat([chunk, chunk.new_zeros((short, *chunk.shape[1:]))])
            outputs.append(self.program(chunk)[: self.batch - short])
        return torch.cat(outputs)


def split_head(net: ProgramNet, probe: Tensor) -> tuple[ProgramNet, nn.Linear] | None:
    """(penultimate-features network, linear head) when the program ends in one linear layer, checked on `probe`."""
    graph_module = net.program
    graph = getattr(graph_module, "graph", None)
    if not isinstance(graph, torch.fx.Graph):
        return None
    output = next(n for n in graph.nodes if n.op == "output")
    results = output.args[0] if isinstance(output.args[0], (list, tuple)) else (output.args[0],)
    last = results[0] if len(results) == 1 else None
    if last is None or last.target is not torch.ops.aten.linear.default or len(last.args) < 2:
        return None
    weight, bias = (_attribute(graph_module, a) for a in (last.args[1], last.args[2] if len(last.args) > 2 else None))
    if weight is None or weight.dim() != 2:
        return None
    features_graph = copy.deepcopy(graph)
    cut = next(n for n in features_graph.nodes if n.name == last.name)
    features_output = next(n for n in features_graph.nodes if n.op == "output")
    features_output.args = (type(results)([cut.args[0]]),) if isinstance(output.args[0], (list, tuple)) else (cut.args[0],)
    body = torch.fx.GraphModule(graph_module, features_graph)  # shares the program's parameters
    body.graph.eliminate_dead_code()
    body.recompile()
    head = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).to(weight.device)
    head.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight)
    if bias is not None:
        head.bias = bias if isinstance(bias, nn.Parameter) else nn.Parameter(bias)
    features_net = ProgramNet(body, batch=net.batch)
    with torch.no_grad():
        reference, features = net(probe), features_net(probe)
        fits = features.dim() == 2 and torch.allclose(head(features), reference, rtol=1e-4, atol=1e-4 * max(1.0, float(reference.abs().max())))
    return (features_net, head) if fits else None


def _attribute(module: nn.Module, node) -> Tensor | None:
    if node is None or getattr(node, "op", None) != "get_attr":
        return None
    value = module
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, Tensor) else None
