"""Reading a training run dir back: what `robustgen train` wrote and whether the run is finished.

The layout (written by training.loop and training.epoch): config.json (the resolved config under
"config", plus seed, device, dataset hash, versions), metrics.jsonl (one record per finished epoch;
the last one carries "stopped" when `--on-co stop` ended the run), monitor.jsonl (in-epoch CO checks),
best.pt, last.pt (also the resume state), curves.png. Everything that reads a run dir after the fact
(the demo, the report, diagnostics, the experiments) reads it through `read_training_run`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import read_jsonl
from training.config import TrainConfig


@dataclass(frozen=True)
class TrainingRun:
    run_dir: Path
    recorded: dict  # config.json as written: {"config": {...}, "seed", "device", "dataset": {...}, ...}
    metrics: list[dict]  # metrics.jsonl, one record per finished epoch
    monitor: list[dict]  # monitor.jsonl (empty when the run has none)

    @property
    def best(self) -> Path:
        return self.run_dir / "best.pt"  # best test PGD accuracy

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"  # after the final finished epoch

    @property
    def config(self) -> TrainConfig:
        try:
            return TrainConfig.from_dict(self.recorded["config"])
        except (KeyError, TypeError, ValueError):
            raise RobustgenError(f"{self.run_dir / 'config.json'} is unreadable: was the run dir written by robustgen train?") from None

    @property
    def epochs(self) -> int | None:
        """Epochs the run was configured for (None when config.json does not say)."""
        epochs = (self.recorded.get("config") or {}).get("epochs")
        return epochs if isinstance(epochs, int) and not isinstance(epochs, bool) else None

    @property
    def stopped(self) -> str | None:
        """Why the run ended early on purpose (`--on-co stop`), or None."""
        return self.metrics[-1].get("stopped") if self.metrics else None

    @property
    def finished(self) -> bool:
        """It ran all its epochs, or stopped on purpose, and its checkpoints are written."""
        done = bool(self.metrics) and (self.stopped is not None or (self.epochs is not None and len(self.metrics) >= self.epochs))
        return done and self.last.is_file()


def read_training_run(run_dir: str | Path) -> TrainingRun:
    """config.json, metrics.jsonl and monitor.jsonl of a training run dir (checkpoints are read by their own loaders)."""
    run_dir = Path(run_dir)
    config_path, metrics_path, monitor_path = run_dir / "config.json", run_dir / "metrics.jsonl", run_dir / "monitor.jsonl"
    if not config_path.is_file():
        raise RobustgenError(f"{run_dir} is not a training run dir (no config.json): pass the --out of `robustgen train`")
    try:
        recorded = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise RobustgenError(f"{config_path} is unreadable: was the run dir written by robustgen train?") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("config"), dict):
        raise RobustgenError(f"{config_path} holds no training config: was the run dir written by robustgen train?")
    metrics = read_jsonl(metrics_path) if metrics_path.is_file() else []
    monitor = read_jsonl(monitor_path) if monitor_path.is_file() else []
    return TrainingRun(run_dir=run_dir, recorded=recorded, metrics=metrics, monitor=monitor)


def is_finished(run_dir: str | Path) -> bool:
    """Whether `run_dir` holds a finished training run; False for a missing, unfinished or unreadable one
    (resuming it then says what is wrong)."""
    try:
        return read_training_run(run_dir).finished
    except RobustgenError:
        return False
