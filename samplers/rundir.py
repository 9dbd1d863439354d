"""A sample run dir: run.json (the options), shards/ (finished blocks), then samples.npz, grid.png, strips.png, meta.json.

Chains are grouped into blocks of consecutive chain indices; a finished block
lands in `shards/block-NNNNNN.npz` (atomically), so an interrupted run resumes
where it stopped and gives exactly the images of an uninterrupted one. The run
is finalised (by rank 0 under torchrun) into the files people read; the shards
are then removed.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from robustgen.kernel.cache import read_npz, read_user_npz
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import LOCK_NAME, atomic_path, atomic_write_json, ensure_writable_dir, now_iso, safe_name, sha256_file, to_jsonable, versions
from samplers.grid import save_grid, save_png, save_strips

OUTPUTS = ("samples.npz", "grid.png", "strips.png", "meta.json", "run.json", "png", "shards")
SHARD_KEYS = ("ids", "images", "labels", "energy_joint", "energy_marginal", "steps", "grad_evals", "eta", "strip_ids", "strip_frames")
RESUME_IGNORES = ("batch_size", "refill", "world_size")  # execution details that do not change the images


@dataclass
class SampleResult:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int64
    energy_joint: np.ndarray  # (N,) final E(x, y), logits
    energy_marginal: np.ndarray  # (N,) final E(x)
    steps: np.ndarray  # (N,) sampler steps each chain took
    grad_evals: int  # gradient evaluations (forward+backward of one image) in total
    seconds: float  # wall time of this call
    out: Path | None = None
    thresholds: dict[int, float] = field(default_factory=dict)  # adaptive stop energy E(x, y) per class
    eta_mean: float = float("nan")  # sgld: mean step size eta over chains (calibrated when step_size is None)
    strip_ids: np.ndarray | None = None  # chains whose start -> middle -> final frames were kept
    strip_frames: np.ndarray | None = None  # (S, 3, H, W, C) uint8

    @property
    def grad_evals_per_image(self) -> float:
        return self.grad_evals / max(len(self.labels), 1)


def check_out(out: Path, settings: dict, *, overwrite: bool, resume: bool) -> bool:
    """Refuse an existing run dir unless told what to do; return True when resuming one. Writes nothing."""
    if overwrite and resume:
        raise RobustgenError("--overwrite and --resume contradict each other: pick one")
    if out.exists() and not out.is_dir():
        raise RobustgenError(f"output path {out} is a file: choose a directory with --out")
    exists = out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())
    if exists and resume:
        previous = _read_run_json(out)
        changed = sorted(k for k in set(previous) | set(settings) if k not in RESUME_IGNORES and previous.get(k) != to_jsonable(settings.get(k)))
        if changed:
            raise RobustgenError(f"cannot resume {out}: options differ from the interrupted run ({', '.join(changed)}); rerun with the same options or use --overwrite")
        return True
    if exists and not overwrite:
        raise RobustgenError(f"output directory {out} already exists: pass --overwrite to replace it or --resume to continue it")
    return False


def block_size(out: Path | None, batch_size: int, *, resuming: bool) -> int:
    """Chains per shard: the batch size the run dir started with, so a resumed run with another --batch-size
    finds its finished blocks where they are (the chain batch on the device may differ: the images do not)."""
    if not resuming:
        return batch_size
    recorded = _read_run_json(out).get("batch_size")
    return recorded if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded >= 1 else batch_size


def _read_run_json(out: Path) -> dict:
    run_file = out / "run.json"
    if not run_file.is_file():
        raise RobustgenError(f"cannot resume {out}: it holds no run.json from robustgen sample; use --overwrite or another --out")
    try:
        previous = json.loads(run_file.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        raise RobustgenError(f"cannot resume {out}: its run.json is unreadable; start again with --overwrite") from None
    if not isinstance(previous, dict):
        raise RobustgenError(f"cannot resume {out}: its run.json is not a robustgen sample record; start again with --overwrite")
    return previous


def create_out(out: Path, settings: dict, *, overwrite: bool) -> None:
    if overwrite and out.is_dir():
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    ensure_writable_dir(out / "shards")
    atomic_write_json(out / "run.json", settings)


def shard_path(out: Path, block: int) -> Path:
    return out / "shards" / f"block-{block:06d}.npz"


def write_shard(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def read_shard(path: Path, ids: Sequence[int] | None = None) -> dict[str, np.ndarray] | None:
    """A finished block (of chains `ids`, if given), or None when the file is missing, truncated, damaged
    or foreign: the block is then sampled again."""
    arrays, _ = read_npz(path)
    if arrays is None:
        return None
    if set(SHARD_KEYS) - set(arrays) or arrays["images"].dtype != np.uint8:
        return None
    per_chain = ("ids", "images", "labels", "energy_joint", "energy_marginal", "steps", "grad_evals", "eta")
    if len({len(arrays[k]) for k in per_chain}) != 1 or len(arrays["strip_ids"]) != len(arrays["strip_frames"]):
        return None
    if ids is not None and not np.array_equal(np.sort(arrays["ids"]), np.asarray(ids)):
        return None
    return arrays


def assemble(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate block arrays and sort them by chain index."""
    joined = {k: np.concatenate([p[k] for p in parts]) for k in SHARD_KEYS}
    order = np.argsort(joined["ids"], kind="stable")
    for key in ("ids", "images", "labels", "energy_joint", "energy_marginal", "steps", "grad_evals", "eta"):
        joined[key] = joined[key][order]
    strip_order = np.argsort(joined["strip_ids"], kind="stable")
    joined["strip_ids"], joined["strip_frames"] = joined["strip_ids"][strip_order], joined["strip_frames"][strip_order]
    return joined


