"""Issue 24: does generative fine-tuning (DAT) make a robust classifier draw better? Before vs after, same sampler, same judge.

    python experiments/generative_finetune.py --models before=runs/g/digits-generation/best.pt,after=runs/g/digits-dat/best.pt \
        --data digits --judge runs/g/digits-judge/best.pt --out runs/dat-digits -n 300

For each model: samplers.compare with the default sampler, its init-only control and the classifier-only
(Santurkar et al. 2019) baseline, scored by a standard judge that is never the sampled model (accuracy;
FID, precision, recall against the test split in the judge's features). Writes <out>/summary.md with one
row per model and sampler, and <out>/<model>/ with the grids; --side-by-side PATH puts the init-only,
default and classifier-only grids of every model in one PNG (rows of models).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from robustgen.kernel.models.sources import ModelSpec
from samplers.compare import compare
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.from_checkpoint import ModelSource

ROWS = ("init-only-local-pca", "default", "santurkar")
COLUMNS = ("judge_accuracy", "fid_test", "precision_test", "recall_test")


def judge_spec(spec: str, mean: str | None, std: str | None):
    return ModelSpec(spec, mean=mean, std=std) if mean else spec


def run(models: dict[str, str], *, data: str, judge, out: Path, n: int, seed: int, device: str) -> list[dict]:
    table = []
    for name, checkpoint in models.items():
        rows = compare(checkpoint, {"default": (InitConfig(), SamplerConfig(), StopConfig())}, out=out / name, features=judge, judge=judge,
                       run=RunOptions(n=n, seed=seed, device=device), source=ModelSource(dataset=data))
        by = {r.name: r.metrics for r in rows}
        init = by[next(r.init_only for r in rows if r.name == "default")]
        for row in rows:
            if row.kind in ("sampler", "init-only", "baseline"):
                entry = {"model": name, "samples": row.name, **{c: row.metrics.get(c) for c in COLUMNS}}
                entry["fid_test / init-only"] = row.metrics["fid_test"] / init["fid_test"] if row.kind == "sampler" else None
                table.append(entry)
    return table


def markdown(table: list[dict]) -> str:
    head = ["model", "samples", *COLUMNS, "fid_test / init-only"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in table:
        cells = [f"{entry[h]:.3f}" if isinstance(entry[h], float) else ("-" if entry[h] is None else str(entry[h])) for h in head]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def side_by_side(out: Path, models: list[str], path: Path) -> None:
    from PIL import Image, ImageDraw

    grids = [[Image.open(out / m / row / "grid.png").convert("RGB") for row in ROWS] for m in models]
    zoom = max(1, 256 // grids[0][0].width)
    grids = [[g.resize((g.width * zoom, g.height * zoom), Image.NEAREST) for g in row] for row in grids]
    w, h, gap, label = grids[0][0].width, grids[0][0].height, 10, 18
    canvas = Image.new("RGB", (len(ROWS) * (w + gap), len(models) * (h + label + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (model, row) in enumerate(zip(models, grids)):
        for j, grid in enumerate(row):
            x, y = j * (w + gap), i * (h + label + gap)
            draw.text((x + 2, y + 2), f"{model}: {ROWS[j]}", fill="black")
            canvas.paste(grid, (x, y + label))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", required=True, help="name=checkpoint,name=checkpoint (before first)")
    p.add_argument("--data", required=True)
    p.add_argument("--judge", required=True)
    p.add_argument("--judge-mean", default=None)
    p.add_argument("--judge-std", default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--side-by-side", type=Path, default=None)
    p.add_argument("-n", "--num-images", dest="n", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    models = dict(item.split("=", 1) for item in args.models.split(","))
    table = run(models, data=args.data, judge=judge_spec(args.judge, args.judge_mean, args.judge_std), out=args.out, n=args.n,
                seed=args.seed, device=args.device)
    text = markdown(table)
    (args.out / "summary.md").write_text(text + "\n")
    (args.out / "summary.json").write_text(json.dumps(table, indent=2) + "\n")
    print(text)
    if args.side_by_side:
        side_by_side(args.out, list(models), args.side_by_side)


if __name__ == "__main__":
    main()
