"""Clean and PGD-k-r robust accuracy of a model on a dataset's test split."""

from __future__ import annotations

import torch
from torch import nn

from robustgen.kernel import distributed
from robustgen.kernel.data import ImageDataset, load_dataset, to_float
from robustgen.kernel.device import autocast, derived_seed
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import finite
from robustgen.kernel.threat import check_norm
from training.attacks.pgd import pgd_with_start


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
    training run's random numbers. steps=0 measures clean accuracy only. Under
    torchrun each rank attacks its share of the images and the counts are summed.
    """
    check_norm(norm)
    eps = finite(eps, name="eps")
    step_size = finite(step_size, name="step_size") if step_size is not None else None
    if eps < 0 or (step_size is not None and step_size < 0):
        raise RobustgenError(f"eps {eps} and step_size {step_size} must be >= 0 (pixel units)")
    if batch_size < 1:
        raise RobustgenError(f"--batch-size {batch_size} must be at least 1")
    if isinstance(dataset, str):
        dataset = load_dataset(dataset)
    device = next(model.parameters()).device
    dist = distributed.for_device(device)
    was_training = model.training
    model.eval()
    x_all, y_all = dataset.split("test")
    idx = evaluation_indices(len(x_all), subset, seed=seed).numpy()
    counts = torch.zeros(2, device=device)  # clean correct, robust correct
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(derived_seed(seed, dist.rank))
        for start in _progress(range(0, len(idx), batch_size * dist.world_size), progress and dist.is_main):
            mine = dist.shard(idx[start : start + batch_size * dist.world_size])
            if len(mine):
                x, y = to_float(x_all[mine], device), torch.as_tensor(y_all[mine], device=device)
                counts += _correct(model, x, y, eps=eps, norm=norm, steps=steps, restarts=restarts, step_size=step_size, precision=precision)
    model.train(was_training)
    clean, robust = dist.all_reduce_sum(counts).tolist()
    n = len(idx)
    return {"clean_acc": clean / max(n, 1), "robust_acc": robust / max(n, 1), "n": n, "eps": eps, "norm": norm,
            "steps": steps, "restarts": restarts, "attack": "pgd"}


def _correct(model, x, y, *, eps, norm, steps, restarts, step_size, precision) -> torch.Tensor:
    """(clean correct, correct under PGD and clean) counts for one batch: PGD attacks the clean-correct images,
    each restart only those no earlier one fooled (training.attacks.pgd). The model is in eval mode, so which
    images share a batch does not change their logits."""
    with autocast(x.device, precision):
        with torch.no_grad():
            correct = model(x).argmax(1) == y
        robust = correct.clone()
        attacked = correct.nonzero().squeeze(1)
        if steps > 0 and eps > 0 and len(attacked):
            result = pgd_with_start(model, x[attacked], y[attacked], eps=eps, step_size=step_size, steps=steps, restarts=restarts, norm=norm)
            robust[attacked] = ~result.fooled
    return torch.stack([correct.sum(), robust.sum()]).float()


def _progress(items, show: bool):
    from tqdm.auto import tqdm

    return tqdm(items, desc="eval", disable=None if show else True, leave=False)
