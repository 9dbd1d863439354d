"""The sampling run: plan the chains, deal blocks to ranks, run the chain loop, keep shards, finalise.

    result = sample(model, dataset, classes=[3])                          # defaults: see samplers/config.py
    result = sample(model, dataset, init=InitConfig(kind="gaussian"), sampler=SamplerConfig(kind="pgd", steps=60),
                    stop=StopConfig(rule="fixed"), run=RunOptions(n=100, seed=1), out="runs/s")

Chain i (of n) has class labels[i] (balanced over the classes) and draws all its
randomness from generators seeded by (seed, i): its start from a CPU stream, its
SGLD noise from a stream on the device. So its image does not depend on the batch
it ran in, on refilling, on the number of ranks or on interruptions. Chains are
grouped in blocks of `batch_size` consecutive indices; under torchrun the blocks
are dealt to ranks round-robin, and each rank runs its blocks through one
continuously refilled batch (samplers/chains.py). With `out`, each finished block
lands in shards/ and rank 0 assembles samples.npz, grid.png, strips.png, meta.json.
"""

from __future__ import annotations

import contextlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from robustgen.kernel import distributed
from robustgen.kernel.data import ImageDataset, to_uint8
from robustgen.kernel.device import LONG_RUN_IMAGE_STEPS, derived_seed, maybe_compile, resolve_compile, resolve_precision, with_precision
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import clean_stale_temps, now_iso, run_dir_lock
from robustgen.kernel.models import model_fingerprint
from samplers import rundir
from samplers.chains import ChainBatch, run_queue
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.gradients import gradient_prior, low_pass
from samplers.initializers import build_initializer, fitted_arrays, resolve_init, uses_model
from samplers.initializers.base import Initializer
from samplers.initializers.images import seed_pool
from samplers.rundir import SampleResult, load_result
from samplers.stopping import reference_energies, stop_thresholds

STRIPS_PER_CLASS = 2  # chains per class whose start -> middle -> final frames are kept


def balanced_labels(classes: Sequence[int], n: int) -> np.ndarray:
    """n labels split as evenly as possible over `classes` (first classes get the remainder), grouped by class."""
    base, extra = divmod(n, len(classes))
    return np.concatenate([np.full(base + (i < extra), c, dtype=np.int64) for i, c in enumerate(classes)])


def resolve_classes(dataset: ImageDataset, classes: Sequence[int | str] | None) -> list[int]:
    if classes is None or len(classes) == 0:
        return list(range(dataset.num_classes))
    resolved = [dataset.class_index(c) for c in classes]
    return list(dict.fromkeys(resolved))  # keep order, drop repeats


HOLD_FITTED_BYTES = 256 * 2**20  # fitted arrays of all classes kept in memory up to this size; above, reloaded per class from the cache


class ClassInitializers:
    """Per-class initialisers, built when their class's chains are first drawn; one class held at a time.

    Building is what reads class images (local-pca keeps its class's uint8 images:
    196 MB for 1,300 ImageNet images), so it waits until the class is needed and the
    previous class is dropped first. Chains are grouped by class and taken in order,
    so each class is built once (a class seen again is simply rebuilt: same starts).
    `arrays[c]` are the fitted arrays, or None to reload them from the cache (`reload(c)`).
    """

    def __init__(self, config: InitConfig, dataset: ImageDataset, arrays: dict[int, dict | None], *, reload):
        self.config, self.dataset, self.arrays, self.reload = config, dataset, arrays, reload
        self.image_shape = tuple(dataset.image_shape)
        self.current: tuple[int, Initializer] | None = None

    def __getitem__(self, cls: int) -> Initializer:
        if self.current is None or self.current[0] != cls:
            self.current = None  # drop the previous class's images before reading the next class's
            arrays = self.arrays[cls] if self.arrays[cls] is not None else self.reload(cls)
            self.current = (cls, build_initializer(self.config, self.dataset, cls, arrays))
        return self.current[1]


