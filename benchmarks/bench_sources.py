"""Model sources end to end: load, sample, AutoAttack, with wall times and peak memory, one format per process.

    OMP_NUM_THREADS=2 python benchmarks/bench_sources.py robustbench --data npz:../shared/data/cifar10-subset.npz
    OMP_NUM_THREADS=2 python benchmarks/bench_sources.py robustgen --checkpoint runs/cifar-der/best.pt
    OMP_NUM_THREADS=2 python benchmarks/bench_sources.py robustness --sample-only            # ResNet-50 at 224x224
    OMP_NUM_THREADS=2 python benchmarks/bench_sources.py torchvision --self-labels --n-attack 4

Third-party files are built here from randomly initialised architectures in their
real on-disk layouts (RobustBench's Wong2020Fast, a robustness-library ResNet-50,
torchvision and timm ResNet-50 state dicts), so the times are those of the real
code paths, but accuracies mean nothing and AutoAttack has little to attack on a
random model (it only attacks correctly classified images). --self-labels relabels
the test images with the model's own predictions so every image is attacked: the
cost of AutoAttack on a model that is always right. 224x224 formats use a random
ImageFolder (2 classes named by ImageNet index) and --init uniform (the default
initialisers do not scale to D = 150,528 until the sampler rewrite lands).
Peak memory is the process's ru_maxrss, so run one format per process.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustgen.kernel.data import ImageDataset, load_dataset  # noqa: E402
from robustgen.kernel.models.classes import align_dataset  # noqa: E402
from robustgen.kernel.models.sources import load_classifier  # noqa: E402
from samplers import InitConfig, RunOptions, SamplerConfig, StopConfig, sample  # noqa: E402
from training.autoattack_accuracy import evaluate_autoattack  # noqa: E402

CIFAR = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-subset.npz"


def build(fmt: str, work: Path, checkpoint: str | None) -> str:
    """Write the format's file under `work`; return the spec that loads it."""
    if fmt == "robustgen":
        if not checkpoint:
            raise SystemExit("robustgen needs --checkpoint PATH (a best.pt from robustgen train)")
        return checkpoint
    if fmt == "robustbench":
        from robustgen.kernel.models.robustbench_zoo import import_robustbench

        rb = import_robustbench()
        net = rb.model_dicts[rb.BenchmarkDataset("cifar10")][rb.ThreatModel("Linf")]["Wong2020Fast"]["model"]()
        path = work / "zoo" / "cifar10" / "Linf" / "Wong2020Fast.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({k: v for k, v in net.state_dict().items() if k not in ("mu", "sigma")}, path)
        return "robustbench:cifar10/Linf/Wong2020Fast"
    if fmt == "timm":
        import timm

        path = work / "resnet50-timm.pt"
        torch.save(timm.create_model("resnet50", pretrained=False).state_dict(), path)
        return f"timm:resnet50={path}"
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    if fmt == "torchvision":
        path = work / "resnet50-tv.pt"
        torch.save(net.state_dict(), path)
        return f"torchvision:resnet50={path}"
    path = work / "imagenet_linf_4.pt"  # robustness layout
    norm = {"new_mean": torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), "new_std": torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)}
    state = {f"module.normalizer.{k}": v for k, v in norm.items()}
    state.update({f"module.model.{k}": v for k, v in net.state_dict().items()})
    state.update({f"module.attacker.normalize.{k}": v for k, v in norm.items()})
    state.update({f"module.attacker.model.{k}": v for k, v in net.state_dict().items()})
    torch.save({"model": state, "epoch": 90, "schedule": None, "amp": None}, path)
    return f"robustness:{path}"


