"""The training loop: `train(config) -> TrainResult`, with resume, in-epoch CO checks and torchrun.

Run dir layout (DESIGN.md section 5): config.json, metrics.jsonl (one line per
epoch), monitor.jsonl (one line per in-epoch CO check), best.pt (best test PGD
accuracy), last.pt (also holds optimizer and monitor state for --resume),
curves.png. An epoch is the unit of resumption: every random number of epoch e
comes from generators seeded by (seed, e) (and the rank), so a resumed run
replays exactly what an uninterrupted one does, whatever happened before.

Under torchrun each rank takes its share of every global batch of the epoch's
permutation (the epoch single-process training sees), `batch_size` is the
global batch, gradients are averaged by DistributedDataParallel, every
statistic is all-reduced, and rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from robustgen.kernel import distributed
from robustgen.kernel.models.checkpoint import load_weights, read_checkpoint
from robustgen.kernel.data import conversion_note, load_dataset
from robustgen.kernel.device import resolve_precision
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import LOCK_NAME, atomic_write_json, atomic_write_text, clean_stale_temps, ensure_writable_dir, now_iso, read_jsonl, run_dir_lock, versions
from training.config import TrainConfig, resolve_config
from training.diagnostics import plot_curves
from training.epoch import Session, build_session, check_world, run_epoch, save_epoch
from training.finetune import load_state as load_generative_state

RUN_FILES = ("config.json", "metrics.jsonl", "monitor.jsonl", "best.pt", "last.pt", "curves.png", "quiver.png")


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best: Path  # checkpoint with the best test PGD accuracy (generative runs: the EMA weights with the best held-out statistic)
    last: Path  # checkpoint after the final epoch
    config: TrainConfig  # the resolved config that ran
    metrics: dict  # metrics.jsonl record of the final epoch
    best_metrics: dict  # record of the best epoch
    co_alarms: list  # [(epoch, reason)] for every epoch that raised a CO alarm
    stopped: str | None = None  # why the run ended early (--on-co stop), None if it ran every epoch


def _stderr(message: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(message, file=sys.stderr)


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
    if resume is not None:
        config, run_dir, recorded = _recorded_run(Path(resume))
    else:
        config = resolve_config(config if config is not None else TrainConfig())
        run_dir, recorded = Path(config.out), None
    dist = distributed.setup(config.device)
    check_world(config, dist)  # under torchrun: refused before config.json is written
    dataset = load_dataset(config.dataset, root=config.data_root, channels=config.channels)  # before anything is written: a bad spec leaves no trace
    if recorded is not None and recorded.get("dataset", {}).get("sha256") not in (None, dataset.fingerprint()):
        raise RobustgenError(f"cannot resume {run_dir}: dataset {config.dataset} differs from the one the run started with (sha256 changed)")
    with contextlib.ExitStack() as held:
        if dist.is_main and (recorded is not None or _may_write(run_dir, overwrite)):
            held.enter_context(run_dir_lock(run_dir))  # one writer per run dir
            clean_stale_temps(run_dir)  # what a killed write left behind
        return _train(config, dataset, run_dir, recorded, dist, overwrite=overwrite, progress=progress, log=log, on_epoch_end=on_epoch_end)


def _may_write(run_dir: Path, overwrite: bool) -> bool:
    """Lock only a dir this run may write into (a refused one must stay untouched)."""
    return overwrite or not (run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()))


def _train(config, dataset, run_dir, recorded, dist, *, overwrite, progress, log, on_epoch_end) -> TrainResult:
    say = (log or (lambda message: None)) if dist.is_main else (lambda message: None)
    precision = resolve_precision(config.precision, dist.device)
    note = conversion_note(dataset)
    if note:
        say(note)
    if recorded is None:
        config = replace(config, augment=config.augment or default_augment(dataset))
    # the session first: a bad --init-from or --ood is refused before the run dir is touched
    session = build_session(config, dataset, dist=dist, precision=precision, run_dir=run_dir, say=say, progress=progress)
    if recorded is None:
        if dist.is_main:
            _prepare_run_dir(run_dir, overwrite=overwrite)
            _write_config(run_dir, config, dataset, dist, precision)
        dist.barrier()
    start_epoch = _restore(session) if recorded is not None else 0
    if recorded is not None:
        done = start_epoch >= config.epochs
        say(f"{run_dir} already finished all {config.epochs} epochs: nothing to do" if done else f"resuming {run_dir} at epoch {start_epoch + 1}/{config.epochs}")
    for epoch in range(start_epoch, config.epochs):
        record = run_epoch(session, epoch)
        save_epoch(session, epoch, record)
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)
        if session.stopped:
            break
    return _finish(session)


def default_augment(dataset) -> str:
    """The dataset's own augmentation: random crop where it has padding, flips where images may be mirrored."""
    parts = [name for name, on in (("crop", dataset.crop_padding > 0), ("flip", dataset.flip)) if on]
    return "+".join(parts) or "none"