class ChainSource:
    """The queue of chains a rank still has to run: draws their starts on demand, in chain order."""

    def __init__(self, ids: Sequence[int], labels: np.ndarray, inits: ClassInitializers, thresholds: dict, *, seed: int, device: torch.device):
        self.ids, self.next = list(ids), 0
        self.labels, self.inits, self.thresholds, self.seed, self.device = labels, inits, thresholds, seed, device

    def take(self, k: int) -> ChainBatch | None:
        ids = self.ids[self.next : self.next + max(k, 0)]
        self.next += len(ids)
        if not ids:
            return None
        labels = self.labels[ids]
        x0 = torch.empty((len(ids), *self.inits.image_shape))
        for c in dict.fromkeys(labels.tolist()):
            rows = np.flatnonzero(labels == c)
            generators = [torch.Generator().manual_seed(derived_seed(self.seed, ids[r], 0)) for r in rows]
            x0[torch.as_tensor(rows)] = self.inits[c].draw_chains(generators, ids=[ids[r] for r in rows], seed=self.seed)
        x0 = low_pass(x0, sigma=self.inits.config.blur_sigma(x0.shape[-2]))
        noise = [torch.Generator(device=self.device).manual_seed(derived_seed(self.seed, i, 1)) for i in ids]
        threshold = torch.tensor([self.thresholds[int(c)] for c in labels], dtype=torch.float32)
        return ChainBatch.start(torch.as_tensor(ids), x0.to(self.device), torch.as_tensor(labels), threshold, noise)


