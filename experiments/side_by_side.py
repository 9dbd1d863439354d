"""Put the grids of a comparison's rows side by side, labelled, in one PNG (for the README).

    python experiments/side_by_side.py runs/score-samplers-cifar/seed0 \
        init-only-local-pca default santurkar real-test --out experiments/results/score-samplers-cifar/side-by-side.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

LABEL_HEIGHT, GAP, ZOOM = 22, 12, 2  # pixels; ZOOM makes 32x32 tiles readable on a web page


def side_by_side(grids: list[Path], labels: list[str]) -> Image.Image:
    images = [Image.open(path).convert("RGB") for path in grids]
    images = [im.resize((im.width * ZOOM, im.height * ZOOM), Image.NEAREST) for im in images]
    width = sum(im.width for im in images) + GAP * (len(images) - 1)
    canvas = Image.new("RGB", (width, max(im.height for im in images) + LABEL_HEIGHT), "white")
    draw, x = ImageDraw.Draw(canvas), 0
    for im, label in zip(images, labels):
        draw.text((x + 4, 4), label, fill="black")
        canvas.paste(im, (x, LABEL_HEIGHT))
        x += im.width + GAP
    return canvas


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("comparison", type=Path, help="a comparison dir (one run dir per row)")
    p.add_argument("rows", nargs="+", help="row dirs to show, left to right")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    grids = [args.comparison / row / "grid.png" for row in args.rows]
    missing = [str(g) for g in grids if not g.is_file()]
    if missing:
        raise SystemExit(f"error: no grid.png in {', '.join(missing)}: run the comparison first")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temp = args.out.with_suffix(".tmp.png")
    side_by_side(grids, args.rows).save(temp)
    temp.replace(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
