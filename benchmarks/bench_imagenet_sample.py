"""Sampling at 224x224 with a ResNet-50: peak resident memory and seconds per image at batch 8.

    OMP_NUM_THREADS=1 python benchmarks/bench_imagenet_sample.py                 # 3 classes x 30 images, 16 images, 10 steps
    python benchmarks/bench_imagenet_sample.py --per-class 300 --steps 60 --inits local-pca

What it builds (in --workdir, default a temporary folder): an ImageFolder of random
224x224 RGB PNGs (train/ and val/, class folders named by ImageNet index, so the
folder is relabelled into the model's 1,000 classes), and a randomly initialised
torchvision ResNet-50 saved as a state dict. Each init then runs in a fresh process
through the user's path, `sample_from_checkpoint("torchvision:resnet50=PATH",
data="folder:...")` (a LazyImageFolder read one class at a time):

1. fit: initialisers (local-pca: k-NN graph in the model's penultimate features;
   gaussian: class Gaussian at 56x56) and adaptive-stopping reference energies for
   every class, with --steps 0 (no gradient step), cached;
2. timed: n images with SGLD, --steps fixed steps, batch 8 (stop rule "fixed": a
   random model's energies say nothing about when to stop).

Printed per init: peak resident memory of the process (ru_maxrss: whole process,
Python + torch + weights + activations + data), resident memory after loading the
model and the folder listing, the fit time, and seconds per image and per gradient
evaluation of the timed run. Random weights cost the same as trained ones per step;
steps per image of a trained robust model under adaptive stopping are a separate
question (benchmarks/bench_sample.py).

Measured 2026-11-22 on this build machine (2-core Intel Xeon, CPU only, 1 torch thread,
load average ~6 from other jobs, so times are upper bounds), k=20, batch 8, SGLD:

    data (train imgs/class)  init       peak RSS   after load  after fit  fit      s/image (steps)  s/(image*step)
    3 classes x 30           local-pca  1,776 MB   940 MB      1,174 MB   30 s     3.38 (10)        0.34
    3 classes x 30           gaussian   1,731 MB   924 MB      1,022 MB   14 s     3.32 (10)        0.33
    1 class x 1,300          local-pca  1,908 MB   925 MB      1,516 MB   421 s    1.12 (2)         0.56
    1 class x 1,300          gaussian   1,844 MB   923 MB      1,844 MB   181 s    0.82 (2)         0.41

Python + torch + robustgen imported: 672 MB; + ResNet-50 and the folder listing: ~925 MB.
The rest is the ResNet-50 backward at batch 8 (~600-750 MB) and one class: a full
ImageNet-size class (1,300 images) adds ~130 MB to the peak (its uint8 images are
196 MB, held by local-pca while its chains are drawn; the Gaussian's peak is its fit).
At the default 60 steps that is ~20 s per image on this CPU. Fitting reads each class
twice (features for the k-NN graph, reference energies): ~0.16 s per image per pass.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

IMAGENET_CLASSES = ("1", "207", "980", "409", "530")  # folder names: ImageNet class indices (goldfish, golden retriever, volcano, ...)


def build_inputs(work: Path, *, classes: int, per_class: int, val_per_class: int, seed: int) -> tuple[Path, Path]:
    """(folder, weights): random 224x224 PNGs and a randomly initialised ResNet-50 state dict (reused if present)."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    folder, weights = work / f"imagenet-{classes}x{per_class}", work / "resnet50-random.pt"
    names = list(IMAGENET_CLASSES[:classes])
    if not (folder / "done").is_file():
        rng = np.random.default_rng(seed)
        for split, count in (("train", per_class), ("val", val_per_class)):
            for name in names:
                (folder / split / name).mkdir(parents=True, exist_ok=True)
                for i in range(count):
                    Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(folder / split / name / f"{i:04d}.png")
        (folder / "done").write_text("ok\n")
    if not weights.is_file():
        torch.manual_seed(seed)
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    return folder, weights


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def child(args) -> None:
    """One init in this (fresh) process: fit, then the timed run; prints one JSON line."""
    import torch

    from robustgen.kernel.models.sources import load_classifier
    from samplers import InitConfig, RunOptions, SamplerConfig, StopConfig
    from samplers.from_checkpoint import load_checkpoint_dataset
    from samplers.initializers import resolve_init
    from samplers import sample

    torch.set_num_threads(args.threads)
    spec, data_spec = f"torchvision:resnet50={args.weights}", f"folder:{args.folder}"
    rss_start = rss_mb()
    model, meta = load_classifier(spec, device="cpu", data=data_spec)
    data = load_checkpoint_dataset(meta, dataset=data_spec)  # read lazily, relabelled into the model's classes
    rss_loaded = rss_mb()
    init = InitConfig(kind=args.init, k=args.k)
    classes = sorted(set(data.y_train.tolist()))  # the folder's classes, as the model's indices
    common = dict(classes=classes, init=init, cache_dir=args.cache, progress=False)
    t0 = time.perf_counter()
    sample(model, data, run=RunOptions(n=len(classes), batch_size=args.batch_size), sampler=SamplerConfig(steps=0), stop=StopConfig(), **common)  # fit + references
    fit_s = time.perf_counter() - t0
    rss_fit = rss_mb()
    t0 = time.perf_counter()
    result = sample(model, data, run=RunOptions(n=args.n, batch_size=args.batch_size), sampler=SamplerConfig(steps=args.steps), stop=StopConfig(rule="fixed"), **common)
    seconds = time.perf_counter() - t0
    print(json.dumps({
        "init": args.init, "resolved": {k: getattr(resolve_init(init, data, model), k) for k in ("neighbour_space", "resolution")},
        "dataset": type(data).__name__, "images_decoded": getattr(data, "images_read", None),
        "n": args.n, "steps": args.steps, "batch_size": args.batch_size, "k": args.k, "threads": args.threads,
        "rss_start_mb": round(rss_start), "rss_after_load_mb": round(rss_loaded), "rss_after_fit_mb": round(rss_fit), "peak_rss_mb": round(rss_mb()),
        "fit_s": round(fit_s, 1), "sample_s": round(seconds, 1), "s_per_image": round(seconds / args.n, 2),
        "s_per_grad_eval_per_image": round(seconds / max(result.grad_evals, 1), 3), "grad_evals": result.grad_evals,
        "output_shape": list(result.images.shape),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", default=None, help="where the folder, weights and caches go (default: a temporary folder)")
    parser.add_argument("--classes", type=int, default=3, help="at most 5")
    parser.add_argument("--per-class", type=int, default=30, help="training images per class")
    parser.add_argument("--n", type=int, default=16, help="images in the timed run")
    parser.add_argument("--steps", type=int, default=10, help="SGLD steps per image in the timed run")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    parser.add_argument("--inits", default="local-pca,gaussian")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--init", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--folder", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--weights", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    with tempfile.TemporaryDirectory(prefix="bench-imagenet-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        folder, weights = build_inputs(work, classes=args.classes, per_class=args.per_class, val_per_class=2, seed=0)
        print(f"data: {folder} ({args.classes} classes x {args.per_class} train + 2 val random 224x224 PNGs); model: {weights} "
              f"(torchvision ResNet-50, random init, state dict); built in {time.perf_counter() - t0:.0f} s", flush=True)
        rows = []
        for init in args.inits.split(","):
            cache = work / f"cache-{init}-{time.time_ns()}"  # fresh: the fit is measured, not loaded
            command = [sys.executable, __file__, "--child", "--init", init, "--folder", str(folder), "--weights", str(weights), "--cache", str(cache),
                       "--n", str(args.n), "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--k", str(args.k), "--threads", str(args.threads)]
            out = subprocess.run(command, check=True, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(args.threads)})
            row = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(json.dumps(row), flush=True)
        print()
        print(f"{'init':10} {'peak RSS MB':>11} {'after load':>10} {'after fit':>9} {'fit s':>6} {'s/image':>8} {'s/(img*step)':>12}  (batch {args.batch_size}, {args.steps} steps, {args.threads} thread(s), CPU)")
        for r in rows:
            print(f"{r['init']:10} {r['peak_rss_mb']:>11} {r['rss_after_load_mb']:>10} {r['rss_after_fit_mb']:>9} {r['fit_s']:>6} {r['s_per_image']:>8} {r['s_per_grad_eval_per_image']:>12}")


if __name__ == "__main__":
    main()
