"""Does bf16 change what training learns? `robustgen train digits --der` in bf16 (what --precision auto picks on this
CPU) and in fp32, seeds 0-2, each best.pt evaluated with PGD-20 (1 restart) on all 360 test images.

    OMP_NUM_THREADS=1 python experiments/precision_check.py          # ~15 min on 2 cores
"""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "experiments"))

from training_grid import markdown_table  # noqa: E402

from training.rundir import is_finished, read_training_run  # noqa: E402

SEEDS = (0, 1, 2)


def main() -> None:
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import load_dataset
    from training import TrainConfig, evaluate_robustness, train

    work, results = REPO / "runs" / "precision-check", REPO / "experiments" / "results" / "precision-check"
    results.mkdir(parents=True, exist_ok=True)
    digits = load_dataset("digits")
    rows = []
    for precision in ("bf16", "fp32"):
        for seed in SEEDS:
            run = work / f"{precision}-s{seed}"
            if not is_finished(run):
                train(TrainConfig(dataset="digits", der=True, precision=precision, seed=seed, device="cpu", out=str(run)), overwrite=True, progress=False)
            model, meta = load_checkpoint(run / "best.pt")
            result = evaluate_robustness(model, digits, eps=meta["config"]["eps"], steps=20, restarts=1)
            times = [record["train_time_s"] for record in read_training_run(run).metrics]
            rows.append({"precision": precision, "seed": seed, "clean": result["clean_acc"], "PGD-20": result["robust_acc"], "train s": sum(times)})
    summary = []
    for precision in ("bf16", "fp32"):
        mine = [r for r in rows if r["precision"] == precision]
        summary.append({"precision": precision, "seeds": len(mine), "clean": statistics.mean(r["clean"] for r in mine),
                        "PGD-20 mean": statistics.mean(r["PGD-20"] for r in mine), "PGD-20 std": statistics.stdev(r["PGD-20"] for r in mine),
                        "train s (mean)": statistics.mean(r["train s"] for r in mine)})
    text = markdown_table(rows, list(rows[0])) + "\n\n" + markdown_table(summary, list(summary[0]))
    gap = summary[0]["PGD-20 mean"] - summary[1]["PGD-20 mean"]
    text += f"\n\nbf16 - fp32 PGD-20 accuracy: {100 * gap:+.1f} points (target: within 2)\n"
    (results / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
