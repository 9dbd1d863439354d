"""A training run that heals itself: FGSM at 8/255 (crop+flip) on the CIFAR-10 subset, where plain training collapses
in the CO map, run with `--on-co der` and `--on-co rollback`, beside the CO map's plain and DER runs of the same seed.

    OMP_NUM_THREADS=1 python experiments/self_healing.py            # 2 runs, ~6 min each on one core
    python experiments/self_healing.py --summarise                 # table + curves.png
"""

from __future__ import annotations

from pathlib import Path

from co_map import CHECK_EVERY, EPOCHS, WIDTH, cell_name, run_summary
from training_grid import REPO, grid_arguments, markdown_table, read_cell, run_cells

SEED = 0


def cells(data: str) -> dict:
    from training import TrainConfig

    return {f"s{SEED}-fgsm-eps8-cropflip-on-co-{action}": TrainConfig(
        dataset=data, method="fgsm", eps=8 / 255, width=WIDTH, epochs=EPOCHS, batch_size=128, lr=0.2, augment="crop+flip",
        eval_pgd_steps=10, eval_subset=512, co_check_every=CHECK_EVERY, on_co=action, device="cpu", seed=SEED) for action in ("der", "rollback")}


def main() -> None:
    args = grid_arguments(__doc__, work="self-healing").parse_args()
    grid = cells(args.data)
    if not args.summarise:
        run_cells(grid, args)
    results, co_map = Path(args.results), REPO / "experiments" / "results" / "co-map"
    runs = {"no DER (CO map)": (co_map, cell_name(SEED, "fgsm", 8, "crop+flip", False)),
            "DER from the start (CO map)": (co_map, cell_name(SEED, "fgsm", 8, "crop+flip", True)),
            **{f"--on-co {name.rsplit('-', 1)[-1]}": (results, name) for name in sorted(grid)}}
    rows, curves = [], {}
    for label, (where, name) in runs.items():
        found = read_cell(where, name)
        if not found:
            continue
        config, metrics, monitor = found
        summary = run_summary(config, metrics, monitor)
        interventions = [i for r in metrics for i in r.get("interventions", [])]
        rows.append({"run": label, "CO": "yes" if summary["co_epoch"] is not None else "no", "final PGD-10": summary["final_pgd"],
                     "best PGD-10": summary["best_pgd"], "final clean": summary["final_clean"], "interventions": len(interventions),
                     "first at step": interventions[0]["step"] if interventions else None})
        curves[label] = metrics
    if not rows:
        return
    table = markdown_table(rows, list(rows[0]))
    (results / "summary.md").write_text(table + "\n")
    print(table)
    _plot(curves, results / "curves.png")


def _plot(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for label, metrics in curves.items():
        epochs = [r["epoch"] + 1 for r in metrics]
        axes[0].plot(epochs, [r["test_pgd_acc"] for r in metrics], marker="o", ms=3, label=label)
        axes[1].plot(epochs, [r["aae_frac"] for r in metrics], marker="o", ms=3, label=label)
        for r in metrics:
            for i in r.get("interventions", []):
                axes[0].axvline(r["epoch"] + 1, color="grey", ls=":", lw=0.8)
    axes[0].set(title="test PGD-10 accuracy", xlabel="epoch")
    axes[1].set(title="AAE fraction of training samples", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("FGSM 8/255, CIFAR-10 subset, w16: plain, DER, and runs that heal themselves (dotted: interventions)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