def imagenet_folder(work: Path, *, train_per_class: int, test_per_class: int) -> str:
    from PIL import Image

    rng = np.random.default_rng(0)
    root = work / "imagenet-2"
    for split, count in (("train", train_per_class), ("val", test_per_class)):
        for cls in ("1", "207"):
            (root / split / cls).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)).save(root / split / cls / f"{i}.png")
    return f"folder:{root}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("format", choices=["robustgen", "robustbench", "robustness", "torchvision", "timm"])
    parser.add_argument("--checkpoint", default=None, help="robustgen: the checkpoint to use")
    parser.add_argument("--data", default=None, help="dataset spec [default: the CIFAR subset for CIFAR formats, a random 224x224 folder otherwise]")
    parser.add_argument("--n-sample", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8, help="sampling chains per batch")
    parser.add_argument("--steps", type=int, default=None, help="224x224: fixed sampler steps [default 10]; CIFAR: the default adaptive sampler")
    parser.add_argument("--n-attack", type=int, default=100)
    parser.add_argument("--attack-steps", type=int, default=None, help="APGD/FAB iterations [default: standard's 100]")
    parser.add_argument("--attacks", default=None, help="custom subset, e.g. apgd-ce [default: standard]")
    parser.add_argument("--self-labels", action="store_true", help="label test images with the model's predictions (everything is attacked)")
    parser.add_argument("--sample-only", action="store_true")
    parser.add_argument("--attack-only", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-sources-"))
    big = args.format in ("robustness", "torchvision", "timm")
    spec = build(args.format, work, args.checkpoint)
    data_spec = args.data or (imagenet_folder(work, train_per_class=8, test_per_class=max(1, (args.n_attack + 1) // 2)) if big else f"npz:{CIFAR}")
    report = {"format": args.format, "spec": spec.split("=")[0] if big else spec, "threads": torch.get_num_threads()}

    t0 = time.perf_counter()
    model, meta = load_classifier(spec, device="cpu", model_dir=work / "zoo", data=data_spec)
    report["load_s"] = round(time.perf_counter() - t0, 2)
    data = align_dataset(load_dataset(data_spec), meta)
    report["rss_after_load_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024

    if not args.attack_only:
        classes = sorted({int(c) for c in np.unique(data.y_train)})[:2]
        if big:
            init, sampler, stop = InitConfig(kind="uniform"), SamplerConfig(steps=args.steps or 10), StopConfig(rule="fixed")
        else:
            init, sampler, stop = InitConfig(), SamplerConfig(**({"steps": args.steps} if args.steps else {})), StopConfig()
        t0 = time.perf_counter()
        result = sample(model, data, classes=classes, init=init, sampler=sampler, stop=stop, run=RunOptions(n=args.n_sample, batch_size=args.batch_size),
                        cache_dir=work / "cache", progress=False)
        seconds = time.perf_counter() - t0
        report["sample"] = {"n": args.n_sample, "batch_size": args.batch_size, "init": init.kind, "stop": stop.rule, "seconds": round(seconds, 1),
                            "s_per_image": round(seconds / args.n_sample, 2), "grad_evals_per_image": result.grad_evals_per_image,
                            "s_per_grad_eval": round(seconds / max(result.grad_evals, 1), 3)}
        report["peak_rss_after_sampling_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(json.dumps(report), flush=True)  # partial result: AutoAttack can take long

    if not args.sample_only:
        if args.self_labels:
            x = torch.from_numpy(data.x_test[: args.n_attack]).permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():
                y = torch.cat([model(x[i : i + 16]).argmax(1) for i in range(0, len(x), 16)]).numpy()
            data = ImageDataset(data.name, data.x_train, data.y_train, data.x_test[: args.n_attack], y, data.classes,
                                crop_padding=data.crop_padding, flip=data.flip, mean=data.mean, std=data.std)
        eps = (meta.get("config") or {}).get("eps") or 4 / 255
        attacks = tuple(args.attacks.split(",")) if args.attacks else None
        result = evaluate_autoattack(model, data, eps=eps, norm=(meta.get("config") or {}).get("norm", "Linf"), attacks=attacks,
                                     steps=args.attack_steps, subset=args.n_attack, batch_size=min(args.n_attack, 50 if big else 100))
        report["autoattack"] = {k: result[k] for k in ("n", "eps", "attack_label", "clean_acc", "robust_acc", "within_eps", "warnings")}
        report["autoattack"]["seconds"] = round(result["seconds"], 1)
        report["autoattack"]["self_labels"] = args.self_labels
    report["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
