"""Issue 17's table: the default sampler beside its controls, on every dataset and model, judged by independent classifiers.

    python experiments/generation_table.py --settings cifar-preset,cifar-resnet4b --out runs/table

Leave-one-dataset-out: the sampler's defaults were tuned on one model, the CIFAR-10 subset's
`--preset generation` model, judged by the third-party ResNet-20 and a weaker own CNN
(experiments/tune_generation.py; checked on digits); every other setting here was never tuned on.
Each setting samples -n images (balanced) per row with samplers.compare: the default, its init-only
control (`--steps 0`), the Santurkar et al. 2019 classifier-only baseline, the previous default, and real
test / training images. Each row is scored by a strong standard judge (accuracy; FID, precision and
recall against the test split in its features; memorisation against the training split) and, for
realism, in the features of a second, weaker standard classifier (FID and recall against the test split).
Judges are never the sampled model. Writes <out>/<setting>/comparison.md and <out>/summary.md.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from robustgen.kernel.models.sources import ModelSpec
from samplers.compare import compare, markdown
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.from_checkpoint import ModelSource

SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "third_party_cifar.py"
CIFAR = f"npz:{SHARED / 'data' / 'cifar10-subset.npz'}"
RESNET20 = ModelSpec(f"python:{FIXTURES}:resnet20={SHARED / 'models' / 'akamaster_cifar10_resnet20-12fca82f.th'}",
                     mean="0.485,0.456,0.406", std="0.229,0.224,0.225")


@dataclass(frozen=True)
class Setting:
    checkpoint: str  # the sampled model (spec)
    data: str  # dataset spec
    strong: object  # judge and feature extractor (spec or ModelSpec)
    weak: object | None  # second feature extractor (spec or ModelSpec), None if there is none
    mean: str | None = None  # the sampled model's normalisation (python: specs)
    std: str | None = None


def third_party(factory: str, weights: str, mean: str, std: str) -> Setting:
    return Setting(f"python:{FIXTURES}:{factory}={SHARED / 'models' / weights}", CIFAR, RESNET20, "runs/g/judge-cifar-w16/best.pt", mean, std)


SETTINGS = {
    "cifar-preset": Setting("runs/g/cifar-generation/best.pt", CIFAR, RESNET20, "runs/g/judge-cifar-w16/best.pt"),
    "cifar-preset-dat": Setting("runs/g/cifar-preset-dat/best.pt", CIFAR, RESNET20, "runs/g/judge-cifar-w16/best.pt"),  # + generative fine-tuning (issue 24)
    "cifar-resnet4b": third_party("resnet4b", "abcrown_cifar10_resnet4b.pth", "0.4914,0.4822,0.4465", "0.2471,0.2435,0.2616"),
    "cifar-convsmall": third_party("conv_small", "abcrown_eran_cifar_conv_small_pgd.pth", "0.4914,0.4822,0.4465", "0.2023,0.1994,0.2010"),
    "cifar-cnn-a": third_party("cnn_a", "abcrown_sdp_cifar_cnn_a_adv.model", f"{125.3/255:.4f},{123.0/255:.4f},{113.9/255:.4f}",
                               f"{63.0/255:.4f},{62.1/255:.4f},{66.7/255:.4f}"),
    "cifar-readme-der": Setting("runs/frontier/linf-fgsm-der-8_255/best.pt", CIFAR, RESNET20, "runs/g/judge-cifar-w16/best.pt"),
    "digits-default": Setting("runs/g/digits-robust/best.pt", "digits", "runs/g/digits-judge/best.pt", "runs/g/digits-judge-weak/best.pt"),
    "digits-preset": Setting("runs/g/digits-generation/best.pt", "digits", "runs/g/digits-judge/best.pt", "runs/g/digits-judge-weak/best.pt"),
    "tiny-preset": Setting("runs/g/tiny-generation/best.pt", "npz:/work/data/tiny-imagenet-40-10.npz", "runs/g/tiny-judge/best.pt", None),
}

CONFIGS = {
    "default": (InitConfig(), SamplerConfig(), StopConfig()),
    "previous default": (InitConfig(), SamplerConfig(steps=20), StopConfig(quantile=0.2)),
}


def run_setting(name: str, setting: Setting, *, out: Path, n: int, seed: int, device: str) -> list:
    return compare(setting.checkpoint, CONFIGS, out=out / name, features=setting.strong, judge=setting.strong, run=RunOptions(n=n, seed=seed, device=device),
                   source=ModelSource(dataset=setting.data, mean=setting.mean, std=setting.std),
                   extra_features={"weak": setting.weak} if setting.weak else None)


def targets(rows) -> dict:
    """Issue 17's per-setting checks for the default against its init-only control and the real data."""
    by = {r.name: r.metrics for r in rows}
    d, init, real = by["default"], by[next(r.init_only for r in rows if r.name == "default")], by["real-test"]
    return {
        "judge_gain": d["judge_accuracy"] - init["judge_accuracy"],
        "fid_ratio_strong": d["fid_test"] / init["fid_test"],
        "fid_ratio_weak": d["fid_test@weak"] / init["fid_test@weak"] if "fid_test@weak" in d else None,
        "recall_vs_init": d["recall_test"] - init["recall_test"],
        "near_copies_vs_real": (d["near_copy_fraction_pixel"] or 0) / max(real["near_copy_fraction_pixel"] or 1e-9, 1e-9),
        "evals_vs_santurkar": d["grad_evals_per_image"] / by["santurkar"]["grad_evals_per_image"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--settings", default=",".join(SETTINGS))
    p.add_argument("--out", default="runs/table")
    p.add_argument("-n", "--num-images", dest="n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    out = Path(args.out)
    for name in args.settings.split(","):
        rows = run_setting(name, SETTINGS[name], out=out, n=args.n, seed=args.seed, device=args.device)
        checks = targets(rows)
        text = [f"## {name}", "", markdown(rows), "", json.dumps(checks)]
        (out / name / "summary.md").write_text("\n".join(text) + "\n")
        (out / name / "targets.json").write_text(json.dumps({"setting": name, "n": args.n, **checks}, indent=2) + "\n")
        print("\n".join(text), flush=True)
    summary = [json.loads(f.read_text()) for f in sorted(out.glob("*/targets.json"))]  # every setting run so far, by any process
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
