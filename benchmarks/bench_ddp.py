"""torchrun scaling on one machine: training and sampling img/s at world size 1 and 2, one thread per rank.

    python benchmarks/bench_ddp.py                        # CIFAR-10 subset, width 16 (needs ../shared/data), ~6 min
    python benchmarks/bench_ddp.py --data digits          # anywhere

Launches the real CLI under `python -m torch.distributed.run --standalone --nproc_per_node N` (Gloo on CPU,
NCCL on GPU) exactly as a user would, with OMP_NUM_THREADS=1 per rank, and reads the throughput the runs
record themselves: training images/s of epoch 2 from metrics.jsonl (epoch 1 includes warm-up), sampling
images/s from meta.json (initialisers fitted once beforehand, so every timed run loads them). Scaling efficiency = img/s at N ranks / (N x img/s at 1 rank).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CIFAR_SUBSET = REPO.parent / "shared" / "data" / "cifar10-subset.npz"


def launch(nproc: int, args: list[str]) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc), "-m", "robustgen", *args]
    done = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stderr[-2000:]}")


def train_rate(work: Path, data: str, nproc: int, width: int) -> float:
    out = work / f"train-w{nproc}"
    launch(nproc, ["train", data, "--width", str(width), "--epochs", "2", "--eval-pgd-steps", "0", "--co-check-every", "0",
                   "--device", "cpu", "--out", str(out)])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return records[-1]["images_per_s"]


def sample_rate(work: Path, checkpoint: Path, nproc: int, n: int) -> float:
    work.mkdir(parents=True, exist_ok=True)
    out = work / f"sample-w{nproc}"
    launch(nproc, ["sample", "--checkpoint", str(checkpoint), "--num-images", str(n), "--device", "cpu", "--out", str(out)])
    meta = json.loads((out / "meta.json").read_text())
    return n / meta["seconds"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=f"npz:{CIFAR_SUBSET}" if CIFAR_SUBSET.is_file() else "digits")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--n", type=int, default=1000, help="images to sample")
    p.add_argument("--world", type=int, default=2, help="largest world size")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        work = Path(tmp)
        os.environ["ROBUSTGEN_CACHE"] = str(work / "cache")  # a cache of its own, warmed once below
        rows = [{"ranks": nproc, "train": train_rate(work, args.data, nproc, args.width)} for nproc in range(1, args.world + 1)]
        checkpoint = work / "train-w1" / "last.pt"
        sample_rate(work / "warm-up", checkpoint, 1, args.n)  # fits the initialisers: every timed run below loads them
        for row in rows:
            row["sample"] = sample_rate(work, checkpoint, row["ranks"], args.n)
            print(f"  measured world size {row['ranks']}", file=sys.stderr, flush=True)
    one = rows[0]
    print(f"{args.data}, PreActResNet-18 width {args.width}, fgsm-rs training (epoch 2 of 2) and default sampling of {args.n} images; "
          "CPU, Gloo, one thread per rank")
    print("| ranks | training img/s | efficiency | sampling img/s | efficiency |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['ranks']} | {r['train']:.0f} | {r['train'] / (r['ranks'] * one['train']):.0%} | {r['sample']:.1f} | "
              f"{r['sample'] / (r['ranks'] * one['sample']):.0%} |")


if __name__ == "__main__":
    main()
