"""Draw the house: robustgen's packages as rooms on floors, imports between them as arrows (docs/images/house.png).

    python docs/draw_house.py                         # this checkout -> docs/images/house.png
    python docs/draw_house.py --repo DIR --out X.png  # another checkout (e.g. an older commit's `git worktree`)

Floors (CONVENTIONS.md): the kernel (robustgen.kernel, and the package root that re-exports it) at the bottom, training and samplers
above it, robustgen.app and robustgen.cli on top. An arrow is drawn from a room to every room it imports
(the number: import statements, lazy ones inside functions included); red arrows run up a floor or sideways
between training and samplers, which the house rules forbid. Measured from the code's own imports (ast).
"""

from __future__ import annotations

import argparse
import ast
from collections import Counter
from pathlib import Path

PACKAGES = ("robustgen", "training", "samplers")
FLOORS = {0: "kernel", 1: "training / samplers", 2: "app / CLI"}


def room_of(parts: tuple[str, ...]) -> str:
    """The room of a module, from its dotted name's parts."""
    top, sub = parts[0], parts[1] if len(parts) > 1 else ""
    if top == "robustgen":
        if sub in ("app", "cli", "__main__"):
            return "robustgen.cli" if sub != "app" else "robustgen.app"
        if sub == "kernel" and len(parts) > 2 and parts[2] in ("models", "data"):
            return f"robustgen.kernel.{parts[2]}"
        return "robustgen.kernel" if sub == "kernel" else "robustgen (root)" if sub in ("", "__init__", "moved") else f"robustgen.{sub} (no floor)"
    if top == "training":
        return "training.attacks" if sub == "attacks" else "training"
    return f"samplers.{sub}" if sub in ("scoring", "initializers") else "samplers"


def floor_of(room: str) -> int:
    if room.startswith(("training", "samplers")):
        return 1
    return 2 if room in ("robustgen.app", "robustgen.cli") else 0


def measure(repo: Path) -> tuple[Counter, Counter]:
    """(lines per room, import statements per (from room, to room))."""
    lines, arrows = Counter(), Counter()
    for package in PACKAGES:
        for path in sorted((repo / package).rglob("*.py")):
            parts = path.relative_to(repo).with_suffix("").parts
            here = room_of(parts)
            text = path.read_text()
            lines[here] += len(text.splitlines())
            for node in ast.walk(ast.parse(text)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
                for name in names:
                    if name.split(".")[0] in PACKAGES and room_of(tuple(name.split("."))) != here:
                        arrows[here, room_of(tuple(name.split(".")))] += 1
    return lines, arrows


def wrong(source: str, target: str) -> bool:
    """Against the house rules: upwards, or between training and samplers."""
    up = floor_of(target) > floor_of(source)
    across = floor_of(source) == floor_of(target) == 1 and source.split(".")[0] != target.split(".")[0]
    return up or across


def draw(lines: Counter, arrows: Counter, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    rooms = {floor: sorted(r for r in lines if floor_of(r) == floor) for floor in FLOORS}
    where = {}
    fig, ax = plt.subplots(figsize=(13, 7.5))
    for floor, names in rooms.items():
        y, width = 0.5 + 2.2 * floor, 12.0 / max(len(names), 1)
        ax.text(-0.2, y, FLOORS[floor], ha="right", va="center", fontsize=10, color="#556")
        for i, name in enumerate(names):
            x = i * width + width / 2
            where[name] = (x, y)
            ax.add_patch(FancyBboxPatch((x - width / 2 + 0.15, y - 0.45), width - 0.3, 0.9, boxstyle="round,pad=0.02",
                                        fc=("#dbe7f3", "#e7e0f3", "#f3e3e3")[floor], ec="#445"))
            ax.text(x, y + 0.1, name, ha="center", va="center", fontsize=9, weight="bold")
            ax.text(x, y - 0.22, f"{lines[name]:,} lines", ha="center", va="center", fontsize=8, color="#445")
    for (source, target), count in sorted(arrows.items()):
        (x0, y0), (x1, y1) = where[source], where[target]
        bad = wrong(source, target)
        bend = 0.25 if y0 == y1 else 0.08
        ax.add_patch(FancyArrowPatch((x0, y0 - 0.45 if y1 < y0 else y0 + 0.45), (x1, y1 + 0.45 if y1 < y0 else y1 - 0.45),
                                     connectionstyle=f"arc3,rad={bend}", arrowstyle="-|>", mutation_scale=10,
                                     color="crimson" if bad else "#8891a0", lw=1.6 if bad else 0.7, alpha=0.9))
        if bad:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2, str(count), color="crimson", fontsize=8, ha="center")
    against = sum(count for (s, t), count in arrows.items() if wrong(s, t))
    ax.set_title(f"{title}: {sum(lines.values()):,} library lines in {len(lines)} rooms; "
                 f"{against} import statements against the floors (red)", fontsize=11)
    ax.set_xlim(-2.2, 12.2)
    ax.set_ylim(-0.3, 5.4)
    ax.axis("off")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "images" / "house.png"))
    parser.add_argument("--title", default="robustgen")
    args = parser.parse_args()
    lines, arrows = measure(Path(args.repo))
    draw(lines, arrows, Path(args.out), args.title)
    for (source, target), count in sorted(arrows.items()):
        print(f"{'AGAINST ' if wrong(source, target) else ''}{source} -> {target}: {count}")


if __name__ == "__main__":
    main()
