"""AutoAttack (Croce & Hein, 2020) robust accuracy through the official `pyautoattack` package, resumable.

    result = evaluate_autoattack(model, dataset, eps=8/255, norm="Linf")                  # standard version
    result = evaluate_autoattack(model, dataset, eps=8/255, attacks=("apgd-ce", "apgd-t"))  # custom subset
    result = evaluate_autoattack(model, dataset, eps=8/255, state_path="aa-state.json")   # resumable

The test images (a seeded `subset`, chosen like `evaluate_robustness` does, so PGD
and AutoAttack see the same images) are attacked in chunks of `batch_size`. After
each chunk its per-image clean and robust flags go into the state file (written
atomically), so an interrupted evaluation continues at the first unfinished chunk.
pyautoattack's own `state_path` is not used: it rewrites its JSON in place (a kill
mid-write corrupts it) and only records whole attacks as done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from robustgen.kernel.data import ImageDataset, to_float
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import finite
from robustgen.kernel.io import atomic_write_json, default_cache_dir, ensure_writable_dir, settings_hash, sha256_arrays
from robustgen.kernel.models import model_fingerprint
from robustgen.kernel.threat import check_norm, perturbation_norm
from training.pgd_accuracy import evaluation_indices

ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")  # pyautoattack's version="standard" for Linf and L2
STATE_FORMAT = "robustgen-autoattack-state"
INSTALL = "pip install 'robustgen[zoo]'"


def parse_attacks(text: str) -> tuple[str, ...] | None:
    """"autoattack" / "standard" -> None (the standard version); "apgd-ce,apgd-t" -> a custom subset."""
    if text.strip().lower() in ("autoattack", "standard", "aa"):
        return None
    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in ATTACKS]
    if unknown or not names:
        raise RobustgenError(f"unknown attack {', '.join(unknown) or repr(text)}: use pgd, autoattack, or a comma list of {', '.join(ATTACKS)}")
    return names


def attack_label(attacks: Sequence[str] | None, steps: int | None = None) -> str:
    label = "AutoAttack" if attacks is None else "+".join(a.upper() for a in attacks)
    return label + (f" ({steps} it)" if steps is not None else "")


def evaluate_autoattack(
    model: nn.Module,
    dataset: ImageDataset,
    *,
    eps: float,
    norm: str = "Linf",
    attacks: Sequence[str] | None = None,
    steps: int | None = None,
    restarts: int | None = None,
    subset: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    state_path: str | Path | None = None,
    progress: bool = False,
) -> dict:
    """{"clean_acc", "robust_acc", "n", "eps", "norm", "attack", ...} under AutoAttack.

    attacks: None = pyautoattack's standard version (APGD-CE, APGD-T, FAB-T, Square), else a
    custom subset of ATTACKS. steps: APGD/FAB iterations (None = pyautoattack's 100).
    restarts: APGD/FAB restarts (None = the version's). state_path: JSON state file that
    makes the run resumable ("auto": under the robustgen cache, keyed by the settings).
    The images are attacked in chunks of batch_size; each finished chunk is saved at once.
    """
    _check_arguments(eps=eps, norm=norm, steps=steps, restarts=restarts, batch_size=batch_size)
    try:
        from pyautoattack import AutoAttack
    except ImportError:
        raise RobustgenError(f"--attack autoattack needs the pyautoattack package: {INSTALL}") from None
    attacks = tuple(attacks) if attacks is not None else None
    was_training = model.training
    model.eval()
    x_all, y_all = dataset.split("test")
    idx = evaluation_indices(len(x_all), subset, seed=seed).numpy()
    x_all, y_all = x_all[idx], y_all[idx]
    settings = _settings(model, dataset, idx, eps=eps, norm=norm, attacks=attacks, steps=steps, restarts=restarts, seed=seed,
                         batch_size=batch_size)
    path = _state_path(state_path, settings)
    chunks = _read_state(path, settings) if path is not None else {}
    resumed, n_chunks = len(chunks), (len(idx) + batch_size - 1) // batch_size
    messages: list[str] = []
    started = time.perf_counter()
    from tqdm.auto import tqdm

    with _capture_log("auto-attack", messages):
        for c in tqdm(range(n_chunks), desc="autoattack", unit="chunk", disable=None if progress else True, leave=False):
            if str(c) in chunks:
                continue
            rows = slice(c * batch_size, (c + 1) * batch_size)
            chunks[str(c)] = _attack_chunk(model, x_all[rows], y_all[rows], AutoAttack=AutoAttack, eps=eps, norm=norm,
                                           attacks=attacks, steps=steps, restarts=restarts, seed=seed)
            if path is not None:
                atomic_write_json(path, {"format": STATE_FORMAT, "format_version": 1, "settings": settings, "chunks": chunks})
    model.train(was_training)
    result = _summary([chunks[str(c)] for c in range(n_chunks)], n=len(idx), eps=eps, norm=norm, attacks=attacks, steps=steps)
    return {**result, "restarts": restarts, "seed": seed, "state": str(path) if path is not None else None, "resumed_chunks": resumed,
            "chunks": n_chunks, "seconds": time.perf_counter() - started, "warnings": list(dict.fromkeys(messages))}


def _check_arguments(*, eps: float, norm: str, steps: int | None, restarts: int | None, batch_size: int) -> None:
    check_norm(norm)
    if finite(eps, name="eps") <= 0:
        raise RobustgenError(f"AutoAttack needs eps > 0, got {eps}: give the threat model's radius, e.g. 8/255")
    if (steps is not None and steps < 1) or (restarts is not None and restarts < 1) or batch_size < 1:
        raise RobustgenError("--steps, --restarts and --batch-size must be at least 1 for AutoAttack")


def _settings(model: nn.Module, dataset: ImageDataset, idx: np.ndarray, *, eps, norm, attacks, steps, restarts, seed, batch_size) -> dict:
    """What a state file must match to be resumed: the weights, the images and every attack setting."""
    return {
        "model_sha256": model_fingerprint(model),
        "dataset": dataset.name,
        "dataset_sha256": dataset.fingerprint(),
        "indices_sha256": sha256_arrays(idx.astype(np.int64)),
        "n": len(idx),
        "eps": float(eps),
        "norm": norm,
        "attacks": list(attacks) if attacks is not None else "standard",
        "steps": steps,
        "restarts": restarts,
        "seed": seed,
        "chunk": batch_size,
    }


def _attack_chunk(model: nn.Module, images: np.ndarray, labels: np.ndarray, *, AutoAttack, eps, norm, attacks, steps, restarts, seed) -> dict:
    """Clean and robust flags of one chunk of test images (uint8 NHWC), and its largest perturbation."""
    device = next(model.parameters()).device
    x, y = to_float(images, device), torch.as_tensor(labels, device=device)
    with torch.no_grad():
        logits = model(x)
    clean = logits.argmax(1) == y
    adversary = _adversary(AutoAttack, model, num_classes=logits.shape[1], device=device, eps=eps, norm=norm,
                           attacks=attacks, steps=steps, restarts=restarts, seed=seed)
    x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    with torch.no_grad():
        robust = clean & (model(x_adv).argmax(1) == y)
    size = perturbation_norm(x_adv, x, norm=norm)
    return {"clean": clean.int().tolist(), "robust": robust.int().tolist(), "max_perturbation": float(size.max()) if len(size) else 0.0}


def _summary(chunks: list[dict], *, n: int, eps: float, norm: str, attacks, steps) -> dict:
    clean = sum(sum(c["clean"]) for c in chunks)
    robust = sum(sum(c["robust"]) for c in chunks)
    max_perturbation = max([0.0] + [c.get("max_perturbation", 0.0) for c in chunks])
    return {
        "clean_acc": clean / max(n, 1),
        "robust_acc": robust / max(n, 1),
        "n": n,
        "eps": float(eps),
        "norm": norm,
        "attack": "autoattack" if attacks is None else ",".join(attacks),
        "attack_label": attack_label(attacks, steps),
        "version": "standard" if attacks is None else "custom",
        "attacks": list(STANDARD if attacks is None else attacks),
        "steps": steps,
        "max_perturbation": max_perturbation,
        "within_eps": bool(max_perturbation <= eps * (1 + 1e-4) + 1e-6),
    }


def _adversary(AutoAttack, model, *, num_classes: int, device, eps, norm, attacks, steps, restarts, seed):
    """A pyautoattack AutoAttack with robustgen's overrides (iterations, restarts, targets <= classes - 1)."""
    version = "standard" if attacks is None else "custom"
    adversary = AutoAttack(model, attacks=None if attacks is None else list(attacks), device=device, eps=eps, norm=norm, seed=seed, version=version)
    targets = max(1, min(9, num_classes - 1))
    adversary.apgd_targeted.n_target_classes = min(adversary.apgd_targeted.n_target_classes, targets)
    adversary.fab.n_target_classes = min(adversary.fab.n_target_classes, targets)
    if steps is not None:
        for apgd in (adversary.apgd, adversary.apgd_targeted):
            apgd.n_iter = apgd.n_iter_orig = steps
            apgd.n_iter_2 = max(int(0.22 * steps), 1)  # APGD's checkpoints, as its __init__ derives them from n_iter
            apgd.n_iter_min = max(int(0.06 * steps), 1)
            apgd.size_decr = max(int(0.03 * steps), 1)
        adversary.fab.n_iter = steps
    if restarts is not None:
        adversary.apgd.n_restarts = adversary.apgd_targeted.n_restarts = adversary.fab.n_restarts = restarts
    return adversary


def _state_path(state_path, settings: dict) -> Path | None:
    if state_path is None:
        return None
    if str(state_path) == "auto":  # one file per evaluation: rerunning the same command resumes it
        key = settings_hash(settings)
        return default_cache_dir() / "autoattack" / f"{key}.json"
    return Path(state_path).expanduser()


def _read_state(path: Path, settings: dict) -> dict:
    """Finished chunks of an earlier run with the same settings; one line when the file is someone else's."""
    if not path.is_file():
        ensure_writable_dir(path.parent)
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RobustgenError(f"cannot read AutoAttack state {path} ({exc}): delete it to start over") from None
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise RobustgenError(f"{path} is not an AutoAttack state file written by robustgen eval: pass another --state")
    previous = state.get("settings", {})
    changed = sorted(k for k in set(previous) | set(settings) if previous.get(k) != json.loads(json.dumps(settings.get(k))))
    if changed:
        raise RobustgenError(f"AutoAttack state {path} belongs to another evaluation ({', '.join(changed)} differ): delete it or pass another --state")
    return dict(state.get("chunks", {}))


@contextlib.contextmanager
def _capture_log(name: str, messages: list[str]):
    """Collect a logger's warnings (pyautoattack's checks: randomised defence, zero gradients, ...) instead of printing them."""

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    logger = logging.getLogger(name)
    handler, propagate = Collect(level=logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
