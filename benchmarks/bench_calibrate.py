"""What calibration costs, side by side with the sampling runs it is measured against (issue 26: at most 3x one
sampling run of the same n).

    OMP_NUM_THREADS=1 python benchmarks/bench_calibrate.py                     # the published ResNet-4B, CIFAR subset, Tiny seeds
    python benchmarks/bench_calibrate.py --n 1000 --seeds images:folder:DIR    # seeds from another folder of images

Runs, in one process and one after the other: `robustgen calibrate` (its trajectories, the judge's reads of every
candidate and the near-copy checks), then `robustgen sample` of the same n with the chain it chose, and with a
fixed chain as long as the longest calibration considers. Prints seconds and the ratios. Needs ../shared.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from robustgen.kernel.data.pool import _read_pool  # noqa: E402
from robustgen.kernel.models.sources import ModelSpec  # noqa: E402
from samplers import RunOptions, SamplerConfig, StopConfig, sample_from_checkpoint  # noqa: E402
from samplers.calibrated import calibrate, calibrated_configs  # noqa: E402
from samplers.calibration import CalibrationConfig  # noqa: E402
from samplers.from_checkpoint import ModelSource  # noqa: E402

SHARED = REPO.parent / "shared"
FIXTURES = REPO / "tests" / "fixtures" / "third_party_cifar.py"
RESNET4B = f"python:{FIXTURES}:resnet4b={SHARED / 'models' / 'abcrown_cifar10_resnet4b.pth'}"
RESNET20 = ModelSpec(f"python:{FIXTURES}:resnet20={SHARED / 'models' / 'akamaster_cifar10_resnet20-12fca82f.th'}",
                     mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
SOURCE = ModelSource(dataset=f"npz:{SHARED / 'data' / 'cifar10-subset.npz'}", mean="0.4914,0.4822,0.4465", std="0.2471,0.2435,0.2616")


def timed(work) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = work()
    return time.perf_counter() - t0, out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-n", type=int, default=1000)
    p.add_argument("--seeds", default=None, help="images:SPEC (default: none; e.g. images:folder:tiny-imagenet-200/val/images)")
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    run = RunOptions(n=args.n, precision=args.precision, device="cpu")
    config = CalibrationConfig()
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        cal_s, record = timed(lambda: calibrate(RESNET4B, judge=RESNET20, config=config, seeds=args.seeds, run=run, source=SOURCE,
                                                cache_dir=cache, progress=False, log=lambda _: None))
        init, sampler, stop = calibrated_configs(record)
        _read_pool.cache_clear()  # a sampling run is a fresh process: it decodes the seed images again, as calibrate did
        chosen_s, _ = timed(lambda: sample_from_checkpoint(RESNET4B, init=init, sampler=sampler, stop=stop, run=run, source=SOURCE,
                                                           out=Path(tmp) / "chosen", cache_dir=cache, progress=False))
        longest = SamplerConfig(steps=config.max_steps)
        _read_pool.cache_clear()
        longest_s, _ = timed(lambda: sample_from_checkpoint(RESNET4B, init=init, sampler=longest, stop=StopConfig(rule="fixed"), run=run, source=SOURCE,
                                                            calibration=False, out=Path(tmp) / "longest", cache_dir=cache, progress=False))
    print(json.dumps({"n": args.n, "precision": args.precision, "seeds": args.seeds, "trajectories": len(record["trajectory_seconds"]),
                      "calibrate_s": round(cal_s, 1), "trajectory_s": [round(s, 1) for s in record["trajectory_seconds"]],
                      "sample_chosen_s": round(chosen_s, 1), "chosen": record["chosen"]["name"],
                      f"sample_fixed_{config.max_steps}_s": round(longest_s, 1),
                      "ratio_to_chosen": round(cal_s / chosen_s, 2), "ratio_to_longest": round(cal_s / longest_s, 2)}, indent=2))


if __name__ == "__main__":
    main()
