"""The distributed `tiny-imagenet-200/` layout, built from the real JPEGs in ../shared/data/tiny-imagenet-200_val10000.tar.

The tar holds the 10,000 validation images (50 per class, original bytes; 168 are grayscale),
val/val_annotations.txt, wnids.txt and words.txt. The layout robustgen's reader takes:

    tiny-imagenet-200/wnids.txt, words.txt
    tiny-imagenet-200/train/<wnid>/images/<wnid>_<i>.JPEG       (the first `train_per_class` images of each class)
    tiny-imagenet-200/val/images/val_<k>.JPEG + val_annotations.txt   (the rest)

Tests import `build_layout`; run as a script to build it for `robustgen train tiny-imagenet --data-root DEST`:

    python tests/tiny_imagenet.py DEST [--classes 200] [--train-per-class 40]
"""

from __future__ import annotations

import argparse
import tarfile
from pathlib import Path

TAR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tiny-imagenet-200_val10000.tar"
PREFIX = "tiny-imagenet-200/"


def build_layout(dest: Path, *, wnids: list[str] | None = None, classes: int | None = None, train_per_class: int = 40,
                 tar_path: Path = TAR) -> Path:
    """Write the layout for `wnids` (or the first `classes` of wnids.txt, or all 200) under dest; returns dest/tiny-imagenet-200."""
    base = Path(dest) / "tiny-imagenet-200"
    with tarfile.open(tar_path) as tar:
        read = lambda name: tar.extractfile(PREFIX + name).read()  # noqa: E731
        all_wnids = read("wnids.txt").decode().split()
        chosen = list(wnids) if wnids is not None else all_wnids[:classes]
        per_class: dict[str, list[str]] = {w: [] for w in chosen}
        for line in read("val/val_annotations.txt").decode().splitlines():
            name, wnid = line.split("\t")[:2]
            if wnid in per_class:
                per_class[wnid].append(name)
        (base / "val" / "images").mkdir(parents=True, exist_ok=True)
        (base / "wnids.txt").write_text("\n".join(chosen) + "\n")
        (base / "words.txt").write_bytes(read("words.txt"))
        annotations = []
        for wnid, names in per_class.items():
            (base / "train" / wnid / "images").mkdir(parents=True, exist_ok=True)
            for i, name in enumerate(names):
                data = read(f"val/images/{name}")
                if i < train_per_class:
                    (base / "train" / wnid / "images" / f"{wnid}_{i}.JPEG").write_bytes(data)
                else:
                    (base / "val" / "images" / name).write_bytes(data)
                    annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
        (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    return base


def grayscale_files(folder: Path) -> set[Path]:
    """The JPEGs under `folder` whose file is grayscale (mode L), read from their headers."""
    from PIL import Image

    gray = set()
    for path in folder.rglob("*.JPEG"):
        with Image.open(path) as img:
            if img.mode == "L":
                gray.add(path)
    return gray


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--train-per-class", type=int, default=40)
    args = parser.parse_args()
    print(build_layout(args.dest, classes=args.classes, train_per_class=args.train_per_class))
