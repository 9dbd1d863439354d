"""AutoAttack (standard) against PGD-50-10 on the same test images: AutoAttack must come out at or below PGD.

    python experiments/autoattack_vs_pgd.py --checkpoint runs/shared/cifar-robust/best.pt --subset 1000
    python experiments/autoattack_vs_pgd.py --checkpoint ... --subset 1000 --chunks-done   # compare what AutoAttack finished

AutoAttack runs through `robustgen eval --attack autoattack` and its resumable state file (chunks of
--batch-size images). PGD-50-10 then attacks exactly the images of the finished chunks, so the two
numbers are on the same images even when AutoAttack was cut short. Writes RESULTS/autoattack-vs-pgd.json
and .md.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--subset", type=int, default=1000, help="test images (a fixed seeded subset)")
    p.add_argument("--batch-size", type=int, default=250, help="AutoAttack chunk: one resumable unit")
    p.add_argument("--state", default=str(REPO / "runs" / "aa" / "state.json"))
    p.add_argument("--chunks-done", action="store_true", help="do not attack further: compare on the chunks already finished")
    p.add_argument("--results", default=str(REPO / "experiments" / "results" / "autoattack-vs-pgd"))
    args = p.parse_args()

    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.data import load_dataset
    from training import evaluate_robustness
    from training.autoattack_accuracy import evaluate_autoattack
    from training.pgd_accuracy import evaluation_indices

    model, meta = load_checkpoint(args.checkpoint)
    dataset, eps = load_dataset(meta["dataset"]), meta["config"]["eps"]
    idx = evaluation_indices(len(dataset.y_test), args.subset, seed=0).numpy()
    if not args.chunks_done:
        evaluate_autoattack(model, dataset, eps=eps, subset=args.subset, batch_size=args.batch_size, state_path=args.state, progress=True)
    chunks = json.loads(Path(args.state).read_text())["chunks"]
    done = sorted(int(c) for c in chunks)
    rows = [i for c in done for i in range(c * args.batch_size, min((c + 1) * args.batch_size, len(idx)))]
    aa_robust = sum(sum(chunks[str(c)]["robust"]) for c in done)
    aa_clean = sum(sum(chunks[str(c)]["clean"]) for c in done)
    same_images = replace(dataset, x_test=dataset.x_test[idx[rows]], y_test=dataset.y_test[idx[rows]])
    pgd = evaluate_robustness(model, same_images, eps=eps, steps=50, restarts=10, progress=True)
    n = len(rows)
    result = {"checkpoint": args.checkpoint, "n": n, "of_subset": args.subset, "eps": eps, "clean": aa_clean / n,
              "pgd50_10": pgd["robust_acc"], "autoattack": aa_robust / n, "autoattack_at_or_below_pgd": aa_robust / n <= pgd["robust_acc"]}
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "autoattack-vs-pgd.json").write_text(json.dumps(result, indent=2) + "\n")
    table = ("| test images | clean | PGD-50-10 | AutoAttack (standard) |\n|---|---|---|---|\n"
             f"| {n} of a seeded {args.subset} | {result['clean']:.3f} | {result['pgd50_10']:.3f} | {result['autoattack']:.3f} |\n")
    (out / "autoattack-vs-pgd.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
