"""The house rules the code can check about itself: floors import only downwards, files and functions stay small.

Floors: the kernel (`robustgen` without `app` and `cli`) <- `training`, `samplers` (never each other) <- `robustgen.app`,
`robustgen.cli`. CONVENTIONS.md: no function over ~60 lines, no module over 600.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("robustgen", "training", "samplers")
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600


SCRIPTS = ("experiments", "benchmarks")  # not packages, but code people read and extend: the same size limits, and no CLI imports


def _modules(folders=PACKAGES) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py"))


def _floor(module: str) -> str:
    """kernel, training, samplers or top (robustgen.app / robustgen.cli) for a dotted module name."""
    top = module.split(".")[0]
    if top in ("training", "samplers"):
        return top
    return "top" if module.startswith(("robustgen.app", "robustgen.cli", "robustgen.__main__")) else "kernel"


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
    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
    floor = _floor(module)
    wrong = sorted(name for name in _imports(ast.parse(path.read_text())) if _floor(name) not in ALLOWED[floor])
    assert not wrong, f"{module} ({floor}) imports {wrong}"


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
