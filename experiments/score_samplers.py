"""IS / FID / KID / precision / recall of the samplers on the CIFAR-10 subset (issue 4, must-show 2).

Samples each configuration into its own run dir (skipped if already there), scores it with
`samplers.score` against the training split, with a non-robust classifier as feature extractor and
judge, and prints a markdown table. Real test images are scored the same way: the best achievable.

    python experiments/score_samplers.py --checkpoint runs/shared/cifar-robust/best.pt \
        --extractor runs/shared/cifar-standard/best.pt --ref npz:../shared/data/cifar10-subset.npz

Numbers use a classifier extractor: comparable with each other, not with Inception numbers in papers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from robustgen.data import load_dataset
from robustgen.io import atomic_write_json
from samplers import InitConfig, SamplerConfig, StopConfig, sample_from_checkpoint, score
from samplers.scoring.inputs import write_image_set

# (name, init, sampler, stop rule): the Santurkar baseline, the class-wise PCA and the local PCA.
CONFIGS = (
    ("gaussian-pgd-fixed", "gaussian", "pgd", "fixed"),
    ("gaussian-pgd-adaptive", "gaussian", "pgd", "adaptive"),
    ("pca-sgld-adaptive", "pca", "sgld", "adaptive"),
    ("local-pca-sgld-fixed", "local-pca", "sgld", "fixed"),
    ("local-pca-sgld-adaptive", "local-pca", "sgld", "adaptive"),
)
COLUMNS = ("is_mean", "fid", "kid_mean", "precision", "recall", "judge_accuracy", "class_fid_mean")


def write_real_test(ref: str, out: Path) -> None:
    data = load_dataset(ref)
    write_image_set(out, data.x_test, data.y_test, classes=data.classes, meta={"dataset": ref, "split": "test"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="robust checkpoint to sample from")
    parser.add_argument("--extractor", required=True, help="non-robust checkpoint: feature extractor and judge")
    parser.add_argument("--ref", required=True, help="dataset spec of the reference (its training split)")
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--out", default="runs/score-samplers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the table rows here")
    args = parser.parse_args()

    out = Path(args.out)
    rows = []
    for name, init, kind, rule in CONFIGS:
        run = out / name
        if not (run / "samples.npz").exists():
            result = sample_from_checkpoint(
                args.checkpoint, n=10 * args.n_per_class, init=InitConfig(kind=init), sampler=SamplerConfig(kind=kind),
                stop=StopConfig(rule=rule), seed=args.seed, out=run, resume=run.exists(), dataset=args.ref,
            )
            print(f"{name}: {result.grad_evals_per_image:.1f} grad evals/image, {result.seconds:.0f} s")
        rows.append((name, run))
    write_real_test(args.ref, out / "real-test")
    rows.append(("real test images", out / "real-test"))

    smallest = min(len(np.load(run / "samples.npz")["labels"]) for _, run in rows)
    table = []
    for name, run in rows:
        result = score(run, ref=args.ref, metrics=("is", "fid", "kid", "prc"), features=args.extractor,
                       judge=args.extractor, kid_subset_size=min(1000, smallest // 2))
        result.save(run / "score.json")
        meta = json.loads((run / "meta.json").read_text())
        table.append({"samples": name, "evals/img": meta.get("grad_evals_per_image", "-"), **{k: result.metrics.get(k) for k in COLUMNS}})
    print(f"\n{result.label}\n")
    header = ["samples", "evals/img", *COLUMNS]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(f"{row[k]:.3g}" if isinstance(row[k], float) else str(row[k]) for k in header) + " |")
    if args.json:
        atomic_write_json(args.json, table)


if __name__ == "__main__":
    main()
