"""The sampler table of the README (issue 8): the default against its controls, on digits or the CIFAR-10 subset.

Rows: the default sampler (samplers/config.py), the previous default (local PCA with k=20, which copied its
training images), and every control of samplers.compare: init-only (`--steps 0`) per initialiser, the
Santurkar et al. 2019 baseline, real test images and real training images. 1,000 images per row
(balanced over the classes), scored with an *independent standard* classifier as extractor and judge,
against both splits (FID / precision / recall vs test are the fair columns for starts built from training
images), with memorisation (distance to the nearest training image vs real test images'). The default is
also run with --seeds and reported as mean +- std.

    python experiments/score_samplers.py --checkpoint runs/shared/cifar-robust/best.pt \\
        --judge runs/shared/cifar-standard/best.pt --out runs/score-samplers-cifar --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path

from samplers.compare import TABLE, compare, markdown
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.from_checkpoint import ModelSource

CONFIGS = {
    "default": (InitConfig(), SamplerConfig(), StopConfig()),
    "previous default (local-pca k=20 + sgld)": (InitConfig(k=20, scale=1.0), SamplerConfig(kind="sgld", steps=60, drift=0.01), StopConfig(quantile=0.2)),
}
TARGET_KEYS = ("grad_evals_per_image", "judge_accuracy", "fid", "fid_test", "precision_test", "recall_test",
               "nn_ratio_pixel", "near_copy_fraction_pixel", "nn_ratio_features", "near_copy_fraction_features", "data_copying_ct_features")


def targets(rows) -> list[str]:
    """Issue 8's four targets for the default, each with its measured margin."""
    by = {r.name: r.metrics for r in rows}
    d, init, base = by["default"], by[next(r.init_only for r in rows if r.name == "default")], by["santurkar"]
    real = by["real-test"]
    lines = [
        f"beats its init-only control: FID (test) {d['fid_test']:.3g} vs {init['fid_test']:.3g}, judge {d['judge_accuracy']:.3f} vs "
        f"{init['judge_accuracy']:.3f}, precision (test) {d['precision_test']:.3f} vs {init['precision_test']:.3f}",
        f"near-copies {d['near_copy_fraction_pixel']:.1%} (pixels) / {d['near_copy_fraction_features']:.1%} (features) vs real {real['near_copy_fraction_pixel']:.1%}; "
        f"NN ratio {d['nn_ratio_pixel']:.2f} / {d['nn_ratio_features']:.2f} (target >= 0.9)",
        f"recall (test) {d['recall_test']:.3f} = {d['recall_test'] / max(base['recall_test'], 1e-9):.1f}x Santurkar's {base['recall_test']:.3f} (target >= 5x)",
        f"gradient evaluations {d['grad_evals_per_image']:.1f} / image = {d['grad_evals_per_image'] / base['grad_evals_per_image']:.0%} of Santurkar's 60 (target <= 25%)",
    ]
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="the robust model to sample from")
    p.add_argument("--judge", required=True, help="an independent standard classifier: feature extractor and judge")
    p.add_argument("--data", default=None, help="dataset spec if not the checkpoint's own")
    p.add_argument("--out", required=True)
    p.add_argument("-n", "--num-images", dest="n", type=int, default=1000)
    p.add_argument("--seeds", default="0", help="seeds for the default's mean +- std (the table uses the first)")
    p.add_argument("--device", default="auto")
    args = p.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    source, run = ModelSource(dataset=args.data), RunOptions(n=args.n, seed=seeds[0], device=args.device)
    out = Path(args.out)
    rows = compare(args.checkpoint, CONFIGS, out=out / f"seed{seeds[0]}", features=args.judge, judge=args.judge, run=run, source=source)
    text = [markdown(rows), "", *[f"- {line}" for line in targets(rows)]]
    if len(seeds) > 1:
        runs = [rows] + [compare(args.checkpoint, {"default": CONFIGS["default"]}, out=out / f"seed{s}", features=args.judge, judge=args.judge,
                                 run=replace(run, seed=s), controls=False, source=source) for s in seeds[1:]]
        defaults = [next(r for r in rs if r.name == "default").metrics for rs in runs]
        titles = {key: title for title, key, _ in TABLE}
        text += ["", f"default over seeds {args.seeds} (mean +- std):"]
        text += [f"- {titles.get(k, k)}: {statistics.mean(d[k] for d in defaults):.4g} +- {statistics.stdev(d[k] for d in defaults):.2g}"
                 for k in TARGET_KEYS if all(d.get(k) is not None for d in defaults)]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    (out / "summary.json").write_text(json.dumps([r.to_dict() for r in rows], indent=2) + "\n")
    print("\n".join(text))


if __name__ == "__main__":
    main()
