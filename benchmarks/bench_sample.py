"""Throughput of the default sampler, side by side: against the previous default, continuous batching (refill) or not,
fp32 or bf16, adaptive or fixed.

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
import copy
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustgen.kernel.models.checkpoint import load_checkpoint  # noqa: E402
from robustgen.kernel.data import load_dataset  # noqa: E402
from robustgen.kernel.device import fast_bf16  # noqa: E402
from robustgen.kernel.models import build_model  # noqa: E402
from samplers import InitConfig, RunOptions, SamplerConfig, StopConfig, load_checkpoint_dataset, sample  # noqa: E402


SAMPLERS = {  # name -> (sampler, stop)
    "default": (SamplerConfig(), StopConfig()),
    "previous default (q 0.2, 20 steps)": (SamplerConfig(steps=20), StopConfig(quantile=0.2)),
    "default, fixed stop": (SamplerConfig(), StopConfig(rule="fixed")),
}


def bench(model, data, *, n: int, batch_size: int, name: str, refill: bool, precision: str, cache_dir: str) -> dict:
    sampler, stop = SAMPLERS[name]
    run = RunOptions(n=n, batch_size=batch_size, refill=refill, precision=precision)
    kwargs = dict(init=InitConfig(), sampler=sampler, stop=stop, run=run, cache_dir=cache_dir, progress=False)
    device = next(model.parameters()).device
    t0 = time.perf_counter()
    sample(model, data, **{**kwargs, "run": replace(run, n=min(n, 2 * data.num_classes))})  # fits + caches initialisers / references, warms up
    warm = time.perf_counter() - t0
    _sync(device)
    t0 = time.perf_counter()
    result = sample(model, data, **kwargs)
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"device": str(device), "sampler": name, "refill": refill, "precision": precision, "n": n, "seconds": seconds, "images_per_s": n / seconds,
            "grad_evals_per_image": result.grad_evals_per_image, "evals_per_s": result.grad_evals / seconds, "first_call_s": warm}


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


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
    print(f"model: {what}; default sampler {InitConfig()} {SamplerConfig()} {StopConfig()}; n={args.n}, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads")
    print("| device | sampler | refill | precision | images/s | grad evals / image | grad evals / s | first call s |\n|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as cache:
        for device in devices:
            net = model.to(device).eval()
            rows = [("default", True, "fp32"), ("previous default (q 0.2, 20 steps)", True, "fp32"), ("default", False, "fp32"),
                    ("default, fixed stop", True, "fp32")]
            if fast_bf16(torch.device(device)):
                rows += [("default", True, "bf16"), ("default", False, "bf16")]
            for name, refill, precision in rows:
                r = bench(copy.deepcopy(net), data, n=args.n, batch_size=args.batch_size, name=name, refill=refill, precision=precision, cache_dir=cache)
                print(f"| {r['device']} | {name} | {'yes' if refill else 'no'} | {precision} | {r['images_per_s']:.1f} | {r['grad_evals_per_image']:.2f} | "
                      f"{r['evals_per_s']:.0f} | {r['first_call_s']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