class BlockStore:
    """Collects finished chains; a block whose chains are all done becomes a shard (on disk with `out`)."""

    def __init__(self, blocks: dict[int, list[int]], *, max_steps: int, out: Path | None, traced: set[int], progress):
        self.block_of = {i: b for b, ids in blocks.items() for i in ids}
        self.missing = {b: len(ids) for b, ids in blocks.items()}
        self.rows: dict[int, list] = {b: [] for b in blocks}
        self.max_steps, self.out, self.traced, self.progress = max_steps, out, traced, progress
        self.frames: dict[int, list[np.ndarray]] = {}
        self.parts: list[dict[str, np.ndarray]] = []

    def trace(self, chains: ChainBatch) -> None:
        for row, i in enumerate(chains.ids.tolist()):
            if i in self.traced:
                self.frames.setdefault(i, []).append(to_uint8(chains.x[row : row + 1])[0])

    def finish(self, chains: ChainBatch, energy_joint: torch.Tensor, energy_marginal: torch.Tensor) -> None:
        images = to_uint8(chains.x)
        columns = zip(chains.ids.tolist(), images, chains.y.tolist(), energy_joint.tolist(), energy_marginal.tolist(),
                      chains.steps.tolist(), chains.eta.tolist())
        for i, image, y, ej, em, steps, eta in columns:
            block = self.block_of[i]
            self.rows[block].append((i, image, y, ej, em, steps, min(steps + 1, self.max_steps), eta))
            self.missing[block] -= 1
            if self.missing[block] == 0:
                self._close(block)
        self.progress.update(len(chains))

    def _close(self, block: int) -> None:
        rows = sorted(self.rows.pop(block), key=lambda r: r[0])
        ids = [r[0] for r in rows]
        strip_ids = [i for i in ids if i in self.traced]
        part = {
            "ids": np.asarray(ids, dtype=np.int64), "images": np.stack([r[1] for r in rows]), "labels": np.asarray([r[2] for r in rows], dtype=np.int64),
            "energy_joint": np.asarray([r[3] for r in rows], dtype=np.float32), "energy_marginal": np.asarray([r[4] for r in rows], dtype=np.float32),
            "steps": np.asarray([r[5] for r in rows], dtype=np.int32), "grad_evals": np.asarray([r[6] for r in rows], dtype=np.int64),
            "eta": np.asarray([r[7] for r in rows], dtype=np.float64),
            "strip_ids": np.asarray(strip_ids, dtype=np.int64),
            "strip_frames": self._strip_frames(strip_ids, rows[0][1].shape, {r[0]: (r[1], r[5]) for r in rows}),
        }
        if self.out is not None:
            rundir.write_shard(rundir.shard_path(self.out, block), part)
        self.parts.append(part)

    def _strip_frames(self, strip_ids: list[int], shape, finals: dict) -> np.ndarray:
        strips = []
        for i in strip_ids:
            final, steps = finals[i]
            frames = self.frames.pop(i, None) or [final]  # a chain with no step (--steps 0) is its start
            strips.append(np.stack([frames[0], frames[min(steps // 2, len(frames) - 1)], final]))
        return np.stack(strips) if strips else np.zeros((0, 3, *shape), dtype=np.uint8)


def sample(
    model: nn.Module, dataset: ImageDataset, *, classes: Sequence[int | str] | None = None,
    init: InitConfig = InitConfig(), sampler: SamplerConfig = SamplerConfig(), stop: StopConfig = StopConfig(), run: RunOptions | None = None,
    out: str | Path | None = None, png: bool = False, overwrite: bool = False, resume: bool = False,
    cache_dir: str | Path | None | bool = None, checkpoint: str | Path | None = None, progress: bool = True,
) -> SampleResult:
    """Generate `run.n` images of `classes` (None = all, balanced) from a (robust) classifier.

    `model` maps [0, 1] images to logits and is put in eval mode; it stays on its device (`run.device` is for the doors
    that load a model). `run` (RunOptions; None = its defaults): n, seed, batch_size (chains on the device at once),
    refill (new chains take the slots of stopped ones: same images either way), precision (fp32, bf16: autocast +
    channels_last with the head and energies in fp32, or auto: bf16 where the hardware has fast bf16,
    robustgen.kernel.device.fast_bf16), compile (off, on, or auto: on for runs of at least LONG_RUN_IMAGE_STEPS image-steps
    where torch.compile works; images then match eager ones to rounding). `out`: a run dir to write (refused if it
    exists, unless overwrite or resume). `cache_dir`: where fitted initialisers and reference energies are cached
    (None = default, False = no cache). `checkpoint`: the file the model came from, recorded with its hash.
    """
    started, t0 = now_iso(), time.perf_counter()
    run = run if run is not None else RunOptions()
    _validate(init, sampler, stop, run)
    class_list = resolve_classes(dataset, classes)
    init = resolve_init(init, dataset, model)  # automatic choices made for this image size (recorded in run.json / meta.json)
    model, compiled = _prepared_model(model, precision=run.precision, compile=run.compile, image_steps=run.n * max(sampler.steps, 1), progress=progress)
    device = next(model.parameters()).device
    dist = distributed.for_device(device)
    fingerprint, model_hash = dataset.fingerprint(), model_fingerprint(model)
    settings = {**_settings(run, init, sampler, stop, classes=class_list, dataset=dataset, fingerprint=fingerprint, model_hash=model_hash,
                            world_size=dist.world_size), "precision": getattr(model, "precision", "fp32"), "compile": compiled}
    out = Path(out) if out is not None else None
    with contextlib.ExitStack() as held:
        if out is not None and dist.is_main:  # one writer per run dir; what a killed writer left half-written goes
            held.enter_context(run_dir_lock(out))
            clean_stale_temps(out, recursive=True)
        resuming = out is not None and rundir.check_out(out, settings, overwrite=overwrite, resume=resume)
        dist.barrier()
        if resuming and (out / "meta.json").is_file() and (out / "samples.npz").is_file():
            return load_result(out)  # resuming a run that already finished
        # fit (or load) what the chains need before touching the output: a failure here writes nothing
        inits, thresholds = prepare_chains(model, dataset, class_list, init, stop, dist, cache_dir=cache_dir, fingerprint=fingerprint, model_hash=model_hash)
        spectrum = gradient_prior(dataset, sampler)
        if out is not None and dist.is_main and not resuming:
            rundir.create_out(out, settings, overwrite=overwrite)
        dist.barrier()
        block = rundir.block_size(out, run.batch_size, resuming=resuming)
        chains = ChainPlan(labels=balanced_labels(class_list, run.n), inits=inits, thresholds=thresholds, sampler=sampler, stop=stop, spectrum=spectrum)
        store = _run_blocks(maybe_compile(model, compiled, dynamic=False), chains, run=run, block=block, out=out, dist=dist, progress=progress)
        result = _collect(store, thresholds, out=out, n=run.n, block=block, dist=dist, started_at=t0)
        if out is not None and dist.is_main:
            rundir.finalize(out, result, classes=dataset.classes, settings=settings, png=png, checkpoint=checkpoint, started=started, device=device)
        dist.barrier()
    return result if result is not None else load_result(out)


@dataclass(frozen=True)
class ChainPlan:
    """What every chain of a run computes: its class, start, stop threshold, and how it moves and stops."""

    labels: np.ndarray  # (n,) class of chain i
    inits: ClassInitializers
    thresholds: dict  # class -> (E(x, y) threshold, E(x) threshold)
    sampler: SamplerConfig
    stop: StopConfig
    spectrum: torch.Tensor | None = None  # the gradient-read prior (samplers.gradients.gradient_prior)


def _collect(store, thresholds, *, out: Path | None, n: int, block: int, dist, started_at: float) -> SampleResult | None:
    """Every block's chains as one SampleResult (on rank 0, or wherever no run dir is written); None elsewhere."""
    dist.barrier()
    if not (dist.is_main or out is None):
        return None
    return _result(rundir.assemble(_all_parts(store, out, n=n, block=block, dist=dist)), thresholds, out=out, seconds=time.perf_counter() - started_at)


def _prepared_model(model: nn.Module, *, precision: str, compile: str, image_steps: int, progress: bool) -> tuple[nn.Module, bool]:
    """The model in eval mode at its resolved precision, and whether the chains compile it."""
    model.eval()
    device = next(model.parameters()).device
    model = with_precision(model, resolve_precision(precision, device))
    compiled, warning = resolve_compile(compile, device, long_run=image_steps >= LONG_RUN_IMAGE_STEPS)
    if warning and progress:
        print(warning, file=sys.stderr)
    return model, compiled


def _validate(*configs) -> None:
    for config in configs:
        config.validate()


def _settings(run: RunOptions, init, sampler, stop, *, classes, dataset, fingerprint: str, model_hash: str, world_size: int) -> dict:
    """What run.json and meta.json record; a resumed run must match it (execution details aside)."""
    return {
        "classes": classes, "n": run.n, "seed": run.seed, "batch_size": run.batch_size, "refill": run.refill, "world_size": world_size,
        "init": asdict(init),
        "sampler": {**asdict(sampler), "step_size_resolved": sampler.resolved_step_size(int(np.prod(dataset.image_shape)))},
        "stop": asdict(stop), "dataset": dataset.name, "dataset_sha256": fingerprint, "model_sha256": model_hash,
        **({"init_source_sha256": seed_pool(dataset, init.source).sha256} if init.kind == "images" else {}),
    }


def prepare_chains(model, dataset, class_list, init, stop, dist, *, cache_dir, fingerprint, model_hash) -> tuple[ClassInitializers, dict]:
    """Fitted initialisers and stop thresholds per class: computed once (rank 0) and shared with every rank.

    Rank 0 fits (or loads from the cache) every class up front, one class at a time, so a
    bad class fails before anything is written; the fitted arrays (k-NN indices, Gaussian
    factors) travel to the other ranks, or, if together larger than HOLD_FITTED_BYTES and
    cached on disk, are reloaded per class when that class is built. The heavy part
    (class images) is read only when the class's chains are drawn (ClassInitializers).
    """
    options = dict(cache_dir=cache_dir, dataset_fingerprint=fingerprint, model_hash=model_hash)
    fit_model = model if uses_model(init) else None
    fitted = None
    if dist.is_main:
        arrays, thresholds, held, spill = {}, {}, 0, False
        for c in class_list:  # one class's images in memory at a time
            fitted_c = fitted_arrays(init, dataset, c, model=fit_model, **options)
            held += sum(a.nbytes for a in fitted_c.values())
            spill = spill or (held > HOLD_FITTED_BYTES and cache_dir is not False)
            arrays[c] = None if spill else fitted_c
            reference = reference_energies(model, dataset, c, cache_dir=cache_dir, model_hash=model_hash, dataset_fingerprint=fingerprint) \
                if stop.rule == "adaptive" else None
            thresholds[c] = stop_thresholds(reference, stop)
        fitted = (dict.fromkeys(arrays) if spill else arrays, thresholds)  # spilled: reloaded from the cache per class
    arrays, thresholds = dist.broadcast_object(fitted)

    def reload(c: int) -> dict:
        return fitted_arrays(init, dataset, c, model=fit_model, **options)

    return ClassInitializers(init, dataset, arrays, reload=reload), thresholds


def _run_blocks(model, chains: ChainPlan, *, run: RunOptions, block: int, out: Path | None, dist, progress: bool) -> BlockStore:
    """Run this rank's unfinished blocks (`block` consecutive chains each) through one continuously refilled batch."""
    from tqdm.auto import tqdm

    labels, n = chains.labels, len(chains.labels)
    blocks = {b: list(range(b * block, min(n, (b + 1) * block))) for b in dist.shard(list(range(-(-n // block))))}
    if out is not None:
        blocks = {b: ids for b, ids in blocks.items() if rundir.read_shard(rundir.shard_path(out, b), ids) is None}
    traced = {int(i) for c in dict.fromkeys(labels.tolist()) for i in np.flatnonzero(labels == c)[:STRIPS_PER_CLASS]}
    pending = [i for b in sorted(blocks) for i in blocks[b]]
    device = next(model.parameters()).device
    with tqdm(total=len(pending), desc="sampling", unit="img", disable=None if (progress and dist.is_main) else True) as bar:
        store = BlockStore(blocks, max_steps=chains.sampler.steps, out=out, traced=traced, progress=bar)
        source = ChainSource(pending, labels, chains.inits, chains.thresholds, seed=run.seed, device=device)
        run_queue(model, source, sampler=chains.sampler, stop=chains.stop, batch_size=run.batch_size, refill=run.refill, on_finish=store.finish,
                  trace=store.trace, spectrum=chains.spectrum)
    return store


def _all_parts(store: BlockStore, out: Path | None, *, n: int, block: int, dist) -> list[dict]:
    """Every block's arrays: from the shards on disk (with `out`) or gathered from the ranks."""
    if out is None:
        return [part for parts in dist.all_gather_objects(store.parts) for part in parts]
    parts = [rundir.read_shard(rundir.shard_path(out, b), range(b * block, min(n, (b + 1) * block))) for b in range(-(-n // block))]
    missing = [b for b, part in enumerate(parts) if part is None]
    if missing:
        raise RobustgenError(f"{out}: blocks {missing[:5]} did not finish (a rank failed?): rerun with --resume")
    return parts


def _result(arrays: dict, thresholds: dict, *, out: Path | None, seconds: float) -> SampleResult:
    etas = arrays["eta"][~np.isnan(arrays["eta"])]
    return SampleResult(
        images=arrays["images"], labels=arrays["labels"], energy_joint=arrays["energy_joint"], energy_marginal=arrays["energy_marginal"],
        steps=arrays["steps"], grad_evals=int(arrays["grad_evals"].sum()), seconds=seconds, out=out,
        thresholds={c: t[0] for c, t in thresholds.items()}, eta_mean=float(etas.mean()) if len(etas) else float("nan"),
        strip_ids=arrays["strip_ids"], strip_frames=arrays["strip_frames"],
    )


def run_chains(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, *, sampler: SamplerConfig, stop: StopConfig, thresholds: torch.Tensor,
               generator: torch.Generator) -> dict:
    """Run one batch of chains from given starts x0 (on the model's device), no refill.

    `thresholds`: (N,) E(x, y) stop thresholds (or (N, 2) with E(x)); per-chain noise streams are
    seeded from `generator`. Returns x, energy_joint, energy_marginal, steps, grad_evals, eta_mean.
    """
    device = x0.device
    n = len(x0)
    seeds = torch.randint(0, 2**62, (n,), generator=generator).tolist()
    noise = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
    limits = thresholds if thresholds.dim() == 2 else torch.stack([thresholds, torch.full_like(thresholds, float("inf"))], 1)
    chains = ChainBatch.start(torch.arange(n), x0, y, limits.float(), noise)
    out = {k: None for k in ("x", "energy_joint", "energy_marginal", "steps", "eta")}
    done: list = []

    class _Once:
        def take(self, k):
            nonlocal chains
            batch, chains = chains, None
            return batch

    grad_evals = run_queue(model, _Once(), sampler=sampler, stop=stop, batch_size=n, refill=False,
                           on_finish=lambda c, ej, em: done.append((c, ej, em)))
    order = torch.argsort(torch.cat([c.ids for c, _, _ in done]))
    for key, values in (("x", [c.x for c, _, _ in done]), ("energy_joint", [ej for _, ej, _ in done]),
                        ("energy_marginal", [em for _, _, em in done]), ("steps", [c.steps for c, _, _ in done]), ("eta", [c.eta for c, _, _ in done])):
        out[key] = torch.cat(values)[order]
    eta = out.pop("eta")
    return {**out, "grad_evals": grad_evals, "eta_mean": float(eta.nanmean()) if sampler.kind == "sgld" else float("nan")}