def _recorded_run(run_dir: Path) -> tuple[TrainConfig, Path, dict]:
    if not (run_dir / "config.json").is_file():
        raise RobustgenError(f"cannot resume {run_dir}: no config.json there (is it a robustgen run dir?)")
    try:
        recorded = json.loads((run_dir / "config.json").read_text())
        config = TrainConfig.from_dict(recorded["config"])
    except (ValueError, KeyError, TypeError):
        raise RobustgenError(f"cannot resume {run_dir}: config.json is unreadable; start a new run with --overwrite") from None
    return config, run_dir, recorded


def _prepare_run_dir(run_dir: Path, *, overwrite: bool) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise RobustgenError(f"output path {run_dir} is a file, not a directory: choose another --out")
    if run_dir.is_dir() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        if not overwrite:
            raise RobustgenError(
                f"output directory {run_dir} already holds files: pass --resume {run_dir} to continue that run, --overwrite to replace it, or --out elsewhere"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
    ensure_writable_dir(run_dir)


def _write_config(run_dir: Path, config: TrainConfig, dataset, dist, precision: str) -> None:
    from robustgen.kernel.device import memory_format

    atomic_write_json(run_dir / "config.json", {
        "config": config.to_dict(),
        "seed": config.seed,
        "device": str(dist.device),
        "precision": precision,
        "memory_format": str(memory_format(dist.device, precision)).replace("torch.", ""),
        "world_size": dist.world_size,
        "backend": dist.backend,
        "batch_norm": "sync" if config.sync_bn else ("per-rank" if dist.active else "local"),
        "versions": versions(),
        "dataset": {"spec": config.dataset, "sha256": dataset.fingerprint(), "n_train": len(dataset.y_train),
                    "n_test": len(dataset.y_test), "image_shape": list(dataset.image_shape), "classes": list(dataset.classes),
                    "converted_images": int(getattr(dataset, "converted", 0))},
        "created": now_iso(),
        "argv": sys.argv,
    })


def _restore(session: Session) -> int:
    """Load last.pt into the session (every rank); returns the first epoch still to run."""
    run_dir = session.run_dir
    if not (run_dir / "last.pt").is_file():  # killed in its first epoch: nothing finished, so start it again
        session.say(f"{run_dir} has no finished epoch yet: starting it again from epoch 1")
        for name in ("metrics.jsonl", "monitor.jsonl"):
            (run_dir / name).unlink(missing_ok=True)
        return 0
    payload = read_checkpoint(run_dir / "last.pt")
    extra = payload.get("extra") or {}
    if "optimizer" not in extra or "epoch" not in extra:
        raise RobustgenError(f"cannot resume {run_dir}: last.pt holds no optimizer state")
    if extra.get("stopped"):
        raise RobustgenError(f"{run_dir} already finished: {extra['stopped']}; start a new run (--overwrite) to train again")
    load_weights(session.net, payload["state_dict"], source=str(run_dir / "last.pt"))
    session.optimizer.load_state_dict(extra["optimizer"])
    session.monitor.load_state(extra["monitor"])
    session.best_score, session.best_epoch = float(extra["best_acc"]), int(extra["best_epoch"])
    if session.gen is not None and extra.get("generative") is not None:
        load_generative_state(session.gen, extra["generative"], session.net)
    start = int(extra["epoch"]) + 1
    for name in ("metrics.jsonl", "monitor.jsonl"):  # drop what the interrupted epoch had started to write
        path = run_dir / name
        kept = [r for r in read_jsonl(path) if r["epoch"] < start] if path.exists() else []
        if name == "metrics.jsonl":
            session.history = kept
        if session.dist.is_main:
            atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
    return start


def _finish(session: Session) -> TrainResult:
    config, history, run_dir = session.config, session.history, session.run_dir
    if not history:
        raise RobustgenError(f"{run_dir} has no finished epoch to report")
    if session.dist.is_main:
        plot_curves(history, run_dir / "curves.png", title=f"{config.dataset} {config.method}{' + DER' if config.der else ''}{' + generative' if config.generative else ''}")
    session.dist.barrier()
    best = next((r for r in history if r["epoch"] == session.best_epoch), history[-1])
    return TrainResult(
        run_dir=run_dir,
        best=run_dir / "best.pt",
        last=run_dir / "last.pt",
        config=config,
        metrics=history[-1],
        best_metrics=best,
        co_alarms=[(r["epoch"], r["co_alarm"]) for r in history if r.get("co_alarm")],
        stopped=session.stopped,
    )