def finalize(out: Path, result: SampleResult, *, classes: Sequence[str], settings: dict, png: bool, checkpoint, started: str, device) -> None:
    """samples.npz, grid.png, strips.png, meta.json (+ png/), then remove the shards."""
    with atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, images=result.images, labels=result.labels, energy_joint=result.energy_joint, energy_marginal=result.energy_marginal,
                     steps=result.steps, classes=np.asarray(classes), strip_ids=result.strip_ids, strip_frames=result.strip_frames)
    save_grid(out / "grid.png", result.images, result.labels, classes=settings["classes"])
    if result.strip_frames is not None and len(result.strip_frames):
        save_strips(out / "strips.png", result.strip_frames, [classes[int(result.labels[i])] for i in result.strip_ids],
                    steps=[int(result.steps[i]) for i in result.strip_ids])
    if png:
        write_pngs(out / "png", result.images, result.labels, classes)
    atomic_write_json(out / "meta.json", {
        **settings,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint is not None and Path(checkpoint).is_file() else None,
        "class_names": [classes[c] for c in settings["classes"]],
        "stop_thresholds": {str(c): t for c, t in result.thresholds.items()},
        "grad_evals": result.grad_evals,
        "grad_evals_per_image": result.grad_evals_per_image,
        "sgld_eta_mean": None if np.isnan(result.eta_mean) else result.eta_mean,
        "steps_mean": float(result.steps.mean()),
        "energy_joint_mean": float(result.energy_joint.mean()),
        "seconds": result.seconds,
        "device": str(device),
        "started": started,
        "finished": now_iso(),
        "png": png,
        "versions": versions(),
    })
    shutil.rmtree(out / "shards", ignore_errors=True)


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> None:
    """One PNG per image under folder/<class>/ (the layout torch-fidelity and ImageFolder read)."""
    counters: dict[int, int] = {}
    for img, label in zip(images, labels):
        label = int(label)
        sub = folder / safe_name(classes[label], fallback=str(label))
        if label not in counters:
            ensure_writable_dir(sub)
        i = counters.get(label, 0)
        counters[label] = i + 1
        save_png(sub / f"{i:06d}.png", img)


def load_result(out: str | Path) -> SampleResult:
    """Read a finished run dir back as a SampleResult."""
    out = Path(out)
    meta = json.loads((out / "meta.json").read_text())
    found = read_user_npz(out / "samples.npz", what="sample run", fix="rerun `robustgen sample` into a fresh --out")
    missing = [k for k in ("images", "labels", "energy_joint", "energy_marginal", "steps") if k not in found]
    if missing:
        raise RobustgenError(f"sample run: {out / 'samples.npz'} lacks {', '.join(missing)}: rerun `robustgen sample` into a fresh --out")
    arrays = {k: found[k] for k in ("images", "labels", "energy_joint", "energy_marginal", "steps")}
    strips = {k: found[k] for k in ("strip_ids", "strip_frames") if k in found}
    eta = meta.get("sgld_eta_mean")
    return SampleResult(
        **arrays, **strips, grad_evals=int(meta["grad_evals"]), seconds=float(meta["seconds"]), out=out,
        thresholds={int(c): float(t) for c, t in meta.get("stop_thresholds", {}).items()},
        eta_mean=float(eta) if eta is not None else float("nan"),
    )
