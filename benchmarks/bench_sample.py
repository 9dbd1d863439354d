"""Throughput of the default sampler (local-pca + sgld + adaptive stop): images/s and gradient evaluations per image.

    OMP_NUM_THREADS=1 python benchmarks/bench_sample.py                                   # digits, tiny model, CPU
    python benchmarks/bench_sample.py --checkpoint runs/shared/cifar-robust/best.pt --n 1000 --device cuda

Without --checkpoint a randomly initialised PreActResNet-18 (width 16) on digits
is used: the throughput is the same as for a trained one, but stopping behaviour
(evaluations per image) is only meaningful with a trained robust checkpoint.
Fitting the initialiser and the reference energies is timed separately (it is
cached after the first run). Runs on the CPU, and on CUDA too when available.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustgen.checkpoint import load_checkpoint  # noqa: E402
from robustgen.data import load_dataset  # noqa: E402
from robustgen.models import build_model  # noqa: E402
from samplers import InitConfig, SamplerConfig, StopConfig, load_checkpoint_dataset, sample  # noqa: E402


def bench(model, data, *, n: int, batch_size: int, device: str, stop: str, cache_dir: str) -> dict:
    model = model.to(device).eval()
    kwargs = dict(n=n, init=InitConfig(), sampler=SamplerConfig(), stop=StopConfig(rule=stop), batch_size=batch_size, cache_dir=cache_dir, progress=False)
    t0 = time.perf_counter()
    sample(model, data, **{**kwargs, "n": min(n, 2 * data.num_classes)})  # fits + caches initialisers / references, warms up
    warm = time.perf_counter() - t0
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    result = sample(model, data, **kwargs)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"device": device, "stop": stop, "n": n, "seconds": seconds, "images_per_s": n / seconds,
            "grad_evals_per_image": result.grad_evals_per_image, "steps_mean": float(result.steps.mean()), "first_call_s": warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu, plus cuda when available)")
    args = parser.parse_args()
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        data = load_checkpoint_dataset(meta)
        what = args.checkpoint
    else:
        data = load_dataset("digits")
        torch.manual_seed(0)
        model = build_model("preact-resnet18", num_classes=10, in_channels=1, width=16, mean=list(data.mean), std=list(data.std))
        what = "random PreActResNet-18 width 16 on digits"
    devices = [args.device] if args.device else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(f"model: {what}; default config: {InitConfig()} {SamplerConfig()} {StopConfig()}")
    print(f"{'device':8s} {'stop':9s} {'n':>6s} {'seconds':>8s} {'images/s':>9s} {'evals/img':>9s} {'steps':>6s} {'first call s':>12s}")
    with tempfile.TemporaryDirectory() as cache:
        for device in devices:
            for stop in ("adaptive", "fixed"):
                r = bench(model, data, n=args.n, batch_size=args.batch_size, device=device, stop=stop, cache_dir=cache)
                print(f"{r['device']:8s} {r['stop']:9s} {r['n']:6d} {r['seconds']:8.2f} {r['images_per_s']:9.1f} "
                      f"{r['grad_evals_per_image']:9.2f} {r['steps_mean']:6.2f} {r['first_call_s']:12.2f}", flush=True)


if __name__ == "__main__":
    main()
