"""Robust overfitting (RO) with PGD-10 AT, without DER and with DER from the first lr decay, same seed and budget.

CIFAR-10 subset (5,085 training images: RO comes early on small data), PreActResNet-18 --width
(default 16; width 8 over 40 epochs did not overfit: its training robust accuracy never passed the
test's), --epochs (default 24), piecewise lr 0.1 -> 0.01 at 50% -> 0.001 at 75% of the epochs,
PGD-10 (step 2/255) at 8/255, per-epoch test PGD-10 on 512 images. Afterwards best.pt and last.pt are
evaluated with PGD-50-10 on all 1,017 test images (and AutoAttack, if `robustgen eval --attack
autoattack` is available): the best - last gap is the RO measure; the seed paper says DER closes it.

    OMP_NUM_THREADS=1 python experiments/robust_overfitting.py --shard 0/2 &
    OMP_NUM_THREADS=1 python experiments/robust_overfitting.py --shard 1/2 &
    python experiments/robust_overfitting.py --summarise          # PGD-50-10 of best/last, table, curves
    python experiments/robust_overfitting.py --width 8 --epochs 40 --summarise   # the first, smaller try
"""

from __future__ import annotations

import json
from pathlib import Path

from training_grid import grid_arguments, markdown_table, read_cell, run_cells

from training.rundir import is_finished

EPOCHS, WIDTH = 24, 16
RUNS = {"plain": False, "der-from-decay": True}


def cells(data: str, seed: int, width: int, epochs: int) -> dict:
    from training import TrainConfig

    return {
        f"pgd10-w{width}-e{epochs}-{name}-s{seed}": TrainConfig(
            dataset=data, method="pgd", steps=10, eps=8 / 255, width=width, epochs=epochs, batch_size=128, lr=0.1, schedule="piecewise",
            der=der, der_start=epochs // 2, eval_pgd_steps=10, eval_subset=512, co_check_every=0, device="cpu", seed=seed,
        )
        for name, der in RUNS.items()
    }


def final_evaluations(work: Path, results: Path, names: list[str]) -> dict:
    """PGD-50-10 of best.pt and last.pt on the whole test split, one cached file per run (shards write apart)."""
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import load_dataset
    from training import evaluate_robustness

    done = {}
    for name in names:
        path = results / name / "final-eval.json"
        found = json.loads(path.read_text()) if path.is_file() else {}
        for which in ("best", "last"):
            if which in found or not is_finished(work / name):  # a run still training has no final best/last yet
                continue
            model, meta = load_checkpoint(work / name / f"{which}.pt")
            result = evaluate_robustness(model, load_dataset(meta["dataset"]), eps=8 / 255, steps=50, restarts=10)
            found[which] = {"epoch": meta["epoch"] + 1, "clean": result["clean_acc"], "pgd50_10": result["robust_acc"], "n": result["n"]}
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(json.dumps(found, indent=2) + "\n")
            path.with_suffix(".tmp").replace(path)
        done.update({f"{name}/{which}": value for which, value in found.items()})
    return done


def plot(results: Path, names: list[str], path: Path, *, decay: int, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    for name, color in zip(names, ("C3", "C0")):
        found = read_cell(results, name)
        if not found:
            continue
        _, metrics, _ = found
        epochs = [r["epoch"] + 1 for r in metrics]
        axes[0].plot(epochs, [r["test_pgd_acc"] for r in metrics], color=color, label=f"{name}: test PGD-10")
        axes[0].plot(epochs, [r["train_adv_acc"] for r in metrics], color=color, ls="--", label=f"{name}: train PGD-10")
        axes[1].plot(epochs, [r["de_x_mean"] for r in metrics], color=color, label=f"{name}: dE(x)")
        axes[1].plot(epochs, [r["de_xy_mean"] for r in metrics], color=color, ls="--", label=f"{name}: dE(x,y)")
        axes[2].plot(epochs, [r["de_norm_mean"] for r in metrics], color=color, label=f"{name}: mean ||dE||")
    for ax, panel in zip(axes, ("robust accuracy", "delta energies (training batches)", "delta-energy norm")):
        ax.axvline(decay + 0.5, color="grey", ls=":", lw=1)
        ax.set(title=panel, xlabel="epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"Robust overfitting: PGD-10 AT on the CIFAR-10 subset, {title}, piecewise lr (dotted: first decay, DER starts)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = grid_arguments(__doc__, work="robust-overfitting")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=WIDTH)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    args = parser.parse_args()
    grid = cells(args.data, args.seed, args.width, args.epochs)
    tag = f"w{args.width}-e{args.epochs}"
    if args.list:
        print("\n".join(sorted(grid)))
        return
    results, names = Path(args.results), sorted(grid)
    if not args.summarise:
        run_cells(grid, args)
        index, count = (int(v) for v in args.shard.split("/"))
        final_evaluations(Path(args.work), results, names[index::count])  # each shard evaluates its own runs
    finals = final_evaluations(Path(args.work), results, names)
    rows = []
    for name in names:
        best, last = finals.get(f"{name}/best"), finals.get(f"{name}/last")
        if best and last:
            rows.append({"run": name, "best epoch": best["epoch"], "best PGD-50-10": best["pgd50_10"], "last PGD-50-10": last["pgd50_10"],
                         "gap (best - last)": best["pgd50_10"] - last["pgd50_10"], "best clean": best["clean"], "last clean": last["clean"]})
    if rows:
        table = markdown_table(rows, list(rows[0]))
        (results / f"summary-{tag}.md").write_text(table + "\n")
        print(table)
    plot(results, names, results / f"robust-overfitting-{tag}.png", decay=args.epochs // 2, title=f"width {args.width}, {args.epochs} epochs")


if __name__ == "__main__":
    main()
