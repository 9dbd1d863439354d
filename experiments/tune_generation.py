"""Tune the sampler against independent judges: sample each named configuration, judge it, append a JSON line.

    python experiments/tune_generation.py --checkpoint runs/g/l2-0.5-w16-e15/best.pt \\
        --judge runs/g/judge-cifar-w32/best.pt --n 500 --configs init,default,fixed20 --out runs/tune/cifar.jsonl

A fast loop for choosing defaults (issue 17): no memorisation, no IS, no run dirs. Each row:
judge accuracy, FID and precision/recall against the *test* split in each judge's penultimate
features (torch-fidelity's functions via samplers.scoring.metrics), gradient evaluations per image,
images/s. Judges are standard classifiers trained apart from the sampled model (never the model itself).
The reported tables come from samplers.compare (experiments/generation_table.py), not from here.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from robustgen.kernel.data import to_float
from robustgen.kernel.models.sources import load_classifier
from samplers import InitConfig, RunOptions, SamplerConfig, StopConfig, load_checkpoint_dataset, sample
from samplers.scoring.metrics import MetricSettings, frechet_distance, precision_recall

from generation_table import RESNET20  # the third-party ResNet-20 judge (python: spec with its normalisation)

CONFIGS: dict[str, tuple[InitConfig, SamplerConfig, StopConfig]] = {
    "init": (InitConfig(), SamplerConfig(steps=0), StopConfig(rule="fixed")),
    "default": (InitConfig(), SamplerConfig(), StopConfig()),
    "santurkar": (InitConfig(kind="gaussian"), SamplerConfig(kind="pgd", steps=60), StopConfig(rule="fixed")),
    "fixed10": (InitConfig(), SamplerConfig(steps=10), StopConfig(rule="fixed")),
    "fixed20": (InitConfig(), SamplerConfig(steps=20), StopConfig(rule="fixed")),
    "q05": (InitConfig(), SamplerConfig(), StopConfig(quantile=0.05)),
}


def parse_config(name: str) -> tuple[InitConfig, SamplerConfig, StopConfig]:
    """A named config, or the default changed by '+'-joined tokens: q05 (quantile 0.05), fixedN, stepsN, sX (smooth),
    jX (jitter), flip, lrX (step size), epsX (L2 ball), ce / mix (energy), pN (patience), kN / scaleX (local-pca)."""
    if name in CONFIGS:
        return CONFIGS[name]
    init, sampler, stop = {}, {}, {}
    for token in name.split("+"):
        for prefix, target, key, cast in (("fixed", stop, "rule", None), ("steps", sampler, "steps", int), ("scale", init, "scale", float),
                                          ("flip", sampler, "flip", None), ("eps", sampler, "eps", float), ("lr", sampler, "step_size", float),
                                          ("q", stop, "quantile", lambda v: float("0." + v)), ("s", sampler, "smooth", float),
                                          ("j", sampler, "jitter", float), ("p", stop, "patience", int), ("k", init, "k", int),
                                          ("mq", stop, "marginal_quantile", lambda v: float("0." + v)), ("blur", init, "blur", float), ("spec", sampler, "spectrum", float)):
            if token.startswith(prefix) and (prefix != "s" or not token.startswith(("steps", "scale", "spec"))) and (prefix != "q" or not token.startswith("mq")):
                value = token[len(prefix):]
                if prefix == "fixed":
                    stop["rule"], sampler["steps"] = "fixed", int(value)
                elif prefix == "flip":
                    sampler["flip"] = True
                else:
                    target[key] = cast(value)
                break
        else:
            if token in ("ce", "mix", "joint"):
                sampler["energy"] = token
            else:
                raise SystemExit(f"unknown token {token!r} in {name!r}")
    return InitConfig(**init), SamplerConfig(**sampler), StopConfig(**stop)


def judge_outputs(model, images: np.ndarray, *, batch: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(penultimate features, predicted class) of uint8 NHWC images."""
    device = next(model.parameters()).device
    feats, preds = [], []
    with torch.no_grad():
        for start in range(0, len(images), batch):
            x = to_float(images[start : start + batch], device)
            f = model.features(x)
            feats.append(f.float().cpu())
            preds.append(model.head(f).argmax(1).cpu())
    return torch.cat(feats), torch.cat(preds)


def judged(images: np.ndarray, labels: np.ndarray, judges: dict, real: dict) -> dict:
    row = {}
    for name, model in judges.items():
        feats, preds = judge_outputs(model, images)
        prc = precision_recall(feats, real[name], MetricSettings())
        row[name] = {
            "acc": float((preds.numpy() == labels).mean()),
            "fid": frechet_distance(feats, real[name]),
            "precision": float(prc["precision"]),
            "recall": float(prc["recall"]),
        }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--data", default=None)
    p.add_argument("--judge", action="append", required=True, help="judge spec (repeatable); name=SPEC to name it")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--configs", default="init,default")
    p.add_argument("--out", required=True)
    p.add_argument("--precision", default="fp32")
    args = p.parse_args()
    model, meta = load_classifier(args.checkpoint, device="cpu")
    data = load_checkpoint_dataset(meta, dataset=args.data)
    judges = {}
    for spec in args.judge:
        name, _, rest = spec.partition("=") if "=" in spec.split(":")[0] else (Path(spec).parent.name or spec, "", spec)
        judges[name] = load_classifier(RESNET20 if rest == "resnet20" else rest, device="cpu")[0]
    x_test, y_test = data.split("test")
    real = {name: judge_outputs(m, x_test)[0] for name, m in judges.items()}
    for name, m in judges.items():
        print(f"judge {name}: real test accuracy {float((judge_outputs(m, x_test)[1].numpy() == y_test).mean()):.3f}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for config_name in args.configs.split(","):
        init, sampler, stop = parse_config(config_name)
        t0 = time.perf_counter()
        result = sample(model, data, init=init, sampler=sampler, stop=stop, run=RunOptions(n=args.n, seed=args.seed, precision=args.precision), progress=False)
        seconds = time.perf_counter() - t0
        row = {"checkpoint": args.checkpoint, "config": config_name, "n": args.n, "seed": args.seed, "seconds": round(seconds, 1),
               "grad_evals_per_image": result.grad_evals / args.n, "judges": judged(result.images, result.labels, judges, real)}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        cells = "  ".join(f"{j}: acc {v['acc']:.3f} fid {v['fid']:.3f} P {v['precision']:.3f} R {v['recall']:.3f}" for j, v in row["judges"].items())
        print(f"{config_name:>12}  evals {row['grad_evals_per_image']:5.1f}  {seconds:6.1f}s  {cells}", flush=True)


if __name__ == "__main__":
    main()
