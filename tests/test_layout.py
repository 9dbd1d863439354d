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


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


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


def test_no_library_function_or_module_is_too_long():
    too_long = []
    for path in _modules():
        text = path.read_text()
        rel = path.relative_to(REPO)
        if len(text.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{rel}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                too_long.append(f"{rel}:{node.lineno} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
