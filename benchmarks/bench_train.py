"""Training throughput: images/s of PreActResNet-18 training steps on CIFAR-shaped random data.

    OMP_NUM_THREADS=1 python benchmarks/bench_train.py --width 16              # CPU: fp32 only
    python benchmarks/bench_train.py --width 64 --method fgsm-rs --der         # GPU: fp32 and bf16 + channels_last
    python benchmarks/bench_train.py --width 64 --epoch                        # one full 50k-image epoch per setting

Times the real `training.step.train_step` (attack + clean and adversarial forward +
DER + SGD update) after warm-up steps, with the device synchronised around the clock.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def bench(*, width: int, method: str, der: bool, batch_size: int, steps: int, warmup: int, device: torch.device, precision: str,
          channels_last: bool, image_size: int, n_images: int | None) -> dict:
    from robustgen.models import build_model
    from training.config import TrainConfig, resolve_config
    from training.step import train_step

    torch.manual_seed(0)
    model = build_model("preact-resnet18", num_classes=10, in_channels=3, width=width).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    config = resolve_config(TrainConfig(dataset="cifar10", method=method, der=der, width=width, batch_size=batch_size, out="unused"))
    x = torch.rand(batch_size, 3, image_size, image_size, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, 10, (batch_size,), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        train_step(model, opt, x, y, config=config, epoch=0, precision=precision)
    total_steps = steps if n_images is None else -(-n_images // batch_size)
    sync()
    start = time.perf_counter()
    for _ in range(total_steps):
        train_step(model, opt, x, y, config=config, epoch=0, precision=precision)
    sync()
    seconds = time.perf_counter() - start
    return {"precision": precision, "channels_last": channels_last, "images": total_steps * batch_size, "seconds": round(seconds, 3),
            "images_per_s": round(total_steps * batch_size / seconds, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--method", default="fgsm-rs")
    p.add_argument("--der", action="store_true")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epoch", action="store_true", help="time one full CIFAR-10 epoch (50,000 images) per setting")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    from robustgen.device import resolve_device

    device = resolve_device(args.device)
    settings = [("fp32", False)] + ([("bf16", True)] if device.type == "cuda" else [])
    rows = []
    for precision, channels_last in settings:
        row = bench(width=args.width, method=args.method, der=args.der, batch_size=args.batch_size, steps=args.steps, warmup=args.warmup,
                    device=device, precision=precision, channels_last=channels_last, image_size=args.image_size,
                    n_images=50_000 if args.epoch else None)
        rows.append({"device": str(device), "width": args.width, "method": args.method + (" + DER" if args.der else ""), **row})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"PreActResNet-18 width {args.width}, {args.method}{' + DER' if args.der else ''}, batch {args.batch_size}, {name}")
    for r in rows:
        print(f"  {r['precision']:5s} channels_last={str(r['channels_last']):5s}  {r['images_per_s']:9.1f} images/s  ({r['images']} images in {r['seconds']} s)")


if __name__ == "__main__":
    main()
