"""Plain aligned text tables for console output (kernel: the CLI and the packages share it)."""

from __future__ import annotations


def format_table(rows: list[dict], columns: list[str]) -> str:
    """A plain aligned text table: a header, a rule, one line per row (missing cells are blank)."""
    cells = [[str(c) for c in columns]] + [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
