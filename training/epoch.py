"""One training session's state and one epoch of it: batches, steps, in-epoch checks, the epoch record.

`build_session` puts the data on the device once (uint8; floats are made per
batch, augmentation runs there in batch), builds the model (channels_last under
bf16, SyncBN or per-rank BN, DDP under torchrun, torch.compile if asked) and
the optimizer. `run_epoch` trains one epoch and returns its metrics.jsonl
record; `save_epoch` writes it and the checkpoints (rank 0).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from robustgen.kernel.models.checkpoint import model_meta, save_checkpoint
from robustgen.kernel.data import ImageDataset, augment, to_float
from robustgen.kernel.device import LONG_RUN_IMAGE_STEPS, derived_seed, maybe_compile, memory_format, resolve_compile
from robustgen.kernel.distributed import Dist
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import append_jsonl
from robustgen.kernel.models import build_model
from training.config import TrainConfig
from training.diagnostics import co_alarm, epoch_summary
from training.pgd_accuracy import evaluate_robustness
from training.finetune import (GenerativeState, after_step, begin_epoch, build_state, contrast_batch, end_epoch, epoch_fields,
                               holdout_split, is_generative_epoch, load_init, selection_statistic, state_dict)
from training.methods import get_method
from training.monitor import Monitor, TrainingStopped
from training.schedule import learning_rate
from training.step import MAX_KEYS, StepModels, accumulate, der_active, train_step, zero_stats



@dataclass
class Session:
    config: TrainConfig
    dataset: ImageDataset
    dist: Dist
    precision: str
    run_dir: Path
    net: nn.Module  # the plain model (what checkpoints hold)
    models: StepModels
    optimizer: torch.optim.Optimizer
    monitor: Monitor
    x_train: torch.Tensor  # uint8 NHWC on the device
    y_train: torch.Tensor
    meta_base: dict
    say: Callable[[str], None]
    progress: bool
    history: list = field(default_factory=list)
    best_score: float = -1.0
    best_epoch: int = -1
    stopped: str | None = None
    gen: GenerativeState | None = None  # generative fine-tuning (training.finetune), None in other runs

    @property
    def device(self) -> torch.device:
        return self.dist.device

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.y_train) / self.config.batch_size)


def build_classifier(config: TrainConfig, dataset: ImageDataset) -> tuple[nn.Module, dict]:
    arch_args = {"num_classes": dataset.num_classes, "in_channels": dataset.image_shape[0], "width": config.width,
                 "mean": list(dataset.mean), "std": list(dataset.std)}
    if config.arch != "preact-resnet18":
        arch_args.pop("width")
    return build_model(config.arch, **arch_args), arch_args


def check_world(config: TrainConfig, dist: Dist) -> None:
    """What the number of ranks requires of the config; `train` checks it before the run dir is touched."""
    if config.batch_size % dist.world_size:
        raise RobustgenError(f"--batch-size {config.batch_size} is the global batch and must divide by the {dist.world_size} ranks: use a multiple of {dist.world_size}")


def build_session(config: TrainConfig, dataset: ImageDataset, *, dist: Dist, precision: str, run_dir: Path, say, progress: bool) -> Session:
    check_world(config, dist)
    device = dist.device
    torch.manual_seed(derived_seed(config.seed, 0))  # identical initial weights on every rank
    net, arch_args = build_classifier(config, dataset)
    if config.init_from is not None:
        load_init(net, config, dataset)
    if config.sync_bn and dist.active:
        net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
    net = net.to(device=device, memory_format=memory_format(device, precision))
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    models = _step_models(net, config, dataset, dist, say)
    x_train, y_train, gen = _training_images(config, dataset, device)
    pick = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(derived_seed(config.seed, 7)))[: config.co_check_images]
    monitor = Monitor(config, to_float(x_train[pick.to(device)], device), y_train[pick.to(device)], dist, der=config.der, der_beta=config.der_beta)
    meta_base = model_meta(arch=config.arch, arch_args=arch_args, dataset=dataset, data_root=config.data_root)
    return Session(config, dataset, dist, precision, run_dir, net, models, optimizer, monitor, x_train, y_train, meta_base, say, progress, gen=gen)


def _training_images(config: TrainConfig, dataset: ImageDataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, GenerativeState | None]:
    """(x_train, y_train) on the device, and a generative run's state: its held-out images never train."""
    x, y = dataset.x_train, dataset.y_train
    if not config.generative:
        return torch.as_tensor(x).to(device), torch.as_tensor(y).to(device), None
    train, held = holdout_split(len(y), config)
    return torch.as_tensor(x[train]).to(device), torch.as_tensor(y[train]).to(device), build_state(config, dataset, x[held], device)


