"""Clean and PGD-k-r robust accuracy of a model on a dataset's test split."""

from __future__ import annotations

import torch
from torch import nn

from robustgen.data import ImageDataset, load_dataset, to_float
from robustgen.device import autocast
from training.attacks.pgd import pgd
from training.threat import check_norm


def evaluation_indices(n_test: int, subset: int | None, *, seed: int = 0) -> torch.Tensor:
    """A fixed, seeded choice of `subset` test images (all of them when subset is None)."""
    if subset is None or subset >= n_test:
        return torch.arange(n_test)
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(n_test, generator=generator)[:subset].sort().values


def evaluate_robustness(
    model: nn.Module,
    dataset: ImageDataset | str,
    *,
    eps: float,
    norm: str = "Linf",
    steps: int = 50,
    restarts: int = 10,
    step_size: float | None = None,
    subset: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    precision: str = "fp32",
    progress: bool = False,
) -> dict:
    """{"clean_acc", "robust_acc", "n", ...}: the model in eval mode, PGD with random starts.

    Uses its own seeded RNG stream (fork_rng), so evaluating never changes a
    training run's random numbers. steps=0 measures clean accuracy only.
    """
    check_norm(norm)
    if isinstance(dataset, str):
        dataset = load_dataset(dataset)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    x_all, y_all = dataset.split("test")
    idx = evaluation_indices(len(x_all), subset, seed=seed).numpy()
    x_all, y_all = x_all[idx], y_all[idx]
    clean = robust = 0
    devices = [device] if device.type == "cuda" else []
    from tqdm.auto import tqdm

    starts = range(0, len(x_all), batch_size)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for start in tqdm(starts, desc="eval", disable=not progress or None, leave=False):
            x = to_float(x_all[start : start + batch_size], device)
            y = torch.as_tensor(y_all[start : start + batch_size], device=device)
            with autocast(device, precision):
                with torch.no_grad():
                    correct = model(x).argmax(1) == y
                clean += int(correct.sum())
                if steps > 0 and eps > 0:
                    x_adv = pgd(model, x, y, eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)
                    with torch.no_grad():
                        robust += int(((model(x_adv).argmax(1) == y) & correct).sum())
                else:
                    robust += int(correct.sum())
    model.train(was_training)
    n = len(x_all)
    return {
        "clean_acc": clean / max(n, 1),
        "robust_acc": robust / max(n, 1),
        "n": n,
        "eps": eps,
        "norm": norm,
        "steps": steps,
        "restarts": restarts,
        "attack": "pgd",
    }
