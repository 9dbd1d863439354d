"""Energy diagnostics: per-epoch statistics, live catastrophic-overfitting alarms, plots.

Definitions used in metrics.jsonl:
- dE(x) = E(x) - E(x*), dE(x, y) = E(x, y) - E(x*, y) on the training batches (mean/std per epoch);
  de_norm = ||[dE(x), dE(x, y)]||_2.
- AAE (abnormal adversarial example): cross-entropy at the attack's start point > at x*.
- high-energy AAE: an AAE whose de_norm is above the run's DER gamma, i.e. exactly the
  samples DER penalises (counted with or without DER, so runs are comparable).
- co_alarm: null, or why this epoch looks like catastrophic overfitting (see `co_alarm`).
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import torch
from torch import Tensor

from robustgen.kernel.io import atomic_path
from training.collapse import collapsed

SPIKE_FACTOR = 3.0  # mean ||dE|| above this multiple of the median of earlier epochs


def epoch_summary(sums: dict[str, Tensor]) -> dict[str, float]:
    """Turn the per-epoch sums of `training.step.STAT_KEYS` into metrics.jsonl fields."""
    s = {k: float(v) for k, v in sums.items()}
    n = max(s["n"], 1.0)

    def std(total: float, total_sq: float) -> float:
        return math.sqrt(max(total_sq / n - (total / n) ** 2, 0.0))

    return {
        "n_train": int(s["n"]),
        "train_loss": s["loss"] / n,  # the optimised loss (CE at x*, or TRADES, plus beta * DER)
        "train_nat_loss": s["nat_loss"] / n,  # cross-entropy at x
        "train_adv_loss": s["adv_loss"] / n,  # cross-entropy at x*
        "train_nat_acc": s["nat_correct"] / n,
        "train_adv_acc": s["adv_correct"] / n,
        "de_x_mean": s["de_x"] / n,
        "de_x_std": std(s["de_x"], s["de_x_sq"]),
        "de_xy_mean": s["de_xy"] / n,
        "de_xy_std": std(s["de_xy"], s["de_xy_sq"]),
        "de_norm_mean": s["de_norm"] / n,
        "de_norm_max": s["de_norm_max"],
        "aae_count": int(s["aae"]),
        "aae_frac": s["aae"] / n,
        "aae_high_count": int(s["aae_high"]),
        "aae_high_frac": s["aae_high"] / n,
        "der_penalty_mean": s["der_penalty"] / n,
    }


def co_alarm(record: dict, history: list[dict]) -> str | None:
    """Why `record` (this epoch) looks like catastrophic overfitting, given earlier epochs; None if it does not.

    Two signals: (1) test PGD accuracy collapses (`training.collapse.collapsed`) while train
    adversarial accuracy rises (the attack became useless: the model learned to
    mask single-step gradients); (2) the mean delta-energy norm spikes to
    SPIKE_FACTOR x the median of earlier epochs (the energy signature of CO).
    """
    reasons = []
    if history and record.get("eval_pgd_steps", 0) > 0:
        best = max(h["test_pgd_acc"] for h in history)
        prev = history[-1]
        if collapsed(record["test_pgd_acc"], best) and record["train_adv_acc"] > prev["train_adv_acc"]:
            reasons.append(
                f"test PGD acc collapsed to {record['test_pgd_acc']:.3f} (best {best:.3f}) while train adversarial acc rose to {record['train_adv_acc']:.3f}"
            )
    if len(history) >= 2:
        base = statistics.median(h["de_norm_mean"] for h in history)
        if base > 0 and record["de_norm_mean"] > SPIKE_FACTOR * base:
            reasons.append(f"mean ||dE|| spiked to {record['de_norm_mean']:.3g} ({record['de_norm_mean'] / base:.1f}x the earlier median {base:.3g})")
    return "; ".join(reasons) or None


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_curves(records: list[dict], path: str | Path, *, title: str = "") -> Path:
    """curves.png of a run (see `curves_figure`)."""
    return _save(curves_figure(records, title=title), Path(path))


def curves_png(records: list[dict], *, title: str = "") -> bytes:
    """The same picture as PNG bytes (the HTML report embeds it)."""
    import io

    fig = curves_figure(records, title=title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buffer.getvalue()


def curves_figure(records: list[dict], *, title: str = ""):
    """The one training-curve plot: per epoch, errors (test PGD, test clean, train adversarial), delta energies,
    AAE counts, CO alarms as red dashes (metrics.jsonl records, as training.epoch writes them); generative runs
    add a fourth panel: real-vs-contrastive AUC of s, T, and the mean energies of real and contrast images."""
    plt = _pyplot()
    epochs = [r["epoch"] + 1 for r in records]
    generative = [r for r in records if r.get("generative")]
    fig, axes = plt.subplots(1, 4 if generative else 3, figsize=(20 if generative else 15, 4.2))
    if generative:
        _generative_panel(axes[3], generative)
    ax = axes[0]
    ax.plot(epochs, [1 - r["test_pgd_acc"] for r in records], "o-", color="C3", label=f"test PGD-{records[0].get('eval_pgd_steps', '?')} error")
    ax.plot(epochs, [1 - r["test_clean_acc"] for r in records], "s-", color="C0", label="test clean error")
    ax.plot(epochs, [1 - r["train_adv_acc"] for r in records], "^--", color="C1", label="train adversarial error")
    ax.set(xlabel="epoch", ylabel="error", ylim=(0, 1), title="errors")
    ax = axes[1]
    for key, label, color in (("de_x", "dE(x)", "C2"), ("de_xy", "dE(x, y)", "C4")):
        mean = [r[f"{key}_mean"] for r in records]
        std = [r[f"{key}_std"] for r in records]
        ax.plot(epochs, mean, "o-", color=color, label=f"{label} mean")
        ax.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=color, alpha=0.2)
    ax.plot(epochs, [r["de_norm_mean"] for r in records], "k:", label="mean ||dE||")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(xlabel="epoch", ylabel="energy (logit units)", title="delta energies on training batches (mean ± std)")
    ax = axes[2]
    ax.plot(epochs, [r["aae_count"] for r in records], "o-", color="C5", label="AAEs")
    ax.plot(epochs, [r["aae_high_count"] for r in records], "x-", color="C3", label="high-energy AAEs (||dE|| > gamma)")
    ax.set(xlabel="epoch", ylabel="count per epoch", title="abnormal adversarial examples")
    for ax in axes:
        for r in records:
            if r.get("co_alarm"):
                ax.axvline(r["epoch"] + 1, color="red", ls="--", lw=1, alpha=0.6)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if any(r.get("co_alarm") for r in records):
        axes[0].text(0.01, 0.02, "red dashes: CO alarm", transform=axes[0].transAxes, color="red", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def _generative_panel(ax, records: list[dict]) -> None:
    """AUC of s (real vs contrast, last window of each epoch) and mean E of real / contrast images; T on a second axis."""
    epochs = [r["epoch"] + 1 for r in records]
    ax.plot(epochs, [r["energy_real_mean"] for r in records], "o-", color="C0", label="mean E, real")
    ax.plot(epochs, [r["energy_ood_mean"] for r in records], "s-", color="C3", label="mean E, contrast (OOD after T steps)")
    ax.set(xlabel="epoch", ylabel="energy (logit units)", title="generative fine-tuning")
    twin = ax.twinx()
    twin.plot(epochs, [r["gen_auc"] if r["gen_auc"] is not None else float("nan") for r in records], "^--", color="C2", label="AUC of s, real vs contrast")
    twin.plot(epochs, [r["gen_steps"] / max(r["gen_steps"] for r in records) for r in records], "k:", label=f"T / {max(r['gen_steps'] for r in records)}")
    twin.set(ylim=(0, 1.05), ylabel="AUC, T (scaled)")
    twin.legend(fontsize=8, loc="center right")


def plot_energy_quiver(
    energies_nat: tuple[Tensor, Tensor], energies_adv: tuple[Tensor, Tensor], aae: Tensor, path: str | Path, *, title: str = ""
) -> Path:
    """Arrows (E(x), E(x, y)) -> (E(x*), E(x*, y)) per sample; AAEs in red."""
    plt = _pyplot()
    ex, exy = (t.detach().cpu().numpy() for t in energies_nat)
    ax_, axy = (t.detach().cpu().numpy() for t in energies_adv)
    is_aae = aae.detach().cpu().numpy().astype(bool)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    for mask, color, label in ((~is_aae, "C0", "normal"), (is_aae, "C3", "AAE")):
        if mask.any():
            ax.quiver(ex[mask], exy[mask], (ax_ - ex)[mask], (axy - exy)[mask], angles="xy", scale_units="xy", scale=1,
                      color=color, width=0.004, alpha=0.8, label=f"{label} ({int(mask.sum())})")
    ax.scatter(ex, exy, s=8, color="k", zorder=3, label="natural x")
    xs = list(ex) + list(ax_)
    ys = list(exy) + list(axy)
    pad_x = 0.05 * (max(xs) - min(xs) + 1e-6)
    pad_y = 0.05 * (max(ys) - min(ys) + 1e-6)
    ax.set(xlim=(min(xs) - pad_x, max(xs) + pad_x), ylim=(min(ys) - pad_y, max(ys) + pad_y))
    ax.set(xlabel="marginal energy E(x)", ylabel="joint energy E(x, y)", title=title or "energy shift x -> x*")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, Path(path))


# --------------------------------------------------------------------------- a run dir, after the fact


def energy_shift(model, x: Tensor, y: Tensor, *, config) -> dict[str, Tensor]:
    """E(x), E(x, y), E(x*), E(x*, y) and the AAE mask for one batch, x* from the run's own attack (eval mode).

    A standard run has no attack of its own: it is shown what PGD (at the run's eps) does to it.
    """
    import torch.nn.functional as F

    from robustgen.kernel.energy import delta_energies, joint_energy, marginal_energy
    from training.der import abnormal_mask
    from training.methods import get_method

    method = get_method(config.method) if get_method(config.method).attack is not None else get_method("pgd")
    steps = config.steps if method.name == config.method else method.default_steps
    step_size = config.step_size if method.name == config.method else method.step_size(config.eps, steps, None)
    was_training = model.training
    model.eval()
    attack = method.attack(model, x, y, eps=config.eps, step_size=step_size, steps=steps, restarts=1, norm=config.norm, keep_graph=False)
    with torch.no_grad():
        nat, adv = model(x).float(), model(attack.x_adv).float()
    model.train(was_training)
    de_x, de_xy = delta_energies(nat, adv, y)
    return {
        "e_x": marginal_energy(nat), "e_xy": joint_energy(nat, y), "e_x_adv": marginal_energy(adv), "e_xy_adv": joint_energy(adv, y),
        "de_x": de_x, "de_xy": de_xy, "aae": abnormal_mask(attack.loss_start, F.cross_entropy(adv, y, reduction="none")),
    }


def diagnose_run(run_dir: str | Path, *, checkpoint: str = "best", n: int = 64, device: str = "auto", seed: int = 0) -> dict:
    """Draw curves.png (from metrics.jsonl) and quiver.png (a test batch of the checkpoint) in `run_dir`."""
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import load_dataset, to_float
    from robustgen.kernel.device import resolve_device
    from robustgen.kernel.errors import RobustgenError
    from training.rundir import read_training_run

    run = read_training_run(run_dir)
    run_dir, records = run.run_dir, run.metrics
    if not records:
        raise RobustgenError(f"{run_dir / 'metrics.jsonl'} holds no finished epoch yet: wait for the first epoch to end")
    if checkpoint not in ("best", "last"):
        raise RobustgenError(f"unknown checkpoint {checkpoint!r}: use best or last")
    config = run.config
    title = f"{Path(run_dir).name}: {config.method}{' + DER' if config.der else ''}, {config.norm} eps {config.eps:.4g}"
    curves = plot_curves(records, run_dir / "curves.png", title=title)
    model, meta = load_checkpoint(run_dir / f"{checkpoint}.pt", device=resolve_device(device))
    dataset = load_dataset(config.dataset, root=config.data_root, channels=config.channels)
    x_test, y_test = dataset.split("test")
    generator = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(y_test), generator=generator)[:n].numpy()
    dev = next(model.parameters()).device
    x, y = to_float(x_test[idx], dev), torch.as_tensor(y_test[idx], device=dev)
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(seed)
        shift = energy_shift(model, x, y, config=config)
    quiver = plot_energy_quiver(
        (shift["e_x"], shift["e_xy"]), (shift["e_x_adv"], shift["e_xy_adv"]), shift["aae"], run_dir / "quiver.png",
        title=f"{title}\n{checkpoint}.pt (epoch {meta.get('epoch', -1) + 1}), {len(idx)} test images: (E(x), E(x,y)) -> (E(x*), E(x*,y))",
    )
    return {
        "curves": str(curves),
        "quiver": str(quiver),
        "epochs": len(records),
        "co_alarms": [(r["epoch"], r["co_alarm"]) for r in records if r.get("co_alarm")],
        "aae_in_batch": int(shift["aae"].sum()),
        "mean_de_x": float(shift["de_x"].mean()),
        "mean_de_xy": float(shift["de_xy"].mean()),
    }