def _step_models(net: nn.Module, config: TrainConfig, dataset: ImageDataset, dist: Dist, say) -> StepModels:
    images = config.epochs * len(dataset.y_train) * max(config.steps, 1)  # image-steps: epochs x images x attack steps
    compiled, warning = resolve_compile(config.compile, dist.device, long_run=images >= LONG_RUN_IMAGE_STEPS)
    if warning:
        say(warning)
    attack = maybe_compile(net, compiled)
    if not dist.active:
        return StepModels(attack, attack)
    ids = [dist.device.index] if dist.device.type == "cuda" else None
    # per-rank BN statistics unless --sync-bn: no buffer broadcast (it would also clash with the attack's forwards)
    ddp = nn.parallel.DistributedDataParallel(net, device_ids=ids, broadcast_buffers=False)
    return StepModels(attack, maybe_compile(ddp, compiled))


def _seed_epoch(session: Session, epoch: int) -> tuple[torch.Generator, torch.Generator]:
    """(order, augmentation) generators for `epoch`; the global RNG (attack noise) is reseeded too."""
    seed, rank = session.config.seed, session.dist.rank
    torch.manual_seed(derived_seed(seed, rank, epoch, 1))
    order = torch.Generator().manual_seed(derived_seed(seed, epoch))  # the same permutation on every rank
    return order, torch.Generator().manual_seed(derived_seed(seed, rank, epoch, 2))


def _batches(session: Session, order: torch.Generator):
    """This rank's share of each global batch of the epoch's permutation."""
    n, batch, dist = len(session.y_train), session.config.batch_size, session.dist
    permutation = torch.randperm(n, generator=order).to(session.device)
    for start in range(0, n, batch):
        global_batch = permutation[start : start + batch]
        if len(global_batch) < dist.world_size:
            continue  # a tail too small to give every rank a sample
        yield global_batch.tensor_split(dist.world_size)[dist.rank]


def run_epoch(session: Session, epoch: int) -> dict:
    """Train one epoch (with in-epoch CO checks), evaluate, and return the metrics.jsonl record."""
    from tqdm.auto import tqdm

    config, device = session.config, session.device
    started = time.perf_counter()
    order, aug = _seed_epoch(session, epoch)
    gen = session.gen if is_generative_epoch(config, epoch) else None
    steps_at_start = _begin_generative(session, gen)
    contrast_rng = torch.Generator().manual_seed(derived_seed(config.seed, session.dist.rank, epoch, 3))
    crop, flip = ("crop" in config.augment) * session.dataset.crop_padding, "flip" in config.augment
    if gen is not None:  # no augmentation on the generative path
        crop, flip = 0, False
    sums, steps, checks = zero_stats(device), session.steps_per_epoch, []
    session.monitor.start_epoch(session.net, session.optimizer, epoch * steps)
    bar = tqdm(_batches(session, order), total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
               disable=None if (session.progress and session.dist.is_main) else True)
    lr = config.lr
    for i, idx in enumerate(bar):
        lr = epoch_learning_rate(config, epoch, (i + 1) / steps)
        for group in session.optimizer.param_groups:
            group["lr"] = lr
        x = augment(to_float(session.x_train[idx], device), crop_padding=crop, flip=flip, generator=aug)
        x = x.contiguous(memory_format=memory_format(device, session.precision))
        contrast = contrast_batch(gen, session.models.attack, len(idx), contrast_rng) if gen is not None else None
        stats = train_step(session.models, session.optimizer, x, session.y_train[idx], config=config, epoch=epoch,
                           precision=session.precision, der=session.monitor.der, der_beta=session.monitor.der_beta, contrast=contrast)
        accumulate(sums, stats)
        session.monitor.add(stats)
        if gen is not None:
            after_step(gen, session.net, stats, config, session.dist)
            bar.set_postfix(T=gen.steps, refresh=False)
        if session.monitor.due(epoch * steps + i + 1) and _check(session, epoch, epoch * steps + i + 1, checks):
            break
    if gen is not None:
        end_epoch(gen, config, session.dist)
    record = _epoch_record(session, epoch, sums, checks, lr=lr, started=started, train_time=time.perf_counter() - started)
    return {**record, **epoch_fields(gen, sums, steps_at_start)} if gen is not None else record


