"""The missing-normalisation trap: a foreign model's clean accuracy on a small fixed test sample, and one line when it
is near chance.

A torchvision:/timm:/python:/torchscript:/export: network gets its normalisation from the user (--mean/--std,
--judge-mean/--judge-std, --features-mean/--features-std). Without the one it was trained with it still runs, and
silently scores near chance: the published ResNet-4B gives 0.165 instead of 0.835. So every command that loads such a
model measures it once on CHECK_IMAGES fixed test images of the data it is used on (cached per model and data in the
robustgen cache), and below NEAR_CHANCE x chance prints one warning naming the flags to pass; `--strict` refuses.
The warning waits until the command has read and checked everything (`flush_warnings`, called before the long work
and by the CLI when a command ends well), so a refusal stays one line.

    check_clean_accuracy(model, meta, check=AccuracyCheck(mode="warn", flags=JUDGE_FLAGS, option="--judge"), data=..., data_root=...)
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

import numpy as np
from torch import nn

from robustgen.kernel import distributed
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.classes import MODEL_FLAGS, NormFlags

CHECK_IMAGES = 200  # fixed test images (seed 0): tells 0.17 from 0.83 at once (std ~3 points), costs a fraction of a second
CHECK_SEED = 0
NEAR_CHANCE = 2.0  # below this multiple of chance the model is taken to be reading its inputs wrong
FOREIGN_SOURCES = ("torchvision", "timm", "python", "torchscript", "export")  # whose normalisation the user supplies
CHECK_MODES = ("off", "warn", "strict")
_WARNED: set[str] = set()  # warnings of this command: a model loaded again (sweep's rows, eval's judge) warns once
_PENDING: list[str] = []  # warnings not yet printed: a command that then fails prints only its one Error: line


@dataclass(frozen=True)
class AccuracyCheck:
    """Whether and how a loader checks a foreign model's clean accuracy, and the flags its messages name."""

    mode: str = "off"  # "off" | "warn" (one line on stderr) | "strict" (a RobustgenError)
    flags: NormFlags = MODEL_FLAGS  # the normalisation flags of this model
    option: str | None = None  # the flag that named the model (--judge, --features); None for the model itself

    def __post_init__(self):
        if self.mode not in CHECK_MODES:
            raise RobustgenError(f"accuracy check {self.mode!r} is unknown: use one of {', '.join(CHECK_MODES)}")


@dataclass(frozen=True)
class CleanAccuracy:
    accuracy: float  # fraction of the sample classified right
    n: int  # test images measured
    chance: float  # 1 / number of classes
    data: str  # the dataset spec measured on
    usual_mean: tuple[float, ...] = ()  # the dataset's own per-channel statistics ("its usual normalisation")
    usual_std: tuple[float, ...] = ()

    @property
    def near_chance(self) -> bool:
        return self.accuracy < NEAR_CHANCE * self.chance


def check_clean_accuracy(model: nn.Module, meta: dict, *, check: AccuracyCheck, normalisation_given: bool, data: str | None = None,
                         data_root=None) -> CleanAccuracy | None:
    """Measure (or read from the cache) a foreign model's clean accuracy; near chance, warn in one line or refuse.

    None when there is nothing to check: the check is off, the model carries its own normalisation (robustgen,
    robustbench:, robustness:), or no test images of its data can be read here (the command that needs them says so)."""
    if check.mode == "off" or meta.get("source") not in FOREIGN_SOURCES:
        return None
    measured = cached_clean_accuracy(model, meta, data=data or meta.get("dataset"), data_root=data_root)
    if measured is not None and measured.near_chance:
        message = near_chance_message(measured, meta, check=check, normalisation_given=normalisation_given)
        if check.mode == "strict":
            raise RobustgenError(f"{message}; --strict refuses such a model")
        if message not in _WARNED:
            _WARNED.add(message)
            _PENDING.append(message)
    return measured


