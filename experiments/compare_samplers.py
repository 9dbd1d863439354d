"""Compare initialisers x samplers x stopping rules on one robust checkpoint; print a table, save grids.

    python experiments/compare_samplers.py \
        --checkpoint runs/shared/cifar-robust/best.pt --judge runs/shared/cifar-standard/best.pt \
        --n-per-class 100 --grid docs/images/cifar-compare.png

Quality and diversity are measured with an independently trained (non-robust)
classifier, the "judge":
  judge_acc   fraction of samples the judge assigns to the class they were drawn for (quality)
  pairwise    mean pairwise L2 distance of the judge's penultimate features within a class,
              averaged over classes (diversity; the real training images' value is printed too)
  fd          Frechet distance (samplers.scoring's, torch-fidelity's) between judge features of samples and
              of real training images (quality and diversity at once; NOT comparable with Inception FID)
  evals/img   gradient evaluations per image (the cost), steps = mean sampler steps per chain
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robustgen.kernel.models.checkpoint import load_checkpoint  # noqa: E402
from robustgen.kernel.tables import format_table  # noqa: E402
from robustgen.kernel.data import to_float  # noqa: E402
from samplers import InitConfig, RunOptions, SamplerConfig, StopConfig, grid_array, load_checkpoint_dataset, sample  # noqa: E402
from samplers.grid import save_png  # noqa: E402
from samplers.scoring.metrics import frechet_distance  # noqa: E402
from samplers.scoring.per_class import judge_accuracy  # noqa: E402

# name -> (init, sampler) ; each runs with stop fixed and adaptive
METHODS = {
    "gaussian+pgd": (InitConfig(kind="gaussian"), SamplerConfig(kind="pgd")),
    "pca+sgld": (InitConfig(kind="pca"), SamplerConfig(kind="sgld")),
    "local-pca+sgld": (InitConfig(kind="local-pca"), SamplerConfig(kind="sgld")),
}


@torch.no_grad()
def judge_features(judge, images: np.ndarray, *, batch_size: int = 500) -> np.ndarray:
    """The judge's penultimate features (float64), the space of `pairwise` and `fd`."""
    return np.concatenate([judge.features(to_float(images[start : start + batch_size], "cpu")).numpy()
                           for start in range(0, len(images), batch_size)]).astype(np.float64)


def judge_acc(judge, images: np.ndarray, labels: np.ndarray) -> float:
    """samplers.scoring's judge accuracy: the fraction the judge assigns to their intended class."""
    return judge_accuracy(judge, images=images, labels=labels, batch_size=500, checkpoint="judge", sha256="").accuracy


def mean_pairwise(features: np.ndarray, labels: np.ndarray) -> float:
    values = []
    for c in np.unique(labels):
        f = torch.from_numpy(features[labels == c])
        if len(f) > 1:
            d = torch.cdist(f, f)
            values.append(float(d.sum() / (len(f) * (len(f) - 1))))
    return float(np.mean(values))


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """The library's Frechet distance (torch-fidelity's, as `robustgen score` computes FID) between two feature sets."""
    return frechet_distance(torch.from_numpy(a), torch.from_numpy(b))


def parse_overrides(text: str | None) -> dict:
    """'steps=40,step_size=0.5' -> {"steps": 40, "step_size": 0.5}"""
    out = {}
    for item in filter(None, (text or "").split(",")):
        key, value = item.split("=")
        out[key.strip()] = None if value == "None" else (float(value) if "." in value or "e" in value else int(value))
    return out


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--judge", required=True, help="independently trained non-robust checkpoint on the same data")
    parser.add_argument("--n-per-class", type=int, default=100)
    parser.add_argument("--methods", default=",".join(METHODS), help="subset of " + ",".join(METHODS))
    parser.add_argument("--stops", default="fixed,adaptive")
    parser.add_argument("--sgld", default="", help="SamplerConfig overrides for sgld, e.g. steps=40,step_size=0.5")
    parser.add_argument("--pgd", default="", help="SamplerConfig overrides for pgd")
    parser.add_argument("--stop-options", default="", help="StopConfig overrides, e.g. quantile=0.3")
    parser.add_argument("--init-options", default="", help="InitConfig overrides for pca/local-pca, e.g. k=10,scale=1.0")
    parser.add_argument("--grid", default=None, help="write the side-by-side grids (one panel per row of the table) here")
    parser.add_argument("--grid-per-class", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=250)
    return parser.parse_args()


