"""The CO map: how often single-step AT collapses, with and without DER, and how early the alarm fires.

Grid (issue 13): seeds {0, 1, 2} x methods {fgsm, fgsm-rs} x eps {8, 16}/255 x augment {crop+flip, flip}
x {no DER, DER at the defaults}, on the real CIFAR-10 subset (5,085 training images), PreActResNet-18
width 16, 15 epochs, batch 128, cyclic lr 0.2, bf16 where the CPU has it. In-epoch CO checks every 10
SGD steps (--on-co warn: they only record). Per-epoch test PGD-10 on 512 test images.

CO (ground truth) = the test PGD-10 accuracy falls below half its best so far (after a best >= 0.10),
measured at epoch ends. Alarm lead time = SGD steps from the first in-epoch alarm to the end of the
epoch whose evaluation showed the collapse (positive: the alarm came first). A false alarm = any alarm
in a run that stayed robust (no CO, best PGD-10 >= 0.10); runs that never reached 0.10 ("never robust",
e.g. FGSM at 16/255) are counted apart: CO cannot be told apart from not learning there. Alarms are replayed from monitor.jsonl with training.monitor.replay_alarms, i.e.
under the rule a live run applies now (the recorded raw signals do not depend on the rule).

    OMP_NUM_THREADS=1 python experiments/co_map.py --shard 0/2 &     # ~7 min per cell per core
    OMP_NUM_THREADS=1 python experiments/co_map.py --shard 1/2 &
    python experiments/co_map.py --summarise                         # summary.md/json + co-map.png
"""

from __future__ import annotations

import itertools
import json
import math
import statistics
from pathlib import Path

from training_grid import grid_arguments, list_or_train, markdown_table, read_cell

from training.collapse import COLLAPSE_FLOOR, collapse_epoch

SEEDS = (0, 1, 2)
METHODS = ("fgsm", "fgsm-rs")
EPS = (8, 16)  # /255
AUGMENTS = ("crop+flip", "flip")
EPOCHS, WIDTH, CHECK_EVERY = 15, 16, 10


def cell_name(seed: int, method: str, eps: int, augment: str, der: bool) -> str:
    return f"s{seed}-{method}-eps{eps}-{augment.replace('+', '')}-{'der' if der else 'plain'}"


def cells(data: str) -> dict:
    from training import TrainConfig

    out = {}
    for seed, method, eps, augment, der in itertools.product(SEEDS, METHODS, EPS, AUGMENTS, (False, True)):
        out[cell_name(seed, method, eps, augment, der)] = TrainConfig(
            dataset=data, method=method, eps=eps / 255, width=WIDTH, epochs=EPOCHS, batch_size=128, lr=0.2, der=der, augment=augment,
            eval_pgd_steps=10, eval_subset=512, co_check_every=CHECK_EVERY, on_co="warn", device="cpu", seed=seed,
        )
    return out


def run_summary(config: dict, metrics: list[dict], monitor: list[dict]) -> dict:
    """One run: did it collapse, where, and when did the first alarm fire."""
    steps_per_epoch = math.ceil(config["dataset"]["n_train"] / config["config"]["batch_size"])
    from training.monitor import recorded_checks, replay_alarms

    co = collapse_epoch(metrics)
    checks = recorded_checks(monitor)
    alarms = [{**c, "alarm": reason} for c, reason in zip(checks, replay_alarms(checks)) if reason]  # the rule as it is now
    first = alarms[0] if alarms else None
    return {
        "co_epoch": co,
        "final_pgd": metrics[-1]["test_pgd_acc"],
        "final_clean": metrics[-1]["test_clean_acc"],
        "best_pgd": max(r["test_pgd_acc"] for r in metrics),
        "first_alarm_step": first["step"] if first else None,
        "first_alarm_kind": ("energy spike" if "energy" in first["alarm"] else "PGD collapse") if first else None,
        "lead_steps": ((co + 1) * steps_per_epoch - first["step"]) if (first and co is not None) else None,
        "max_aae_rate": max((c["aae_rate"] for c in checks), default=None),
    }


