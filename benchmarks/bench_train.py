"""Training throughput, side by side in one process: a minimal reference loop vs robustgen's `train_step`.

    python benchmarks/bench_train.py --compare                 # the table of the README (2-core CPU: ~5 min)
    python benchmarks/bench_train.py --width 64 --compare      # the full-width model (GPU rows appear on CUDA)

Rows (same model, batch and random data, timed after warm-up, device synchronised):
- minimal: the Wong et al. 2020 loop kept here as the yardstick: RS-FGSM attack, adversarial
  forward/backward, SGD; no clean forward, no statistics, no DER;
- robustgen: `training.step.train_step` (what `robustgen train` runs: attack, f(x), f(x*), DER,
  per-step statistics on the device) under each precision / layout / torch.compile setting, with and
  without DER (the cost of DER + diagnostics = robustgen row / minimal row at the same precision).
Each row prints img/s, its ratio to the minimal fp32 loop, and MFU: FLOPs of one step counted with
torch.utils.flop_counter divided by the step time and by a matmul peak measured in this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustgen.kernel.device import autocast, fast_bf16, resolve_device  # noqa: E402
from robustgen.kernel.models import build_model  # noqa: E402
from training.config import TrainConfig, resolve_config  # noqa: E402
from training.step import train_step  # noqa: E402

EPS = 8 / 255


def minimal_step(model, opt, x, y, *, precision: str) -> None:
    """RS-FGSM (Wong et al. 2020): uniform start, one signed step of 1.25 eps, clamp, train on x*."""
    delta = torch.empty_like(x).uniform_(-EPS, EPS).requires_grad_(True)
    with autocast(x.device, precision):
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
    (grad,) = torch.autograd.grad(loss, delta)
    delta = (delta + 1.25 * EPS * grad.sign()).clamp(-EPS, EPS).detach()
    with autocast(x.device, precision):
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def _setup(width: int, batch: int, device, channels_last: bool):
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = build_model("preact-resnet18", num_classes=10, in_channels=3, width=width).to(device=device, memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
    return model, opt, x, torch.randint(0, 10, (batch,), device=device)


def time_steps(step, *, steps: int, warmup: int, device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def step_flops(step) -> int:
    """FLOPs of one step, with torch.utils.flop_counter's formulas. Its FlopCounterMode also tracks modules
    with autograd hooks that refuse `autograd.grad` on a leaf (what attacks call), so the formulas are
    applied here by a bare dispatch mode."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            formula = flop_registry.get(func._overloadpacket)
            if formula is not None:
                Count.total += formula(*args, **kwargs, out_val=out)
            return out

    with Count():
        step()
    return Count.total


def matmul_peak(device, precision: str, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a large square matmul in this precision: the peak MFU is measured against."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, device=device, dtype=dtype), torch.randn(size, size, device=device, dtype=dtype)
    seconds = time_steps(lambda: a @ b, steps=repeats, warmup=2, device=device)
    return 2 * size**3 / seconds


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_row(name: str, *, kind: str, precision: str, channels_last: bool, compiled: bool, der: bool, args, device) -> dict:
    model, opt, x, y = _setup(args.width, args.batch_size, device, channels_last)
    net = torch.compile(model) if compiled else model
    if kind == "minimal":
        def step():
            minimal_step(net, opt, x, y, precision=precision)
    else:
        config = resolve_config(TrainConfig(dataset="cifar10", method="fgsm-rs", der=der, width=args.width, batch_size=args.batch_size, out="unused"))

        def step():
            train_step(net, opt, x, y, config=config, epoch=0, precision=precision)
    started = time.perf_counter()
    seconds = time_steps(step, steps=args.steps, warmup=args.warmup, device=device)
    flops = step_flops(step) if not compiled else None  # the counter sees eager ops; a compiled step has the same maths
    return {"row": name, "kind": kind, "precision": precision, "channels_last": channels_last, "compile": compiled, "der": der,
            "images_per_s": args.batch_size / seconds, "step_s": seconds, "flops": flops, "setup_s": time.perf_counter() - started - seconds * args.steps}


def settings(device, compile_ok: bool) -> list[tuple]:
    """(name, kind, precision, channels_last, compile, der) rows; bf16 only where the hardware has it."""
    rows = [("minimal fp32", "minimal", "fp32", False, False, False),
            ("robustgen fgsm-rs + DER, fp32", "robustgen", "fp32", False, False, True),
            ("robustgen fgsm-rs, no DER, fp32", "robustgen", "fp32", False, False, False)]
    if fast_bf16(device):
        rows += [("minimal bf16 + channels_last", "minimal", "bf16", True, False, False),
                 ("robustgen fgsm-rs + DER, bf16 + channels_last (default)", "robustgen", "bf16", True, False, True),
                 ("robustgen fgsm-rs, no DER, bf16 + channels_last", "robustgen", "bf16", True, False, False)]
    if compile_ok:
        rows += [("minimal fp32, torch.compile", "minimal", "fp32", False, True, False)]
        if fast_bf16(device):
            rows += [("minimal bf16 + channels_last, torch.compile", "minimal", "bf16", True, True, False),
                     ("robustgen fgsm-rs + DER, bf16 + channels_last, torch.compile", "robustgen", "bf16", True, True, True)]
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--compare", action="store_true", help="all rows (default: only robustgen's default setting)")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (they compile for ~1 min each)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    device = resolve_device(args.device)
    from robustgen.kernel.device import compile_available

    rows_wanted = settings(device, compile_ok=not args.no_compile and compile_available(device) is None)
    if not args.compare:
        rows_wanted = [r for r in rows_wanted if "(default)" in r[0]] or rows_wanted[1:2]
    peaks = {prec: matmul_peak(device, prec) for prec in {r[2] for r in rows_wanted}}
    rows = []
    for name, kind, precision, channels_last, compiled, der in rows_wanted:
        row = run_row(name, kind=kind, precision=precision, channels_last=channels_last, compiled=compiled, der=der, args=args, device=device)
        rows.append(row)
        print(f"  measured: {name}: {row['images_per_s']:.0f} img/s", file=sys.stderr, flush=True)
    report(rows, peaks, args, device)


def report(rows: list[dict], peaks: dict, args, device) -> None:
    base = next((r["images_per_s"] for r in rows if r["row"] == "minimal fp32"), None)
    flops_of = {(r["kind"], r["der"]): r["flops"] for r in rows if r["flops"]}  # a compiled step does the same maths
    for r in rows:
        flops = r["flops"] or flops_of.get((r["kind"], r["der"]))
        r["vs_minimal_fp32"] = r["images_per_s"] / base if base else None
        r["mfu"] = flops / r["step_s"] / peaks[r["precision"]] if flops else None
    if args.json:
        print(json.dumps({"rows": rows, "matmul_peak_flops": peaks}, indent=2))
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"PreActResNet-18 width {args.width}, batch {args.batch_size}, 32x32, {name}; matmul peak "
          + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in sorted(peaks.items())))
    print("| training step | img/s | vs minimal fp32 | MFU |\n|---|---|---|---|")
    for r in rows:
        ratio = f"{r['vs_minimal_fp32']:.2f}" if r["vs_minimal_fp32"] else "-"
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] else "-"
        print(f"| {r['row']} | {r['images_per_s']:.0f} | {ratio} | {mfu} |")


if __name__ == "__main__":
    main()
