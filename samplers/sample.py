"""The sampling loop and the run dir it writes.

    result = sample(model, dataset, classes=[3], n=1000)                 # defaults: local-pca + sgld + adaptive
    result = sample(model, dataset, n=100, init=InitConfig(kind="gaussian"),
                    sampler=SamplerConfig(kind="pgd", steps=60), stop=StopConfig(rule="fixed"), out="runs/s")

Chains run in batches; batch b draws all its randomness from a generator seeded
by (seed, b), so a batch is the same whether the run went straight through or
was resumed, and --resume reproduces an uninterrupted run exactly. With `out`,
each finished batch lands in `shards/` (atomically) and nothing but one batch
ever sits on the device; the run is finalised into samples.npz, grid.png,
meta.json (and png/<class>/ with `png=True`) at the end.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from robustgen.data import ImageDataset, to_uint8
from robustgen.errors import RobustgenError
from robustgen.io import atomic_path, atomic_write_json, ensure_writable_dir, now_iso, sha256_file, versions
from samplers.config import InitConfig, SamplerConfig, StopConfig
from samplers.energies import energies, energy_and_grad, energy_function
from samplers.grid import save_grid, save_png
from samplers.initializers import fit_initializer
from samplers.initializers.base import model_fingerprint
from samplers.steps import pgd_step, sgld_step
from samplers.stopping import StopState, reference_energies, should_stop, stop_threshold

OUTPUTS = ("samples.npz", "grid.png", "meta.json", "run.json", "png", "shards")


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
    thresholds: dict[int, float] = field(default_factory=dict)  # adaptive stop energy per class
    eta_mean: float = float("nan")  # sgld: mean step size eta over chains (calibrated when step_size is None)

    @property
    def grad_evals_per_image(self) -> float:
        return self.grad_evals / max(len(self.labels), 1)


# --------------------------------------------------------------------------- planning


def balanced_labels(classes: Sequence[int], n: int) -> np.ndarray:
    """n labels split as evenly as possible over `classes` (first classes get the remainder), grouped by class."""
    base, extra = divmod(n, len(classes))
    return np.concatenate([np.full(base + (i < extra), c, dtype=np.int64) for i, c in enumerate(classes)])


def batch_seed(seed: int, batch_index: int) -> int:
    """Independent, reproducible seed for batch `batch_index` of a run seeded `seed`."""
    return int(np.random.SeedSequence([seed, batch_index]).generate_state(1, dtype=np.uint64)[0] >> 1)


def resolve_classes(dataset: ImageDataset, classes: Sequence[int | str] | None) -> list[int]:
    if classes is None or len(classes) == 0:
        return list(range(dataset.num_classes))
    resolved = [dataset.class_index(c) for c in classes]
    return list(dict.fromkeys(resolved))  # keep order, drop repeats


# --------------------------------------------------------------------------- one batch


def run_chains(
    model: nn.Module,
    x0: Tensor,
    y: Tensor,
    *,
    sampler: SamplerConfig,
    stop: StopConfig,
    thresholds: Tensor,
    generator: torch.Generator,
) -> dict[str, Tensor]:
    """Run one batch of chains from x0 (on the model's device). Stopped chains leave the active set.

    Returns x (final images), energy_joint, energy_marginal, steps (per chain), grad_evals (total)
    and eta_mean (the SGLD step size used, mean over chains; nan for pgd).
    """
    energy = energy_function(sampler.energy, marginal_weight=sampler.marginal_weight)
    step_size = sampler.resolved_step_size(x0[0].numel())
    n = len(x0)
    x, velocity = x0.clone(), torch.zeros_like(x0)
    steps = torch.zeros(n, dtype=torch.long, device=x0.device)
    final_joint = torch.empty(n, device=x0.device)
    final_marginal = torch.empty(n, device=x0.device)
    done = torch.zeros(n, dtype=torch.bool, device=x0.device)
    state = StopState.start(n, x0.device)
    grad_evals = 0
    eta = None if step_size is None else torch.full((n,), float(step_size), device=x0.device)  # sgld, per chain
    for _ in range(sampler.steps):
        active = (~done).nonzero().squeeze(1)
        if len(active) == 0:
            break
        xa, ya = x[active], y[active]
        _, grad, logits = energy_and_grad(model, xa, ya, energy)
        grad_evals += len(active)
        e_joint = -logits.float().gather(1, ya.view(-1, 1)).squeeze(1)
        stopping = should_stop(e_joint, thresholds[active], state, active, stop)
        if stopping.any():
            # these chains stay where they are: the energies just computed are their final ones
            idx = active[stopping]
            done[idx] = True
            final_joint[idx] = e_joint[stopping]
            final_marginal[idx] = -torch.logsumexp(logits[stopping].float(), dim=1)
        if eta is None and sampler.kind == "sgld":  # first step: calibrate eta per chain so its first drift moves pixels by `drift` rms
            rms = grad.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
            eta = torch.zeros(n, device=x0.device)
            eta[active] = 2 * sampler.drift / rms
        keep = ~stopping
        idx, xa, grad = active[keep], xa[keep], grad[keep]
        # noise comes from a CPU generator so a batch is reproducible whatever else ran before it
        if sampler.kind == "sgld":
            noise = torch.randn(xa.shape, generator=generator).to(xa.device)
            x[idx], velocity[idx] = sgld_step(
                xa, velocity[idx], grad, noise, step_size=eta[idx].view(-1, *([1] * (xa.dim() - 1))), noise_std=sampler.noise, momentum=sampler.momentum
            )
        else:
            x[idx] = pgd_step(xa, grad, x0[idx], step_size=step_size, norm=sampler.norm, eps=sampler.eps)
        steps[idx] += 1
    remaining = (~done).nonzero().squeeze(1)
    if len(remaining):
        e_joint, e_marginal = energies(model, x[remaining], y[remaining])
        final_joint[remaining], final_marginal[remaining] = e_joint.float(), e_marginal.float()
    eta_mean = float(eta.mean()) if eta is not None and sampler.kind == "sgld" else float("nan")
    return {"x": x, "energy_joint": final_joint, "energy_marginal": final_marginal, "steps": steps, "grad_evals": grad_evals, "eta_mean": eta_mean}


# --------------------------------------------------------------------------- the run


def sample(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    classes: Sequence[int | str] | None = None,
    n: int = 100,
    init: InitConfig = InitConfig(),
    sampler: SamplerConfig = SamplerConfig(),
    stop: StopConfig = StopConfig(),
    seed: int = 0,
    batch_size: int = 250,
    out: str | Path | None = None,
    png: bool = False,
    overwrite: bool = False,
    resume: bool = False,
    cache_dir: str | Path | None | bool = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> SampleResult:
    """Generate `n` images of `classes` (None = all, balanced) from a (robust) classifier.

    `model` maps [0, 1] images to logits and is put in eval mode. `out`: a run
    dir to write (refused if it exists, unless overwrite or resume). `cache_dir`:
    where fitted initialisers and reference energies are cached (None = default
    ~/.cache/robustgen or $ROBUSTGEN_CACHE, False = no cache). `checkpoint`: the
    file the model came from, recorded with its hash in meta.json.
    """
    started, t0 = now_iso(), time.perf_counter()
    init.validate(), sampler.validate(), stop.validate()
    if n < 1:
        raise RobustgenError(f"--n {n}: ask for at least 1 image")
    if batch_size < 1:
        raise RobustgenError(f"--batch-size {batch_size} must be at least 1")
    class_list = resolve_classes(dataset, classes)
    out = Path(out) if out is not None else None
    model.eval()
    device = next(model.parameters()).device
    fingerprint, model_hash = dataset.fingerprint(), model_fingerprint(model)
    settings = {
        "classes": class_list,
        "n": n,
        "seed": seed,
        "batch_size": batch_size,
        "init": asdict(init),
        "sampler": {**asdict(sampler), "step_size_resolved": sampler.resolved_step_size(int(np.prod(dataset.image_shape)))},
        "stop": asdict(stop),
        "dataset": dataset.name,
        "dataset_sha256": fingerprint,
        "model_sha256": model_hash,
    }
    if out is not None:
        resuming = _check_out(out, settings, overwrite=overwrite, resume=resume)
        if resuming and (out / "meta.json").is_file() and (out / "samples.npz").is_file():
            return load_result(out)  # resuming a run that already finished

    # fit (or load) what the chains need before touching the output: a failure here writes nothing
    inits = {c: fit_initializer(init, dataset, c, model=model, cache_dir=cache_dir, dataset_fingerprint=fingerprint, model_hash=model_hash) for c in class_list}
    thresholds = {}
    for c in class_list:
        ref = reference_energies(model, dataset, c, cache_dir=cache_dir, model_hash=model_hash, dataset_fingerprint=fingerprint) if stop.rule == "adaptive" else None
        thresholds[c] = stop_threshold(ref["joint"], stop) if ref is not None else float("-inf")

    if out is not None and not resuming:
        _create_out(out, settings, overwrite=overwrite)
    labels = balanced_labels(class_list, n)
    parts, grad_evals = [], 0
    n_batches = (n + batch_size - 1) // batch_size
    from tqdm.auto import tqdm

    for b in tqdm(range(n_batches), desc="sampling", unit="batch", disable=None if progress else True):
        shard = out / "shards" / f"batch-{b:06d}.npz" if out is not None else None
        if shard is not None and shard.is_file():
            with np.load(shard, allow_pickle=False) as z:
                part = {k: z[k] for k in z.files}
        else:
            part = _sample_batch(model, inits, labels[b * batch_size : (b + 1) * batch_size], thresholds, sampler, stop, batch_seed(seed, b), device)
            if shard is not None:
                with atomic_path(shard) as tmp:
                    with open(tmp, "wb") as fh:
                        np.savez(fh, **part)
        grad_evals += int(part["grad_evals"])
        parts.append(part)

    result = SampleResult(
        images=np.concatenate([p["images"] for p in parts]),
        labels=np.concatenate([p["labels"] for p in parts]),
        energy_joint=np.concatenate([p["energy_joint"] for p in parts]),
        energy_marginal=np.concatenate([p["energy_marginal"] for p in parts]),
        steps=np.concatenate([p["steps"] for p in parts]),
        grad_evals=grad_evals,
        seconds=time.perf_counter() - t0,
        out=out,
        thresholds=thresholds,
        eta_mean=float(np.average([p["eta_mean"] for p in parts], weights=[len(p["labels"]) for p in parts])),
    )
    if out is not None:
        _finalize(out, result, dataset, settings, png=png, checkpoint=checkpoint, started=started, device=device)
    return result


def _sample_batch(model, inits, labels: np.ndarray, thresholds, sampler, stop, seed: int, device) -> dict[str, np.ndarray]:
    generator = torch.Generator().manual_seed(seed)
    # labels come grouped by class (balanced_labels), so drawing class by class keeps x0 aligned with them
    x0 = torch.cat([inits[int(c)].draw(int((labels == c).sum()), generator) for c in dict.fromkeys(labels.tolist())])
    y = torch.as_tensor(labels, device=device)
    limits = torch.tensor([thresholds[int(c)] for c in labels], dtype=torch.float32, device=device)
    chains = run_chains(model, x0.to(device), y, sampler=sampler, stop=stop, thresholds=limits, generator=generator)
    return {
        "images": to_uint8(chains["x"]),
        "labels": labels.astype(np.int64),
        "energy_joint": chains["energy_joint"].cpu().numpy().astype(np.float32),
        "energy_marginal": chains["energy_marginal"].cpu().numpy().astype(np.float32),
        "steps": chains["steps"].cpu().numpy().astype(np.int32),
        "grad_evals": np.int64(chains["grad_evals"]),
        "eta_mean": np.float64(chains["eta_mean"]),  # sgld step size actually used (mean over chains)
    }


# --------------------------------------------------------------------------- run dir


def _check_out(out: Path, settings: dict, *, overwrite: bool, resume: bool) -> bool:
    """Refuse an existing run dir unless told what to do; return True when resuming one. Writes nothing."""
    if overwrite and resume:
        raise RobustgenError("--overwrite and --resume contradict each other: pick one")
    exists = out.exists() and (not out.is_dir() or any(out.iterdir()))
    if out.exists() and not out.is_dir():
        raise RobustgenError(f"output path {out} is a file: choose a directory with --out")
    if exists and resume:
        run_file = out / "run.json"
        if not run_file.is_file():
            raise RobustgenError(f"cannot resume {out}: it holds no run.json from robustgen sample; use --overwrite or another --out")
        previous = json.loads(run_file.read_text())
        changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != _jsonable(settings.get(k)))
        if changed:
            raise RobustgenError(f"cannot resume {out}: options differ from the interrupted run ({', '.join(changed)}); rerun with the same options or use --overwrite")
        return True
    if exists and not overwrite:
        raise RobustgenError(f"output directory {out} already exists: pass --overwrite to replace it or --resume to continue it")
    return False


def _create_out(out: Path, settings: dict, *, overwrite: bool) -> None:
    if overwrite and out.is_dir():
        for name in OUTPUTS:
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    ensure_writable_dir(out / "shards")
    atomic_write_json(out / "run.json", settings)


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def _finalize(out: Path, result: SampleResult, dataset: ImageDataset, settings: dict, *, png: bool, checkpoint, started: str, device) -> None:
    with atomic_path(out / "samples.npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                images=result.images,
                labels=result.labels,
                energy_joint=result.energy_joint,
                energy_marginal=result.energy_marginal,
                steps=result.steps,
                classes=np.asarray(dataset.classes),
            )
    save_grid(out / "grid.png", result.images, result.labels, classes=settings["classes"])
    if png:
        write_pngs(out / "png", result.images, result.labels, dataset.classes)
    meta = {
        **settings,
        "checkpoint": str(checkpoint) if checkpoint is not None else None,
        "checkpoint_sha256": sha256_file(checkpoint) if checkpoint is not None else None,
        "class_names": [dataset.classes[c] for c in settings["classes"]],
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
    }
    atomic_write_json(out / "meta.json", meta)
    shutil.rmtree(out / "shards", ignore_errors=True)


def class_folder(name: str, index: int) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")
    return safe or str(index)


def write_pngs(folder: Path, images: np.ndarray, labels: np.ndarray, classes: Sequence[str]) -> None:
    """One PNG per image under folder/<class>/ (the layout torch-fidelity and ImageFolder read)."""
    counters: dict[int, int] = {}
    for img, label in zip(images, labels):
        label = int(label)
        sub = ensure_writable_dir(folder / class_folder(classes[label], label)) if label not in counters else folder / class_folder(classes[label], label)
        i = counters.get(label, 0)
        counters[label] = i + 1
        save_png(sub / f"{i:06d}.png", img)


def load_result(out: str | Path) -> SampleResult:
    """Read a finished run dir back as a SampleResult."""
    out = Path(out)
    meta = json.loads((out / "meta.json").read_text())
    with np.load(out / "samples.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in ("images", "labels", "energy_joint", "energy_marginal", "steps")}
    return SampleResult(
        **arrays,
        grad_evals=int(meta["grad_evals"]),
        seconds=float(meta["seconds"]),
        out=out,
        thresholds={int(c): float(t) for c, t in meta.get("stop_thresholds", {}).items()},
        eta_mean=float(meta.get("sgld_eta_mean") if meta.get("sgld_eta_mean") is not None else "nan"),
    )
