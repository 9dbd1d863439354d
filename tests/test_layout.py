"""The house rules the code can check about itself: floors import only downwards, files and functions stay small.

Floors: `robustgen.kernel` <- `training`, `samplers` (never each other) <- `robustgen.app`, `robustgen.cli`; inside the
kernel, base modules <- `robustgen.kernel.data` <- `robustgen.kernel.models`. The package root `robustgen` only re-exports
kernel names. CONVENTIONS.md: no function over ~60 lines, no module over 600.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("robustgen", "training", "samplers")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600


SCRIPTS = ("experiments", "benchmarks")  # not packages, but code people read and extend: the same size limits, and no CLI imports


def _dotted(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules(folders=PACKAGES) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


ROOT = ("robustgen", "robustgen.moved")  # the package root: kernel re-exports and the old paths of moved modules
TOP = ("robustgen.app", "robustgen.cli", "robustgen.__main__")
KERNEL_ORDER = {"robustgen.kernel.data": 1, "robustgen.kernel.models": 2}  # every other kernel module: 0 (the base)


def _within(module: str, prefixes) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _floor(module: str) -> str:
    """kernel, training, samplers or top (robustgen.app / robustgen.cli) for a dotted module name; '?' if it has none."""
    top = module.split(".")[0]
    if top in ("training", "samplers"):
        return top
    if _within(module, TOP):
        return "top"
    return "kernel" if _within(module, ("robustgen.kernel",)) or module in ROOT else "?"


def _kernel_rank(module: str) -> int:
    return next((rank for prefix, rank in KERNEL_ORDER.items() if _within(module, (prefix,))), 0)


ALLOWED = {"kernel": {"kernel"}, "training": {"kernel", "training"}, "samplers": {"kernel", "samplers"},
           "top": {"kernel", "training", "samplers", "top"}}


def _imports(tree: ast.AST) -> set[str]:
    found = set()
    for node in ast.walk(tree):  # lazy imports inside functions count too
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_module_imports_only_its_own_floor_or_below(path):
    module = _dotted(path)
    floor = _floor(module)
    from robustgen.moved import new_name

    imported = _imports(ast.parse(path.read_text()))
    old = sorted(name for name in imported if new_name(name))
    wrong = sorted(name for name in imported - set(old) if _floor(name) not in ALLOWED[floor])
    assert not wrong, f"{module} ({floor}) imports {wrong}"
    assert not old, f"{module} imports {old} by an old path: import {[new_name(n) for n in old]}"


def test_every_robustgen_module_sits_on_a_floor():
    """The tree shows the floors: robustgen/ holds kernel/, app/, cli/ and the root's two files, nothing between."""
    homeless = [str(p.relative_to(REPO)) for p in _modules(("robustgen",)) if _floor(_dotted(p)) == "?"]
    assert not homeless, f"{homeless}: put each in robustgen/kernel (below training and samplers) or robustgen/app, robustgen/cli (above)"


@pytest.mark.parametrize("path", _modules(("robustgen/kernel",)), ids=lambda p: str(p.relative_to(REPO)))
def test_kernel_modules_import_only_their_own_inner_floor_or_below(path):
    module = _dotted(path)
    imported = [name for name in _imports(ast.parse(path.read_text())) if _within(name, ("robustgen.kernel",))]
    wrong = sorted(name for name in imported if _kernel_rank(name) > _kernel_rank(module))
    assert not wrong, f"{module} (kernel floor {_kernel_rank(module)}) imports {wrong} from above it"


def test_kernel_order_catches_an_upward_import():
    assert _kernel_rank("robustgen.kernel.models.sources") > _kernel_rank("robustgen.kernel.data.pool") > _kernel_rank("robustgen.kernel.io")
    assert _floor("robustgen.tables") == "?" and _floor("robustgen") == "kernel" and _floor("robustgen.cli.sample") == "top"


def function_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """A function's length with its decorators (a click command's options are part of what a reader reads)."""
    return node.end_lineno - min([node.lineno, *(d.lineno for d in node.decorator_list)]) + 1


def test_no_library_script_function_or_module_is_too_long():
    too_long = []
    for path in _modules(PACKAGES + SCRIPTS):
        text = path.read_text()
        rel = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and function_lines(node) > MAX_FUNCTION_LINES:
                too_long.append(f"{rel}:{node.lineno} {node.name}: {function_lines(node)} lines")
    assert not too_long, too_long


def test_decorators_count_towards_a_functions_length():
    tree = ast.parse("@a\n@b(\n    1,\n)\ndef f():\n    return 1\n")
    assert function_lines(tree.body[0]) == 6


@pytest.mark.parametrize("path", _modules(SCRIPTS), ids=lambda p: str(p.relative_to(REPO)))
def test_experiments_and_benchmarks_use_the_api_not_the_cli(path):
    wrong = sorted(name for name in _imports(ast.parse(path.read_text())) if name.startswith("robustgen.cli"))
    assert not wrong, f"{path.relative_to(REPO)} imports {wrong}: call the API the command calls"


@pytest.mark.parametrize("path", _modules(SCRIPTS), ids=lambda p: str(p.relative_to(REPO)))
def test_experiments_and_benchmarks_import(path):
    """A script that names an API which has since moved or gone fails here, not on the day someone reruns it."""
    import importlib.util
    import warnings

    name = f"_script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = sys.modules[name] = importlib.util.module_from_spec(spec)  # dataclasses look their module up there
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)  # and none of them uses an old import path
            spec.loader.exec_module(module)
    finally:
        del sys.modules[name]


@pytest.mark.parametrize("old, new", [("robustgen.models.sources", "robustgen.kernel.models.sources"), ("robustgen.io", "robustgen.kernel.io"),
                                      ("robustgen.checkpoint", "robustgen.kernel.models.checkpoint"), ("training.evaluate", "training.pgd_accuracy"),
                                      ("samplers.scoring.report", "samplers.scoring.console")])
def test_old_import_paths_are_the_moved_modules_with_a_warning(old, new):
    import importlib
    import warnings

    for name in [n for n in sys.modules if n == old or n.startswith(old + ".") or n == old.rsplit(".", 1)[0] != "robustgen"]:
        sys.modules.pop(name)  # only alias entries: the real modules stay loaded
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        aliased = importlib.import_module(old)
    assert aliased is importlib.import_module(new) and aliased.__spec__.name == new
    assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught)


@pytest.mark.parametrize("path", _modules(SCRIPTS), ids=lambda p: str(p.relative_to(REPO)))
def test_every_name_a_script_imports_lazily_exists(path):
    """Imports inside functions run only when someone reruns the experiment: each named module and name must exist now."""
    import importlib
    import warnings

    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.split(".")[0] in PACKAGES:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name} (line {node.lineno})" for a in node.names if a.name != "*" and not hasattr(module, a.name)]
    assert not missing, f"{path.relative_to(REPO)} imports names that no longer exist: {missing}"
