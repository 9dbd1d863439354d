"""Benchmark: the memorisation measures of `robustgen score` on the CIFAR-10 subset.

    OMP_NUM_THREADS=1 python benchmarks/bench_memorisation.py [--features CKPT] [--n 1000]

Samples: N images made from the subset's test split with pixel noise (a stand-in for generated
images; timing does not depend on what they show). Reference: the subset's 5,085 training and
1,017 test images. The extractor is the given checkpoint or a randomly initialised width-16
PreActResNet-18 (256-dim features). Reports wall time of
  1. score(metrics=fid) without memorisation (features of samples, train and test splits),
  2. the same with memorisation, cold: the training side (test -> train nearest neighbours and
     k-means cells, in pixels and features) is computed and cached,
  3. the same with memorisation, training side cached (the usual case),
and the memorisation numbers of the last run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CIFAR_SUBSET = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", default=None, help="robustgen checkpoint (default: random width-16 PreActResNet-18)")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    if not CIFAR_SUBSET.is_file():
        raise SystemExit(f"{CIFAR_SUBSET} not found")

    from robustgen.kernel.models.checkpoint import model_meta, save_checkpoint
    from robustgen.kernel.data import load_dataset
    from robustgen.kernel.models import build_model
    from samplers.scoring import score

    work = Path(tempfile.mkdtemp(prefix="bench-memorisation-"))
    spec = f"npz:{CIFAR_SUBSET}"
    data = load_dataset(spec)
    rng = np.random.default_rng(0)
    idx = np.arange(args.n) % len(data.x_test)
    samples = np.clip(data.x_test[idx].astype(np.int16) + rng.integers(-8, 9, (args.n, 32, 32, 3)), 0, 255).astype(np.uint8)
    features = Path(args.features) if args.features else _random_extractor(work / "width16.pt", data, build_model, model_meta, save_checkpoint)

    cache = work / "cache"
    common = dict(ref=spec, features=features, metrics=("fid",), per_class=False, device="cpu", cache_dir=cache)
    print(f"{args.n} samples vs {len(data.x_train)} train / {len(data.x_test)} test images of 32x32x3; torch threads {torch.get_num_threads()}")
    score(samples, memorisation=False, **common)  # warm the reference feature cache: rows 1-3 then time the same extraction work
    for title, kw in (("fid, no memorisation", dict(memorisation=False)), ("fid + memorisation, cold training side", {}),
                      ("fid + memorisation, cached training side", {})):
        start = time.perf_counter()
        result = score(samples, **kw, **common)
        print(f"{time.perf_counter() - start:7.1f} s  {title}")
    for name, space in result.memorisation.spaces.items():
        print(f"  {name}: ratio {space.nn_ratio:.3f}, near-copies {100 * space.near_copy_fraction:.1f}%, {space.copying.reading}")


def _random_extractor(path, data, build_model, model_meta, save_checkpoint):
    torch.manual_seed(0)
    arch_args = dict(num_classes=10, in_channels=3, width=16, mean=list(data.mean), std=list(data.std))
    save_checkpoint(path, model=build_model("preact-resnet18", **arch_args), meta=model_meta(arch="preact-resnet18", arch_args=arch_args, dataset=data))
    return path


if __name__ == "__main__":
    main()