def _begin_generative(session: Session, gen: GenerativeState | None) -> int:
    """Start a generative epoch (EMA/reference at the first, fresh AUC windows); returns T at its start (0 outside)."""
    if gen is None:
        return 0
    begin_epoch(gen, session.net)
    return gen.steps


def epoch_learning_rate(config: TrainConfig, epoch: int, fraction: float) -> float:
    """The lr `fraction` into `epoch`: the schedule over the base epochs, then the constant gen_lr in generative epochs."""
    if is_generative_epoch(config, epoch):
        return config.gen_lr
    base_epochs = config.gen_start if config.generative else config.epochs
    return learning_rate(epoch + fraction, schedule=config.schedule, lr=config.lr, epochs=base_epochs)


def _check(session: Session, epoch: int, step: int, checks: list) -> bool:
    """One in-epoch CO check; True when the run must stop here."""
    try:
        check = session.monitor.check(session.net, session.optimizer, epoch=epoch, step=step, log=session.say)
    except TrainingStopped as stop:
        session.stopped = str(stop)
        checks.append({"epoch": epoch, "step": step, "action": "stop", "alarm": str(stop)})
        return True
    checks.append(check.to_dict())
    return False


def _epoch_record(session: Session, epoch: int, sums: dict, checks: list, *, lr: float, started: float, train_time: float) -> dict:
    config, dist = session.config, session.dist
    sums = {k: (dist.all_reduce_max(v) if k in MAX_KEYS else dist.all_reduce_sum(v)) for k, v in sums.items()}
    if not math.isfinite(float(sums["loss"])):
        raise RobustgenError(f"training diverged at epoch {epoch + 1} (loss is not finite): lower --lr or --der-beta")
    evaluated = session.gen.ema if is_generative_epoch(config, epoch) else session.net  # what best.pt would hold
    evaluation = evaluate_robustness(
        evaluated, session.dataset, eps=config.eps, norm=config.norm, steps=config.eval_pgd_steps, restarts=1,
        subset=config.eval_subset, seed=config.seed, precision=session.precision,
    )
    record = {
        "epoch": epoch,
        **epoch_summary(sums),
        "test_clean_acc": evaluation["clean_acc"],
        "test_pgd_acc": evaluation["robust_acc"],
        "eval_pgd_steps": config.eval_pgd_steps,
        "eval_n": evaluation["n"],
        "der_active": der_active(config, epoch, der=session.monitor.der),
        "der_beta": session.monitor.der_beta,
        "co_checks": len(checks),
        "interventions": [c for c in checks if c.get("action") not in (None, "warn")],
        "lr": lr,
        "train_time_s": train_time,
        "time_s": time.perf_counter() - started,
        "images_per_s": float(sums["n"]) / max(train_time, 1e-9),
    }
    if session.stopped:
        record["stopped"] = session.stopped
    if is_generative_epoch(config, epoch):
        record["heldout_frechet"] = selection_statistic(session.gen, config)
    record["co_alarm"] = co_alarm(record, session.history) or _first_alarm(checks)
    record["monitor"] = checks
    return record


