"""The training loop: `train(config) -> TrainResult`, with resume and atomic run-dir files.

Run dir layout (DESIGN.md section 5): config.json, metrics.jsonl (one line per
epoch), best.pt (best test PGD accuracy), last.pt (also holds optimizer and RNG
state for --resume), curves.png. An epoch is the unit of resumption: last.pt is
written after every epoch, and a resumed run replays exactly what an
uninterrupted one would have done (same weights, same random numbers).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from robustgen.checkpoint import load_weights, model_meta, read_checkpoint, save_checkpoint
from robustgen.data import ImageDataset, augment, iterate_batches, load_dataset, to_float
from robustgen.device import memory_format, resolve_device, resolve_precision, seed_everything
from robustgen.errors import RobustgenError
from robustgen.io import append_jsonl, atomic_write_json, atomic_write_text, ensure_writable_dir, now_iso, read_jsonl, versions
from robustgen.models import build_model
from training.config import TrainConfig, resolve_config
from training.diagnostics import co_alarm, epoch_summary, plot_curves
from training.evaluate import evaluate_robustness
from training.schedule import learning_rate
from training.step import STAT_KEYS, der_active, train_step

RUN_FILES = ("config.json", "metrics.jsonl", "best.pt", "last.pt", "curves.png", "quiver.png")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best: Path  # checkpoint with the best test PGD accuracy
    last: Path  # checkpoint after the final epoch
    config: TrainConfig  # the resolved config that ran
    metrics: dict  # metrics.jsonl record of the final epoch
    best_metrics: dict  # record of the best epoch
    co_alarms: list  # [(epoch, reason)] for every epoch that raised a CO alarm


def _stderr(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


def build_classifier(config: TrainConfig, dataset: ImageDataset) -> tuple[torch.nn.Module, dict]:
    arch_args = {
        "num_classes": dataset.num_classes,
        "in_channels": dataset.image_shape[0],
        "width": config.width,
        "mean": list(dataset.mean),
        "std": list(dataset.std),
    }
    if config.arch != "preact-resnet18":
        arch_args.pop("width")
    return build_model(config.arch, **arch_args), arch_args


def _prepare_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    if run_dir.is_dir() and any(run_dir.iterdir()):
        if not overwrite:
            raise RobustgenError(
                f"output directory {run_dir} already holds files: pass --resume {run_dir} to continue that run, --overwrite to replace it, or --out elsewhere"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    elif run_dir.exists() and not run_dir.is_dir():
        raise RobustgenError(f"output path {run_dir} is a file, not a directory: choose another --out")
    ensure_writable_dir(run_dir)


def selection_score(record: dict, config: TrainConfig) -> float:
    """What best.pt maximises: test PGD accuracy (clean accuracy breaks ties; it is the criterion for `standard`)."""
    if config.method == "standard":
        return record["test_clean_acc"]
    return record["test_pgd_acc"] + 1e-6 * record["test_clean_acc"]


def epoch_line(record: dict, config: TrainConfig) -> str:
    """One console line per epoch; attack and energy columns only where they mean something."""
    parts = [f"epoch {record['epoch'] + 1}/{config.epochs}", f"loss {record['train_loss']:.3f}"]
    if config.method == "standard":
        parts.append(f"train acc {record['train_nat_acc']:.3f}")
    else:
        parts.append(f"train adv {record['train_adv_acc']:.3f}")
    parts.append(f"test clean {record['test_clean_acc']:.3f}")
    if config.eval_pgd_steps > 0:
        parts.append(f"test PGD-{config.eval_pgd_steps} {record['test_pgd_acc']:.3f}")
    if config.method != "standard":
        parts.append(f"dE(x) {record['de_x_mean']:+.2f}  dE(x,y) {record['de_xy_mean']:+.2f}  AAE {record['aae_count']} (high {record['aae_high_count']})")
    parts.append(f"{record['time_s']:.1f}s")
    return "  ".join(parts)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "generator": generator.get_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    generator.set_state(state["generator"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = _stderr,
    on_epoch_end: Callable[[int, dict], None] | None = None,
) -> TrainResult:
    """Train a classifier as `config` says, or continue the run in `resume` (its config.json wins)."""
    say = log or (lambda message: None)
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").is_file():
            raise RobustgenError(f"cannot resume {run_dir}: no config.json there (is it a robustgen run dir?)")
        import json

        try:
            recorded = json.loads((run_dir / "config.json").read_text())
            config = TrainConfig.from_dict(recorded["config"])
        except (ValueError, KeyError, TypeError):
            raise RobustgenError(f"cannot resume {run_dir}: config.json is unreadable; start a new run with --overwrite") from None
        if not (run_dir / "last.pt").is_file():
            raise RobustgenError(f"cannot resume {run_dir}: no last.pt yet (the run stopped in its first epoch); start again with --overwrite")
    else:
        config = resolve_config(config if config is not None else TrainConfig())
        run_dir = Path(config.out)
    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    dataset = load_dataset(config.dataset, root=config.data_root)
    fingerprint = dataset.fingerprint()
    if resume is not None and recorded.get("dataset", {}).get("sha256") not in (None, fingerprint):
        raise RobustgenError(f"cannot resume {run_dir}: dataset {config.dataset} differs from the one the run started with (sha256 changed)")
    if resume is None:
        _prepare_run_dir(run_dir, overwrite=overwrite)

    generator = seed_everything(config.seed)
    model, arch_args = build_classifier(config, dataset)
    model = model.to(device=device, memory_format=memory_format(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    meta_base = model_meta(arch=config.arch, arch_args=arch_args, dataset=dataset, data_root=config.data_root)
    metrics_path = run_dir / "metrics.jsonl"

    start_epoch, best_acc, best_epoch = 0, -1.0, -1
    if resume is not None:
        payload = read_checkpoint(run_dir / "last.pt")
        extra = payload.get("extra") or {}
        if "optimizer" not in extra:
            raise RobustgenError(f"cannot resume {run_dir}: last.pt holds no optimizer state")
        load_weights(model, payload["state_dict"], source=str(run_dir / "last.pt"))
        optimizer.load_state_dict(extra["optimizer"])
        _set_rng_state(extra["rng"], generator, device)
        start_epoch, best_acc, best_epoch = int(extra["epoch"]) + 1, float(extra["best_acc"]), int(extra["best_epoch"])
        history = [r for r in read_jsonl(metrics_path) if r["epoch"] < start_epoch] if metrics_path.exists() else []
        atomic_write_text(metrics_path, "".join(__import__("json").dumps(r, sort_keys=True) + "\n" for r in history))
        say(f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs}")
    else:
        history = []
        atomic_write_json(run_dir / "config.json", {
            "config": config.to_dict(),
            "seed": config.seed,
            "device": str(device),
            "precision": precision,
            "versions": versions(),
            "dataset": {"spec": config.dataset, "sha256": fingerprint, "n_train": len(dataset.y_train),
                        "n_test": len(dataset.y_test), "image_shape": list(dataset.image_shape), "classes": list(dataset.classes)},
            "created": now_iso(),
            "argv": sys.argv,
        })

    x_train = torch.as_tensor(dataset.x_train).to(device)  # uint8 NHWC; floats are made per batch
    y_train = torch.as_tensor(dataset.y_train).to(device)
    steps_per_epoch = math.ceil(len(y_train) / config.batch_size)
    from tqdm.auto import tqdm

    for epoch in range(start_epoch, config.epochs):
        started = time.perf_counter()
        sums = {k: torch.zeros((), device=device) for k in STAT_KEYS}
        batches = iterate_batches(x_train, y_train, batch_size=config.batch_size, shuffle=True, generator=generator)
        bar = tqdm(batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", disable=(not progress) or None, leave=False)
        lr = config.lr
        for i, (xb, yb) in enumerate(bar):
            lr = learning_rate(epoch + (i + 1) / steps_per_epoch, schedule=config.schedule, lr=config.lr, epochs=config.epochs)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x = augment(to_float(xb, device), crop_padding=dataset.crop_padding, flip=dataset.flip, generator=generator)
            x = x.contiguous(memory_format=memory_format(device))
            stats = train_step(model, optimizer, x, yb, config=config, epoch=epoch, precision=precision)
            for k in STAT_KEYS:
                sums[k] = torch.maximum(sums[k], stats[k]) if k == "de_norm_max" else sums[k] + stats[k]
        if not math.isfinite(float(sums["loss"])):
            raise RobustgenError(f"training diverged at epoch {epoch + 1} (loss is not finite): lower --lr or --der-beta")
        train_time = time.perf_counter() - started
        evaluation = evaluate_robustness(
            model, dataset, eps=config.eps, norm=config.norm, steps=config.eval_pgd_steps, restarts=1,
            subset=config.eval_subset, seed=config.seed, precision=precision,
        )
        record = {
            "epoch": epoch,
            **epoch_summary(sums),
            "test_clean_acc": evaluation["clean_acc"],
            "test_pgd_acc": evaluation["robust_acc"],
            "eval_pgd_steps": config.eval_pgd_steps,
            "eval_n": evaluation["n"],
            "der_active": der_active(config, epoch),
            "lr": lr,
            "train_time_s": train_time,
            "time_s": time.perf_counter() - started,
            "images_per_s": len(y_train) / train_time,
        }
        record["co_alarm"] = co_alarm(record, history)
        history.append(record)
        append_jsonl(metrics_path, record)
        say(epoch_line(record, config))
        if record["co_alarm"]:
            say(f"CATASTROPHIC OVERFITTING ALARM at epoch {epoch + 1}: {record['co_alarm']}")
        meta = {**meta_base, "config": config.to_dict(), "epoch": epoch, "metrics": record}
        score = selection_score(record, config)
        if score > best_acc:
            best_acc, best_epoch = score, epoch
            save_checkpoint(run_dir / "best.pt", model=model, meta=meta)
        save_checkpoint(run_dir / "last.pt", model=model, meta=meta, extra={
            "optimizer": optimizer.state_dict(),
            "rng": _rng_state(generator, device),
            "epoch": epoch,
            "best_acc": best_acc,
            "best_epoch": best_epoch,
        })
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    plot_curves(history, run_dir / "curves.png", title=f"{config.dataset} {config.method}{' + DER' if config.der else ''}")
    return TrainResult(
        run_dir=run_dir,
        best=run_dir / "best.pt",
        last=run_dir / "last.pt",
        config=config,
        metrics=history[-1],
        best_metrics=history[best_epoch] if 0 <= best_epoch < len(history) else history[-1],
        co_alarms=[(r["epoch"], r["co_alarm"]) for r in history if r.get("co_alarm")],
    )
