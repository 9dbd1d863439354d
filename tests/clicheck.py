"""Helpers for CLI tests: run `robustgen` in-process, check the one-line error contract, snapshot dirs.

Imported by test modules (`from clicheck import ...`); pytest puts tests/ on sys.path.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from click.testing import CliRunner, Result

from robustgen.cli import main


def runner() -> CliRunner:
    """A CliRunner that keeps stderr apart from stdout (click < 8.2 needs mix_stderr=False; 8.2+ always does)."""
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)
    return CliRunner()


def invoke(args, *, env: dict | None = None) -> Result:
    return runner().invoke(main, [str(a) for a in args], env=env)


def error_line(result: Result) -> str:
    """The single `Error: ...` line on stderr; fails the test if there is anything else."""
    assert "Traceback" not in result.output and "Traceback" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), f"expected one Error: line, got {lines!r}"
    return lines[0]


def assert_one_line_error(result: Result, *fragments: str, exit_code: int = 1) -> str:
    line = error_line(result)
    assert result.exit_code == exit_code, (result.exit_code, line)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    # every message names a fix: "...: <what to do>" (robustgen) or "; see robustgen ... --help" (click)
    assert ": " in line[len("Error: "):] or "--help" in line, line
    return line


def snapshot(*dirs: Path) -> dict[str, tuple[int, int]]:
    """Every file and dir under `dirs` with size and mtime: compare before/after to prove nothing was written."""
    state = {}
    for root in dirs:
        root = Path(root)
        if not root.exists():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                st = path.lstat()
                state[str(path)] = (st.st_size if path.is_file() else -1, st.st_mtime_ns if path.is_file() else 0)
    return state