def _first_alarm(checks: list) -> str | None:
    alarms = [c for c in checks if c.get("alarm")]
    return f"in-epoch check at step {alarms[0]['step']}: {alarms[0]['alarm']}" if alarms else None


def save_epoch(session: Session, epoch: int, record: dict) -> None:
    """Append the record (metrics.jsonl, monitor.jsonl), log it, write best.pt/last.pt (rank 0)."""
    checks = record.pop("monitor")
    session.history.append(record)
    score = selection_score(record, session.config)
    if record.get("heldout_frechet") is not None and epoch == session.config.gen_start:
        session.best_score = -math.inf  # the first generative epoch: best.pt becomes a fine-tuned model
    if score > session.best_score:
        session.best_score, session.best_epoch = score, epoch
    if not session.dist.is_main:
        return
    for check in checks:
        append_jsonl(session.run_dir / "monitor.jsonl", check)
    append_jsonl(session.run_dir / "metrics.jsonl", record)
    session.say(epoch_line(record, session.config))
    if record["co_alarm"]:
        session.say(f"CATASTROPHIC OVERFITTING ALARM at epoch {epoch + 1}: {record['co_alarm']}")
    meta = {**session.meta_base, "config": session.config.to_dict(), "epoch": epoch, "metrics": record, "precision": session.precision}
    if session.best_epoch == epoch:
        best = session.gen.ema if record.get("heldout_frechet") is not None else session.net  # a generative run's best.pt: EMA weights
        save_checkpoint(session.run_dir / "best.pt", model=best, meta={**meta, "weights": "ema" if best is not session.net else "model"})
    save_checkpoint(session.run_dir / "last.pt", model=session.net, meta=meta, extra={
        "optimizer": session.optimizer.state_dict(),
        "epoch": epoch,
        "best_acc": session.best_score,
        "best_epoch": session.best_epoch,
        "monitor": session.monitor.state(),
        "stopped": session.stopped,
        "generative": state_dict(session.gen) if session.gen is not None else None,
    })



def selection_score(record: dict, config: TrainConfig) -> float:
    """What best.pt maximises: test PGD accuracy (clean accuracy breaks ties; it is the criterion for `standard`);
    in generative epochs minus the held-out Frechet distance (training.finetune: held-out training images, never the test split)."""
    if record.get("heldout_frechet") is not None:
        return -record["heldout_frechet"]
    return get_method(config.method).selection_key(record)


def epoch_line(record: dict, config: TrainConfig) -> str:
    """One console line per epoch; attack and energy columns only where they mean something."""
    parts = [f"epoch {record['epoch'] + 1}/{config.epochs}", f"loss {record['train_loss']:.3f}"]
    adversarial = get_method(config.method).adversarial
    parts.append(f"train adv {record['train_adv_acc']:.3f}" if adversarial else f"train acc {record['train_nat_acc']:.3f}")
    parts.append(f"test clean {record['test_clean_acc']:.3f}")
    if config.eval_pgd_steps > 0:
        parts.append(f"test PGD-{config.eval_pgd_steps} {record['test_pgd_acc']:.3f}")
    if adversarial:
        parts.append(f"dE(x) {record['de_x_mean']:+.2f}  dE(x,y) {record['de_xy_mean']:+.2f}  AAE {record['aae_count']} (high {record['aae_high_count']})")
    if record.get("generative"):
        auc_text = "-" if record["gen_auc"] is None else f"{record['gen_auc']:.3f}"
        parts.append(f"AUC {auc_text}  T {record['gen_steps_start']}->{record['gen_steps']}  E(real) {record['energy_real_mean']:+.2f}  "
                     f"E(contrast) {record['energy_ood_mean']:+.2f}  held-out FD {record['heldout_frechet']:.3g}")
    parts.append(f"{record['time_s']:.1f}s")
    return "  ".join(parts)
