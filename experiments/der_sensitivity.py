"""DER's sensitivity: beta x gamma on the setting where catastrophic overfitting is most reliable.

Grid (issue 13): beta in {1, 2, 4, 8} x gamma in {0.05, 0.1, 0.2, 0.5} x seeds, plus the same setting
without DER for reference, on the CIFAR-10 subset, PreActResNet-18 width 16, 15 epochs. The setting
(method, eps, augment) is the CO map's most reliable one (experiments/co_map.py); pass it with
--method/--eps/--augment. CO is judged as in the CO map (test PGD-10 below half its best).

    OMP_NUM_THREADS=1 python experiments/der_sensitivity.py --shard 0/2 &
    OMP_NUM_THREADS=1 python experiments/der_sensitivity.py --shard 1/2 &
    python experiments/der_sensitivity.py --summarise        # heatmap.png (CO rate, final PGD) + summary.md
"""

from __future__ import annotations

import itertools
import json
import statistics
from pathlib import Path

from co_map import EPOCHS, WIDTH, run_summary
from training_grid import grid_arguments, list_or_train, markdown_table, read_cell

BETAS = (1.0, 2.0, 4.0, 8.0)
GAMMAS = (0.05, 0.1, 0.2, 0.5)
DEFAULT_BETA, DEFAULT_GAMMA = 4.0, 0.1  # training.config.DER_BETA / DER_GAMMA


def cell_name(beta: float | None, gamma: float | None, seed: int) -> str:
    return f"s{seed}-plain" if beta is None else f"s{seed}-beta{beta:g}-gamma{gamma:g}"


def cells(args) -> dict:
    from training import TrainConfig

    base = dict(dataset=args.data, method=args.method, eps=args.eps / 255, width=WIDTH, epochs=EPOCHS, batch_size=128, lr=0.2,
                augment=args.augment, eval_pgd_steps=10, eval_subset=512, co_check_every=10, on_co="warn", device="cpu")
    out = {}
    for seed in args.seeds:
        out[cell_name(None, None, seed)] = TrainConfig(**base, der=False, seed=seed)
        for beta, gamma in itertools.product(args.betas, args.gammas):
            out[cell_name(beta, gamma, seed)] = TrainConfig(**base, der=True, der_beta=beta, der_gamma=gamma, seed=seed)
    return out


def summarise(results: Path, seeds) -> dict:
    table = {}
    for beta, gamma in [(None, None)] + list(itertools.product(BETAS, GAMMAS)):
        runs = [run_summary(*found) for seed in seeds if (found := read_cell(results, cell_name(beta, gamma, seed)))]
        if runs:
            table[(beta, gamma)] = {"seeds": len(runs), "co_rate": sum(r["co_epoch"] is not None for r in runs) / len(runs),
                                    "final_pgd": statistics.mean(r["final_pgd"] for r in runs),
                                    "final_clean": statistics.mean(r["final_clean"] for r in runs)}
    return table


def plot(table: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.4))
    for ax, key, label, cmap in ((axes[0], "co_rate", "CO rate", "Reds"), (axes[1], "final_pgd", "final test PGD-10 accuracy", "Blues")):
        grid = np.full((len(BETAS), len(GAMMAS)), np.nan)
        for i, beta in enumerate(BETAS):
            for j, gamma in enumerate(GAMMAS):
                if (beta, gamma) in table:
                    grid[i, j] = table[(beta, gamma)][key]
        image = ax.imshow(grid, cmap=cmap, vmin=0, vmax=1 if key == "co_rate" else max(0.05, float(np.nanmax(grid)) if np.isfinite(grid).any() else 1))
        for i in range(len(BETAS)):
            for j in range(len(GAMMAS)):
                if np.isfinite(grid[i, j]):
                    ax.text(j, i, f"{grid[i, j]:.2f}", ha="center", va="center", fontsize=9)
        ax.add_patch(plt.Rectangle((GAMMAS.index(DEFAULT_GAMMA) - 0.5, BETAS.index(DEFAULT_BETA) - 0.5), 1, 1, fill=False, ec="lime", lw=2))
        ax.set_xticks(range(len(GAMMAS)), [f"{g:g}" for g in GAMMAS])
        ax.set_yticks(range(len(BETAS)), [f"{b:g}" for b in BETAS])
        plain = table.get((None, None))
        ax.set(xlabel="gamma", ylabel="beta", title=f"{label}" + (f" (no DER: {plain[key]:.2f})" if plain else ""))
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.suptitle(title + " (green: the defaults)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = grid_arguments(__doc__, work="der-sensitivity")
    parser.add_argument("--method", default="fgsm")
    parser.add_argument("--eps", type=float, default=8, help="in 1/255 units")
    parser.add_argument("--augment", default="flip")
    parser.add_argument("--seeds", default="0,1,2", type=lambda s: [int(v) for v in s.split(",")])
    parser.add_argument("--betas", default=",".join(f"{b:g}" for b in BETAS), type=lambda s: [float(v) for v in s.split(",")],
                        help="a subset of the grid to run (the heatmap leaves the others blank)")
    parser.add_argument("--gammas", default=",".join(f"{g:g}" for g in GAMMAS), type=lambda s: [float(v) for v in s.split(",")])
    args = parser.parse_args()
    grid = cells(args)
    if list_or_train(grid, args):
        return
    results = Path(args.results)
    table = summarise(results, args.seeds)
    if not table:
        return
    rows = [{"beta": "no DER" if b is None else b, "gamma": "-" if g is None else g, **v} for (b, g), v in table.items()]
    (results / "summary.md").write_text(markdown_table(rows, ["beta", "gamma", "seeds", "co_rate", "final_pgd", "final_clean"]) + "\n")
    (results / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(table, results / "heatmap.png", f"DER sensitivity: {args.method} {args.eps:g}/255, augment {args.augment}, CIFAR-10 subset, w{WIDTH}")
    print(markdown_table(rows, ["beta", "gamma", "seeds", "co_rate", "final_pgd", "final_clean"]))


if __name__ == "__main__":
    main()