def flush_warnings() -> None:
    """Print the pending warnings (one line each, on stderr, rank 0 only): the command's inputs have all been checked."""
    for message in _PENDING:
        if distributed.is_main():
            print(f"warning: {message}", file=sys.stderr, flush=True)
    _PENDING.clear()


def forget_warnings() -> None:
    """Start a new command (or end a failed one): nothing pending, and its first near-chance model warns again."""
    _WARNED.clear()
    _PENDING.clear()


def near_chance_message(measured: CleanAccuracy, meta: dict, *, check: AccuracyCheck, normalisation_given: bool) -> str:
    """One line: what was measured, the likely cause, the flags that fix it."""
    flags, what = check.flags, f"{check.option} {meta.get('spec')}" if check.option else str(meta.get("spec"))
    found = f"{what} has clean accuracy {measured.accuracy:.3f} on {measured.n} test images of {measured.data}, near chance ({measured.chance:.3f})"
    if normalisation_given:
        return f"{found}: check {flags} (the values it was trained with), its class order and its input size"
    usual = measured.usual_mean and measured.usual_std
    example = f" (e.g. {flags.mean} {_csv(measured.usual_mean)} {flags.std} {_csv(measured.usual_std)}, {measured.data}'s own statistics)" if usual else ""
    return f"{found}: it probably needs the input normalisation it was trained with: pass {flags}{example}"


def cached_clean_accuracy(model: nn.Module, meta: dict, *, data: str | None, data_root=None) -> CleanAccuracy | None:
    """The accuracy on CHECK_IMAGES fixed test images, computed once per model (weights, normalisation, classes) and data."""
    from robustgen.kernel.cache import read_npz, write_npz
    from robustgen.kernel.io import default_cache_dir, settings_hash

    if not data:
        return None
    described = {k: meta.get(k) for k in ("weights_sha256", "source", "arch", "mean", "std", "input_shape", "classes")}
    root = os.fspath(data_root) if data_root is not None else None
    path = default_cache_dir() / "clean-accuracy" / f"{settings_hash({**described, 'data': data, 'root': root, 'n': CHECK_IMAGES})}.npz"
    arrays, _ = read_npz(path, ["accuracy", "n", "chance", "mean", "std"])
    if arrays is None:
        arrays = _measure(model, meta, data=data, data_root=data_root)
        if arrays is None:
            return None
        try:
            write_npz(path, arrays, what="clean-accuracy cache entry")
        except RobustgenError:
            pass  # an unwritable cache costs a re-measurement next time, nothing more
    return CleanAccuracy(float(arrays["accuracy"]), int(arrays["n"]), float(arrays["chance"]), data,
                         tuple(arrays["mean"].tolist()), tuple(arrays["std"].tolist()))


def _measure(model: nn.Module, meta: dict, *, data: str, data_root) -> dict[str, np.ndarray] | None:
    from robustgen.kernel.models.inspection import clean_accuracy, test_subset
    from robustgen.kernel.models.model_data import model_dataset

    from robustgen.kernel.data import LazyImageFolder

    try:
        dataset = model_dataset(meta, data=data, data_root=data_root)
        if isinstance(dataset, LazyImageFolder):
            return None  # large images are decoded one class at a time, as sampling needs them: not a whole split for a check
        x, y = dataset.split("test")
    except RobustgenError:
        return None  # not here: the command that needs the data says so itself
    pick = test_subset(len(x), CHECK_IMAGES, seed=CHECK_SEED)
    accuracy = clean_accuracy(model, x[pick], y[pick])
    mean, std = (getattr(dataset, "mean", None), getattr(dataset, "std", None))
    return {"accuracy": np.array(accuracy), "n": np.array(len(pick)), "chance": np.array(1.0 / max(len(meta.get("classes") or []), 1)),
            "mean": np.array(mean if mean is not None else [], dtype=np.float64), "std": np.array(std if std is not None else [], dtype=np.float64)}


def _csv(values) -> str:
    return ",".join(f"{float(v):.4g}" for v in values)