def summarise(results: Path) -> dict:
    groups: dict[tuple, list] = {}
    for seed, method, eps, augment, der in itertools.product(SEEDS, METHODS, EPS, AUGMENTS, (False, True)):
        found = read_cell(results, cell_name(seed, method, eps, augment, der))
        if found:
            groups.setdefault((method, eps, augment, der), []).append({"seed": seed, **run_summary(*found)})
    rows = []
    for (method, eps, augment, der), runs in sorted(groups.items()):
        collapsed = [r for r in runs if r["co_epoch"] is not None]
        weak = [r for r in runs if r["co_epoch"] is None and r["best_pgd"] < COLLAPSE_FLOOR]  # never robust: CO cannot be told apart
        healthy = [r for r in runs if r["co_epoch"] is None and r["best_pgd"] >= COLLAPSE_FLOOR]
        leads = [r["lead_steps"] for r in collapsed if r["lead_steps"] is not None]
        rows.append({
            "method": method, "eps": f"{eps}/255", "augment": augment, "DER": "yes" if der else "no", "seeds": len(runs),
            "CO rate": f"{len(collapsed)}/{len(runs)}",
            "final PGD-10": statistics.mean(r["final_pgd"] for r in runs),
            "final clean": statistics.mean(r["final_clean"] for r in runs),
            "best PGD-10": statistics.mean(r["best_pgd"] for r in runs),
            "alarmed CO runs": f"{sum(r['first_alarm_step'] is not None for r in collapsed)}/{len(collapsed)}",
            "lead steps (mean)": statistics.mean(leads) if leads else None,
            "never robust": f"{len(weak)}/{len(runs)}",
            "false alarms": f"{sum(r['first_alarm_step'] is not None for r in healthy)}/{len(healthy)}",
            "runs": runs,
        })
    return {"rows": rows}


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["method"], r["eps"], r["augment"]) for r in summary["rows"]})
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    for offset, der, color in ((-0.2, "no", "C3"), (0.2, "yes", "C0")):
        rows = {(r["method"], r["eps"], r["augment"]): r for r in summary["rows"] if r["DER"] == der}
        xs = [i + offset for i, s in enumerate(settings) if s in rows]
        rates = [_rate(rows[s]["CO rate"]) for s in settings if s in rows]
        pgd = [rows[s]["final PGD-10"] for s in settings if s in rows]
        axes[0].bar(xs, rates, width=0.4, color=color, label=f"DER {der}")
        axes[1].bar(xs, pgd, width=0.4, color=color, label=f"DER {der}")
    for ax, title in zip(axes, ("CO rate over seeds", "final test PGD-10 accuracy (mean over seeds)")):
        ax.set_xticks(range(len(settings)), [f"{m}\n{e} {a}" for m, e, a in settings], fontsize=7, rotation=30, ha="right")
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
        ax.legend()
    axes[0].set_ylim(0, 1.05)
    fig.suptitle("CIFAR-10 subset, PreActResNet-18 w16, 15 epochs: catastrophic overfitting without and with DER")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _rate(text: str) -> float:
    a, b = text.split("/")
    return int(a) / max(int(b), 1)


def main() -> None:
    args = grid_arguments(__doc__, work="co-map").parse_args()
    grid = cells(args.data)
    if list_or_train(grid, args):
        return
    results = Path(args.results)
    summary = summarise(results)
    if not summary["rows"]:
        return
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    columns = ["method", "eps", "augment", "DER", "seeds", "CO rate", "never robust", "final PGD-10", "final clean", "best PGD-10",
               "alarmed CO runs", "lead steps (mean)", "false alarms"]
    (results / "summary.md").write_text(markdown_table(summary["rows"], columns) + "\n")
    plot(summary, results / "co-map.png")
    print(markdown_table(summary["rows"], columns))


if __name__ == "__main__":
    main()
