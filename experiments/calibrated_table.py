"""Issue 26's table: each model's calibrated chain beside today's default and the controls, judged independently.

    python experiments/calibrated_table.py --settings cifar-resnet4b,cifar-convsmall --seeds folder:/tmp/tiny/tiny-imagenet-200/val/images

Per setting (experiments/generation_table.SETTINGS): `robustgen calibrate` with the setting's strong judge
(on held-out training images; CIFAR settings also try --seeds as --init images:SPEC), then samplers.compare
on the TEST split, n images per row: the calibrated chain, its own start (same settings, 0 steps), today's
default, the seeds alone, and the controls (init-only = local-pca with no steps, Santurkar, real test/train).
Writes <out>/<setting>/comparison.md, targets.json and side-by-side.png.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from generation_table import SETTINGS  # noqa: E402
from side_by_side import side_by_side  # noqa: E402
from samplers.calibrated import calibrate, calibrated_configs, describe, find_calibration  # noqa: E402
from samplers.calibration import CalibrationConfig  # noqa: E402
from samplers.compare import compare, markdown  # noqa: E402
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig  # noqa: E402
from samplers.from_checkpoint import ModelSource  # noqa: E402


def chain_rows(record: dict, seeds: str | None) -> dict:
    init, sampler, stop = calibrated_configs(record)
    rows = {"calibrated": (init, sampler, stop), "calibrated start": (init, replace(sampler, steps=0), StopConfig(rule="fixed")),
            "default": (InitConfig(), SamplerConfig(), StopConfig())}
    if seeds:
        rows["seeds alone"] = (InitConfig(**InitConfig.parse_kind(seeds)), replace(SamplerConfig(), steps=0), StopConfig(rule="fixed"))
    return rows


def _cached(setting, *, n: int, seeds: str | None) -> dict | None:
    """This setting's calibration from the cache, if it was made with the same config and seeds (the run is resumable)."""
    from dataclasses import asdict

    from robustgen.kernel.models import model_fingerprint
    from robustgen.kernel.models.sources import load_classifier

    model, _ = load_classifier(setting.checkpoint, mean=setting.mean, std=setting.std, data=setting.data)
    found = find_calibration(model_fingerprint(model), checkpoint=setting.checkpoint)
    same_seeds = found is not None and any((c["init"].startswith("images:")) for c in found[0]["candidates"]) == bool(seeds)
    same_n = found is not None and found[0].get("run", {}).get("n", found[0]["config"].get("n")) == n
    config = {k: v for k, v in found[0]["config"].items() if k not in ("n", "seed")} if found is not None else None
    return found[0] if found is not None and config == asdict(CalibrationConfig()) and same_seeds and same_n else None


def run_setting(name: str, *, out: Path, n: int, seeds: dict[str, str], device: str) -> dict:
    setting = SETTINGS[name]
    seeds = seeds.get("cifar" if "cifar" in setting.data else setting.data)
    source, run = ModelSource(dataset=setting.data, mean=setting.mean, std=setting.std), RunOptions(n=n, device=device)
    record = _cached(setting, n=n, seeds=seeds) or calibrate(setting.checkpoint, judge=setting.strong, config=CalibrationConfig(), seeds=seeds,
                                                              run=run, source=source, progress=False)
    rows = compare(setting.checkpoint, chain_rows(record, seeds), out=out / name, features=setting.strong, judge=setting.strong, run=run, source=source)
    by = {r.name: r for r in rows}
    names = [k for k in ("init-only:local-pca", "default", "calibrated start", "calibrated", "seeds alone", "santurkar", "real-test") if k in by]
    side_by_side([by[k].run / "grid.png" for k in names], names).save(out / name / "side-by-side.png")
    init, cal = by["init-only:local-pca"].metrics, by["calibrated"].metrics
    checks = {"setting": name, "n": n, "chain": describe(record), "why": record["why"], "calibration_seconds": record["seconds"],
              "judge_accuracy": cal["judge_accuracy"], "fid_ratio": cal["fid_test"] / init["fid_test"],
              "recall_ratio": cal["recall_test"] / max(init["recall_test"], 1e-9), "near_copies": cal["near_copy_fraction_pixel"],
              "start_gain": by["calibrated start"].metrics["judge_accuracy"] - init["judge_accuracy"],
              "fid_vs_default": cal["fid_test"] / by["default"].metrics["fid_test"], "judge_gain": cal["judge_accuracy"] - init["judge_accuracy"]}
    (out / name / "targets.json").write_text(json.dumps(checks, indent=2) + "\n")
    (out / name / "summary.md").write_text(f"## {name}\n\n{markdown(rows)}\n\n{json.dumps(checks)}\n")
    return checks


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default="cifar-resnet4b,cifar-convsmall,cifar-cnn-a")
    p.add_argument("--seeds", default=None, help="images:SPEC tried by calibration on CIFAR settings")
    p.add_argument("--digits-seeds", default=None, help="images:SPEC tried by calibration on digits settings")
    p.add_argument("--out", default="runs/calibrated-table")
    p.add_argument("-n", "--num-images", dest="n", type=int, default=1000)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    for name in args.settings.split(","):
        seeds = {k: v for k, v in {"cifar": args.seeds, "digits": args.digits_seeds}.items() if v}
        print(json.dumps(run_setting(name, out=Path(args.out), n=args.n, seeds=seeds, device=args.device)), flush=True)


if __name__ == "__main__":
    main()
