"""Shared by the training experiments: run a grid of `robustgen train` configs, resumably, in shards.

Each cell is one training run dir under --work (checkpoints stay there, never
committed). A finished cell is skipped, an interrupted one resumed, so the
grid can be stopped and restarted at will and split over processes:

    OMP_NUM_THREADS=1 python experiments/co_map.py --shard 0/2 &
    OMP_NUM_THREADS=1 python experiments/co_map.py --shard 1/2 &
    python experiments/co_map.py --summarise              # tables + figures from finished cells

Small result files (config.json, metrics.jsonl, monitor.jsonl, curves.png) are
copied to experiments/results/<experiment>/<cell>/ for the repository.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset.npz"
RESULT_FILES = ("config.json", "metrics.jsonl", "monitor.jsonl", "curves.png")


def grid_arguments(description: str, *, work: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=f"npz:{CIFAR_SUBSET}", help="dataset spec (default: the shared CIFAR-10 subset)")
    p.add_argument("--work", default=str(REPO / "runs" / work), help="run dirs (checkpoints stay here)")
    p.add_argument("--results", default=str(REPO / "experiments" / "results" / work), help="where small result files go")
    p.add_argument("--shard", default="0/1", help="i/n: run every n-th cell starting at i (for parallel processes)")
    p.add_argument("--summarise", action="store_true", help="only build the summary from finished cells")
    p.add_argument("--list", action="store_true", help="print the cells and exit")
    return p


def run_cells(cells: dict, args) -> None:
    """Train every cell of this shard that is not finished yet (resuming interrupted ones)."""
    from training import train
    from training.rundir import is_finished

    index, count = (int(v) for v in args.shard.split("/"))
    names = sorted(cells)[index::count]
    for i, name in enumerate(names):
        run_dir = Path(args.work) / name
        if is_finished(run_dir):
            continue
        started = time.perf_counter()
        print(f"[{i + 1}/{len(names)}] {name}", file=sys.stderr, flush=True)
        if (run_dir / "last.pt").is_file():
            train(resume=run_dir, progress=False)
        else:
            train(replace(cells[name], out=str(run_dir)), overwrite=True, progress=False)
        print(f"  {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
        copy_results(run_dir, Path(args.results) / name)


def list_or_train(grid: dict, args) -> bool:
    """--list: print the cells and return True (nothing more to do); else train this shard's unfinished cells
    (unless --summarise) and return False."""
    if args.list:
        print("\n".join(sorted(grid)))
        return True
    if not args.summarise:
        run_cells(grid, args)
    return False


def copy_results(run_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in RESULT_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)


def read_cell(results: Path, name: str) -> tuple[dict, list[dict], list[dict]] | None:
    """(config.json, metrics.jsonl records, monitor.jsonl records) of a finished cell, or None."""
    from training.rundir import read_training_run

    if not (results / name / "metrics.jsonl").is_file():
        return None
    run = read_training_run(results / name)
    return run.recorded, run.metrics, run.monitor


def markdown_table(rows: list[dict], columns: list[str]) -> str:
    def cell(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return "-" if v is None else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)
