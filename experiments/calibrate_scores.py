"""Calibration of the scores: what real data and pure noise score, so users can read their own numbers.

    OMP_NUM_THREADS=1 python experiments/calibrate_scores.py --ref digits --features runs/shared/digits-standard/best.pt
    OMP_NUM_THREADS=1 python experiments/calibrate_scores.py --ref npz:../shared/data/cifar10-subset.npz \\
        --features runs/shared/cifar-standard/best.pt

Rows (all against the reference's train split, through samplers.scoring.score):
  real test   the held-out real images: the best a sampler can hope for at this sample size
  noise       uniform noise images, as many as the test split: what "nothing learned" scores
IS on the real train split is printed too (IS needs no reference), and IS over one
split (the 10-split mean is biased low when each split holds few images). A classifier
extractor's numbers are not comparable with Inception-based numbers in papers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="digits")
    parser.add_argument("--features", required=True, help="robustgen checkpoint (or 'inception')")
    parser.add_argument("--metrics", default="is,fid,kid,prc")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--json", dest="json_out", default=None, help="also write the rows here")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from robustgen.kernel.data import load_dataset
    from samplers.scoring import KEY_F_SCORE, KEY_FID, KEY_IS_MEAN, KEY_IS_STD, KEY_KID_MEAN, KEY_PRECISION, KEY_RECALL, score

    data = load_dataset(args.ref, root=args.data_root)
    rng = np.random.default_rng(args.seed)
    noise = rng.integers(0, 256, size=data.x_test.shape, dtype=np.uint8)
    noise_labels = rng.integers(0, data.num_classes, size=len(noise))
    cache = Path(tempfile.mkdtemp(prefix="calibrate-"))
    common = dict(ref=args.ref, data_root=args.data_root, features=args.features, metrics=args.metrics, cache_dir=cache)

    rows = []
    for name, images, labels in (("real test", data.x_test, data.y_test), ("uniform noise", noise, noise_labels)):
        result = score(images, labels=labels, **common)
        class_fids = [c.fid for c in result.per_class if c.fid is not None]
        rows.append({
            "samples": name, "n": result.n_samples,
            "IS": result.metrics.get(KEY_IS_MEAN), "IS std": result.metrics.get(KEY_IS_STD),
            "FID": result.metrics.get(KEY_FID), "mean class FID": float(np.mean(class_fids)) if class_fids else None,
            "KID": result.metrics.get(KEY_KID_MEAN), "precision": result.metrics.get(KEY_PRECISION),
            "recall": result.metrics.get(KEY_RECALL), "F": result.metrics.get(KEY_F_SCORE),
            "IS 1 split": _is_one_split(score, images, args.features),
            "warnings": list(result.warnings),
        })
    train_is = score(data.x_train, features=args.features, metrics="is", cache=False, per_class=False)
    rows.append({"samples": "real train (IS only)", "n": train_is.n_samples, "IS": train_is.metrics[KEY_IS_MEAN],
                 "IS std": train_is.metrics[KEY_IS_STD], "IS 1 split": _is_one_split(score, data.x_train, args.features),
                 "warnings": list(train_is.warnings)})

    print(f"reference: {args.ref} train ({len(data.x_train)} images), {data.num_classes} classes")
    print(result.label)
    cols = ["samples", "n", "IS", "IS 1 split", "FID", "mean class FID", "KID", "precision", "recall"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        cells = []
        for c in cols:
            v = row.get(c)
            cells.append("-" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v)))
        print("| " + " | ".join(cells) + " |")
    for row in rows:
        for w in row["warnings"]:
            print(f"warning ({row['samples']}): {w}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"ref": args.ref, "features": str(args.features), "label": result.label, "rows": rows}, indent=2))


def _is_one_split(score, images, features) -> float:
    """IS over all images at once: with 10 splits of few images each, the per-split class
    marginal is itself noisy, which biases IS low (36 images per split on the digits test set)."""
    from samplers.scoring import KEY_IS_MEAN

    return score(images, features=features, metrics="is", is_splits=1, cache=False, per_class=False).metrics[KEY_IS_MEAN]


if __name__ == "__main__":
    main()
