"""Catastrophic-overfitting alarms within the epoch, and what an alarm does (`--on-co`).

CO happens within a few hundred SGD steps, so waiting for the epoch-end test
evaluation is too late to act. Every `co_check_every` steps the monitor reads
two kinds of signal:

- free ones, from the training steps since the last check: the AAE rate and
  the mean delta-energy norm ||[dE(x), dE(x, y)]|| (the seed paper's
  signature of CO: a few abnormal adversarial examples with large energy
  shifts, then many);
- cheap ones, on a fixed mini-batch of *training* images (no test data steers
  training), in eval mode: PGD-2 accuracy and zero-init FGSM accuracy. CO is
  the point where FGSM stops finding adversarial examples that PGD still
  finds: PGD accuracy falls while the FGSM accuracy stays up.

An alarm fires on an AAE surge (AAE_ALARM_RATE of the training samples of the
last windows are abnormal adversarial examples while the PGD accuracy of the
checks falls below AAE_PGD_FRACTION of its best: on the CIFAR-10 subset healthy
and DER runs stay at 0-7%, runs that go on to collapse reach 15-45% an epoch or
more before their test PGD accuracy falls) or on a PGD collapse (accuracy below
training.collapse.COLLAPSE_FRACTION of its best, with FGSM at least MASKING_GAP above PGD). Under torchrun every number is all-reduced first, so all
ranks see the same values and take the same decision.

`--on-co`: warn (log it), stop (end the run cleanly), rollback (restore the
weights and optimizer state of the last healthy check, kept in memory; last.pt
on disk is the last healthy epoch), der (roll back, then switch DER on, or
double beta if it was on). The data order and learning-rate schedule go on.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import torch
from torch import Tensor, nn

from robustgen.kernel.device import derived_seed
from robustgen.kernel.distributed import Dist
from training.attacks import fgsm, pgd
from training.collapse import collapsed
from training.config import TrainConfig
from training.methods import get_method
from training.step import MAX_KEYS, accumulate, zero_stats

# A PGD collapse is training.collapse.collapsed(smoothed PGD-2 accuracy, its best) ...
MASKING_GAP = 0.10  # ... while FGSM accuracy is at least this much higher (single-step gradients masked)
AAE_ALARM_RATE = 0.20  # abnormal adversarial examples among the training samples of the last SMOOTHING windows ...
AAE_PGD_FRACTION = 0.9  # ... while the smoothed PGD-2 accuracy is below this fraction of its best (robust digits
# training climbs from 10% to 22% AAEs over 30 epochs with its PGD accuracy intact: no collapse, no alarm)
SMOOTHING = 2  # PGD/FGSM accuracies are averaged over this many consecutive checks
MAX_INTERVENTIONS = 5  # rollbacks after which the run stops instead
CHECK_PGD_STEPS = 2


class TrainingStopped(Exception):
    """Raised inside the epoch when `--on-co stop` (or too many interventions) ends the run."""


@dataclass
class Check:
    """One in-epoch check: what was measured and what it led to (a line of monitor.jsonl)."""

    epoch: int
    step: int  # global SGD step (counted from the start of the run)
    pgd_acc: float
    fgsm_acc: float
    aae_rate: float  # AAEs / training samples since the previous check
    de_norm_mean: float  # mean ||[dE(x), dE(x, y)]|| since the previous check
    train_adv_acc: float
    alarm: str | None = None
    action: str | None = None
    rolled_back_to_step: int | None = None
    der: bool | None = None
    der_beta: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Monitor:
    config: TrainConfig
    images: Tensor  # fixed training images for the checks (float NCHW on the device)
    labels: Tensor
    dist: Dist
    der: bool  # DER state the run is in (an intervention may switch it on)
    der_beta: float
    interventions: int = 0
    history: list = field(default_factory=list)  # every earlier check (Check.to_dict()), what the alarm rule reads
    window: dict = field(default_factory=dict)
    snapshot: dict | None = None
    snapshot_step: int = 0

    def start_epoch(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        self.window = zero_stats(self.images.device)
        if self.snapshot is None:
            self._snapshot(model, optimizer, step)

    def add(self, stats: dict[str, Tensor]) -> None:
        accumulate(self.window, stats)

    def due(self, step: int) -> bool:
        """Checks run every co_check_every steps, for methods with an attack (standard training cannot overfit catastrophically)."""
        every = self.config.co_check_every
        return every > 0 and step % every == 0 and get_method(self.config.method).attack is not None

    def check(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, epoch: int, step: int, log) -> Check:
        """Measure, decide, act. Raises TrainingStopped when the run must end."""
        result = self._measure(model, epoch=epoch, step=step)
        result.alarm = alarm_reason(self.history, result)
        self.history.append(result.to_dict())
        if result.alarm is None:
            self._snapshot(model, optimizer, step)
        else:
            self._act(result, model, optimizer, log)
        self.window = zero_stats(self.images.device)
        return result

    def _measure(self, model: nn.Module, *, epoch: int, step: int) -> Check:
        window = {k: self.dist.all_reduce_sum(v) for k, v in self.window.items() if k not in MAX_KEYS}
        n = max(float(window["n"]), 1.0)
        was_training = model.training
        model.eval()
        x, y = self.dist.shard(self.images), self.dist.shard(self.labels)
        eps, norm = self.config.eps, self.config.norm
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # the check never changes the run's random numbers
            torch.manual_seed(derived_seed(self.config.seed, self.dist.rank, step))
            x_pgd = pgd(model, x, y, eps=eps, steps=CHECK_PGD_STEPS, norm=norm)
        x_fgsm = fgsm(model, x, y, eps=eps, norm=norm)
        with torch.no_grad():
            correct = torch.stack([(model(x_pgd).argmax(1) == y).sum(), (model(x_fgsm).argmax(1) == y).sum()]).float()
        model.train(was_training)
        correct = self.dist.all_reduce_sum(correct) / len(self.labels)
        return Check(
            epoch=epoch, step=step, pgd_acc=float(correct[0]), fgsm_acc=float(correct[1]), aae_rate=float(window["aae"]) / n,
            de_norm_mean=float(window["de_norm"]) / n, train_adv_acc=float(window["adv_correct"]) / n,
        )

    def _act(self, c: Check, model: nn.Module, optimizer: torch.optim.Optimizer, log) -> None:
        action = self.config.on_co
        if action in ("rollback", "der") and self.interventions >= MAX_INTERVENTIONS:
            action = "stop"
        c.action = action
        log(f"CO ALARM at epoch {c.epoch + 1}, step {c.step}: {c.alarm} -> {action}")
        if action == "warn":
            return
        if action == "stop":
            raise TrainingStopped(f"stopped by --on-co {self.config.on_co} at step {c.step} (epoch {c.epoch + 1}): {c.alarm}")
        self.interventions += 1
        model.load_state_dict(self.snapshot["model"])
        optimizer.load_state_dict(self.snapshot["optimizer"])
        c.rolled_back_to_step = self.snapshot_step
        if action == "der":
            self.der_beta = self.der_beta * 2 if self.der else self.der_beta
            self.der = True
        c.der, c.der_beta = self.der, self.der_beta

    def _snapshot(self, model: nn.Module, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.config.on_co in ("rollback", "der"):  # only runs that may roll back pay for the copy
            self.snapshot = {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict())}
            self.snapshot_step = step

    def state(self) -> dict:
        """What a resumed run needs to take the same decisions (saved in last.pt)."""
        return {"der": self.der, "der_beta": self.der_beta, "interventions": self.interventions, "history": self.history}

    def load_state(self, state: dict) -> None:
        self.der, self.der_beta = bool(state["der"]), float(state["der_beta"])
        self.interventions, self.history = int(state["interventions"]), list(state["history"])


def _smoothed(checks: list[dict], key: str) -> float:
    """Mean of `key` over the last SMOOTHING checks: a check attacks only co_check_images images, so one is noisy."""
    recent = checks[-SMOOTHING:]
    return sum(c[key] for c in recent) / len(recent)


def alarm_reason(history: list[dict], current: Check | dict) -> str | None:
    """Why `current` looks like catastrophic overfitting given the earlier checks (None if it does not).

    A pure function of the recorded checks, so experiments replay it on monitor.jsonl and the live
    run takes exactly the decisions they report. Alarmed checks do not raise the baselines.
    """
    current = current.to_dict() if isinstance(current, Check) else current
    healthy = [c for c in history if not c.get("alarm")]
    reasons, pgd_falling = [], False
    if len(healthy) >= SMOOTHING:
        best = max(_smoothed(healthy[: i + 1], "pgd_acc") for i in range(SMOOTHING - 1, len(healthy)))
        pgd, fgsm_acc = _smoothed(healthy[-(SMOOTHING - 1):] + [current], "pgd_acc"), _smoothed(healthy[-(SMOOTHING - 1):] + [current], "fgsm_acc")
        pgd_falling = pgd < AAE_PGD_FRACTION * best
        if collapsed(pgd, best) and fgsm_acc - pgd >= MASKING_GAP:
            reasons.append(f"PGD-{CHECK_PGD_STEPS} accuracy collapsed to {pgd:.3f} (best {best:.3f}) while FGSM accuracy is {fgsm_acc:.3f}")
    if len(history) >= SMOOTHING - 1:
        aae = _smoothed(history[-(SMOOTHING - 1):] + [current], "aae_rate")
        if aae >= AAE_ALARM_RATE and pgd_falling:
            reasons.append(f"AAE surge: {aae:.0%} of the last training samples are abnormal adversarial examples "
                           f"(mean ||dE|| {current['de_norm_mean']:.3g}) while PGD-{CHECK_PGD_STEPS} accuracy falls")
    return "; ".join(reasons) or None


def recorded_checks(records: list[dict]) -> list[dict]:
    """The in-epoch checks among monitor.jsonl's records (the file also holds the line of an --on-co stop)."""
    return [r for r in records if "pgd_acc" in r]


def replay_alarms(checks: list[dict]) -> list[str | None]:
    """The alarm of every check of a run (recorded_checks of monitor.jsonl, in order) under the current rule."""
    out, history = [], []
    for check in checks:
        reason = alarm_reason(history, check)
        out.append(reason)
        history.append({**check, "alarm": reason})
    return out