def _configs(args):
    """(name, init, sampler, stop) of every row, with the command line's overrides applied."""
    sgld_over, pgd_over = parse_overrides(args.sgld), parse_overrides(args.pgd)
    init_over, stop_over = parse_overrides(args.init_options), parse_overrides(args.stop_options)
    for name in args.methods.split(","):
        init, sampler = METHODS[name]
        if init.kind in ("pca", "local-pca"):
            init = InitConfig(**{**init.__dict__, **init_over})
        sampler = SamplerConfig(**{**sampler.__dict__, **(sgld_over if sampler.kind == "sgld" else pgd_over)})
        for rule in args.stops.split(","):
            yield name, init, sampler, StopConfig(**{**StopConfig(rule=rule).__dict__, **stop_over})


def _print_savings(rows: list[dict]) -> None:
    fixed = {r["method"]: r for r in rows if r["stop"] == "fixed"}
    for r in rows:
        if r["stop"] == "adaptive" and r["method"] in fixed:
            f = fixed[r["method"]]
            print(f"{r['method']}: adaptive stopping saves {100 * (1 - r['evals/img'] / f['evals/img']):.0f}% of gradient evaluations "
                  f"({f['evals/img']:.1f} -> {r['evals/img']:.1f} per image); judge accuracy {f['judge_acc']:.3f} -> {r['judge_acc']:.3f}, "
                  f"pairwise {f['pairwise']:.3f} -> {r['pairwise']:.3f}, fd {f['fd']:.2f} -> {r['fd']:.2f}")


def main() -> None:
    args = _arguments()
    model, meta = load_checkpoint(args.checkpoint)
    judge, _ = load_checkpoint(args.judge)
    data = load_checkpoint_dataset(meta)
    classes = list(range(data.num_classes))
    real_feats = judge_features(judge, data.x_train)  # samples are compared with the training images
    test_feats = judge_features(judge, data.x_test)  # the judge has not seen these: the real-data row
    rows = [{"method": "real test images", "stop": "-", "judge_acc": judge_acc(judge, data.x_test, data.y_test),
             "pairwise": mean_pairwise(test_feats, data.y_test), "fd": frechet(test_feats, real_feats), "evals/img": 0.0, "steps": 0.0, "seconds": 0.0}]
    panels = []
    for name, init, sampler, stop in _configs(args):
        t0 = time.perf_counter()
        result = sample(model, data, init=init, sampler=sampler, stop=stop, progress=False,
                        run=RunOptions(n=args.n_per_class * len(classes), seed=args.seed, batch_size=args.batch_size))
        seconds, feats = time.perf_counter() - t0, judge_features(judge, result.images)
        rows.append({"method": name, "stop": stop.rule, "judge_acc": judge_acc(judge, result.images, result.labels),
                     "pairwise": mean_pairwise(feats, result.labels), "fd": frechet(feats, real_feats),
                     "evals/img": result.grad_evals_per_image, "steps": float(result.steps.mean()), "seconds": seconds})
        r = rows[-1]
        print(f"{name:15s} {stop.rule:8s} judge_acc {r['judge_acc']:.3f}  pairwise {r['pairwise']:.3f}  fd {r['fd']:.3f}  "
              f"evals/img {r['evals/img']:.1f}  {seconds:.0f}s", flush=True)
        panels.append(grid_array(result.images, result.labels, classes=classes, per_row=args.grid_per_class, min_cell=16))
    print()
    print(format_table(rows, list(rows[0])))
    _print_savings(rows)
    if args.grid:
        gap = np.full((panels[0].shape[0], 8, 3), 255, dtype=np.uint8)
        picture = np.concatenate([p for panel in panels for p in (panel, gap)][:-1], axis=1)
        Path(args.grid).parent.mkdir(parents=True, exist_ok=True)
        save_png(args.grid, picture)
        order = ", ".join(f"{r['method']}/{r['stop']}" for r in rows[1:])
        print(f"grids ({order}, left to right): {args.grid}")

if __name__ == "__main__":
    main()
