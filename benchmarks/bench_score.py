"""Benchmark: scoring 10,000 32x32 RGB images with a width-16 PreActResNet-18 as the feature extractor.

    OMP_NUM_THREADS=1 python benchmarks/bench_score.py [--features CKPT] [--threads N]

Reference: the CIFAR-10 subset's train split (../shared/data/cifar10-subset.npz, 5,085
images) when present, else 5,000 random images. Samples: 10,000 images (the subset's
test images repeated with pixel noise, or random). Reports wall time for
  1. IS+FID with per-class FID, cold reference cache (reference pass included),
  2. the same with the reference cached (the usual case: many sample sets, one reference),
  3. IS+FID+KID+PRC, cached reference, no per-class.
The extractor is the given checkpoint or a randomly initialised width-16 network
(timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=None, help="robustgen checkpoint (default: random width-16 PreActResNet-18)")
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice / OMP_NUM_THREADS)")
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from robustgen.kernel.models.checkpoint import model_meta, save_checkpoint
    from robustgen.kernel.data import ImageDataset
    from robustgen.kernel.models import build_model
    from samplers.scoring import KEY_FID, KEY_IS_MEAN, score

    work = Path(tempfile.mkdtemp(prefix="bench-score-"))
    rng = np.random.default_rng(0)
    if CIFAR_SUBSET.is_file():
        ref_spec = f"npz:{CIFAR_SUBSET}"
        with np.load(CIFAR_SUBSET) as z:
            base, base_y = z["x_test"], z["y_test"].astype(np.int64)
    else:
        x = rng.integers(0, 256, (5000, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(0, 10, 5000)
        np.savez(work / "ref.npz", x_train=x, y_train=y, x_test=x[:1000], y_test=y[:1000])
        ref_spec = f"npz:{work / 'ref.npz'}"
        base, base_y = x[:1000], y[:1000]
    idx = np.arange(args.n) % len(base)
    noise = rng.integers(-8, 9, (args.n, 32, 32, 3))
    samples = np.clip(base[idx].astype(np.int16) + noise, 0, 255).astype(np.uint8)
    labels = base_y[idx]

    if args.features is None:
        torch.manual_seed(0)
        arch_args = dict(num_classes=10, in_channels=3, width=16, mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
        model = build_model("preact-resnet18", **arch_args)
        stub = ImageDataset("cifar10", samples[:2], labels[:2], samples[:2], labels[:2], tuple(map(str, range(10))), crop_padding=4, flip=True)
        features = work / "width16.pt"
        save_checkpoint(features, model=model, meta=model_meta(arch="preact-resnet18", arch_args=arch_args, dataset=stub))
    else:
        features = Path(args.features)

    cache = work / "cache"
    print(f"{args.n} samples of 32x32x3 vs {ref_spec} train; extractor {features}; torch threads {torch.get_num_threads()}")
    runs = [
        ("is+fid, per-class FID, cold reference cache", dict(metrics=("is", "fid"), per_class=True)),
        ("is+fid, per-class FID, cached reference", dict(metrics=("is", "fid"), per_class=True)),
        ("is+fid+kid+prc, cached reference, no per-class", dict(metrics=("is", "fid", "kid", "prc"), per_class=False)),
    ]
    print("   wall    CPU (user+sys of this process; wall > CPU means other processes held the cores)")
    for title, kw in runs:
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        result = score(samples, labels=labels, ref=ref_spec, features=features, cache_dir=cache, batch_size=args.batch_size, device="cpu", **kw)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        print(f"{seconds:6.1f} s {cpu:6.1f} s  {title}  (IS {result.metrics[KEY_IS_MEAN]:.3f}, FID {result.metrics[KEY_FID]:.3f})")


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    main()
