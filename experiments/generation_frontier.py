"""The frontier of training recipes: robust accuracy against generative strength (issue 17).

    python experiments/generation_frontier.py --data npz:../shared/data/cifar10-subset.npz \\
        --judge python:tests/fixtures/third_party_cifar.py:resnet20=../shared/models/akamaster_cifar10_resnet20-12fca82f.th \\
        --judge-mean 0.485,0.456,0.406 --judge-std 0.229,0.224,0.225 --runs runs/frontier --out experiments/results/generation-frontier

Each recipe is a `robustgen train` command (trained here unless its run dir already finished).
For its best.pt: robust accuracy under two common threat models (PGD-20 at L2 0.5 and at
L-inf 8/255, on every test image) and generative strength (samplers.strength: classifier-only
Santurkar samples judged by an independent standard classifier: accuracy, FID, recall against
the test split). Writes frontier.md / frontier.json and frontier.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

RECIPES = {  # name -> robustgen train options (the dataset and --out are added)
    "linf-fgsm-der-8/255 (README)": "--method fgsm --eps 8/255 --width 16 --epochs 15 --der",
    "l2-pgd5-0.25": "--method pgd --norm L2 --eps 0.25 --steps 5 --width 16 --epochs 15",
    "linf-pgd5-2/255": "--method pgd --norm Linf --eps 2/255 --steps 5 --width 16 --epochs 15",
    "l2-pgd5-0.5": "--method pgd --norm L2 --eps 0.5 --steps 5 --width 16 --epochs 15",
    "l2-pgd5-1.0": "--method pgd --norm L2 --eps 1.0 --steps 5 --width 16 --epochs 15",
    "l2-pgd5-0.5-der": "--method pgd --norm L2 --eps 0.5 --steps 5 --width 16 --epochs 15 --der",
    "l2-trades5-0.5": "--method trades --norm L2 --eps 0.5 --steps 5 --width 16 --epochs 15",
    "l2-fgsm-rs-der-1.0": "--method fgsm-rs --norm L2 --eps 1.0 --width 16 --epochs 15 --der",
    "l2-pgd3-1.0-e10": "--method pgd --norm L2 --eps 1.0 --steps 3 --width 16 --epochs 10",
    "l2-pgd5-0.5-w32": "--method pgd --norm L2 --eps 0.5 --steps 5 --width 32 --epochs 15",
    "l2-pgd5-0.5-e30": "--method pgd --norm L2 --eps 0.5 --steps 5 --width 16 --epochs 30",
}
THREATS = (("L2", 0.5), ("Linf", 8 / 255))
SHARED = Path(__file__).resolve().parents[2] / "shared"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "third_party_cifar.py"
THIRD_PARTY = {  # name -> (spec, mean, std): published adversarially trained nets (../shared/models/README), measured alike
    "abcrown-resnet4b (third-party)": (f"python:{FIXTURES}:resnet4b={SHARED / 'models' / 'abcrown_cifar10_resnet4b.pth'}",
                                       "0.4914,0.4822,0.4465", "0.2471,0.2435,0.2616"),
    "eran-conv-small-pgd (third-party)": (f"python:{FIXTURES}:conv_small={SHARED / 'models' / 'abcrown_eran_cifar_conv_small_pgd.pth'}",
                                          "0.4914,0.4822,0.4465", "0.2023,0.1994,0.2010"),
    "sdp-cnn-a-adv (third-party)": (f"python:{FIXTURES}:cnn_a={SHARED / 'models' / 'abcrown_sdp_cifar_cnn_a_adv.model'}",
                                    f"{125.3/255:.4f},{123.0/255:.4f},{113.9/255:.4f}", f"{63.0/255:.4f},{62.1/255:.4f},{66.7/255:.4f}"),
}


def run_dir(runs: Path, name: str) -> Path:
    return runs / name.split(" ")[0].replace("/", "_")


def ensure_trained(name: str, options: str, *, data: str, runs: Path, train: bool) -> Path | None:
    """best.pt of the recipe: trained now (or resumed) if `train`, else None when absent."""
    from training.rundir import is_finished

    out = run_dir(runs, name)
    if is_finished(out) and (out / "best.pt").is_file():
        return out / "best.pt"
    if not train:
        return None
    command = [sys.executable, "-m", "robustgen", "train", data, *shlex.split(options), "--out", str(out)]
    if (out / "config.json").is_file():
        command = [sys.executable, "-m", "robustgen", "train", "--resume", str(out)]
    print("training:", " ".join(command), flush=True)
    t0 = time.perf_counter()
    subprocess.run(command, check=True)
    (out / "wall_seconds.txt").write_text(f"{time.perf_counter() - t0:.0f}\n")
    return out / "best.pt"


def epochs_done(out: Path, options: str) -> str:
    """'finished/planned' epochs of a recipe's run (training.rundir reads the run)."""
    from training.rundir import read_training_run

    parts = shlex.split(options)
    return f"{len(read_training_run(out).metrics)}/{parts[parts.index('--epochs') + 1]}"


def measure(name: str, options: str, spec: str, *, cache: Path, args, mean: str | None = None, std: str | None = None) -> dict:
    """Robust accuracy under THREATS (PGD-20, a seeded test subset) and generative strength, cached in `cache`."""
    from robustgen.kernel.models.sources import ModelSpec, load_classifier
    from samplers.from_checkpoint import load_checkpoint_dataset
    from samplers.config import RunOptions
    from samplers.from_checkpoint import ModelSource
    from samplers.strength import generative_strength
    from training import evaluate_robustness

    if cache.is_file():
        return json.loads(cache.read_text())
    model, meta = load_classifier(spec, device="cpu", mean=mean, std=std, data=args.data)
    data = load_checkpoint_dataset(meta, dataset=args.data)
    row = {"recipe": name, "options": options, "best_epoch": meta.get("epoch")}
    for norm, eps in THREATS:
        result = evaluate_robustness(model, data, eps=eps, norm=norm, steps=20, restarts=1, step_size=None, subset=args.subset, batch_size=256, seed=0,
                                     progress=False)
        row["clean_acc"], row[f"pgd20_{norm}"] = result["clean_acc"], result["robust_acc"]
    judge = ModelSpec(args.judge, mean=args.judge_mean, std=args.judge_std)
    strength = generative_strength(spec, judge=judge, run=RunOptions(n=args.n, device="cpu"), source=ModelSource(dataset=args.data, mean=mean, std=std))
    row.update({f"santurkar_{k}": strength[k] for k in ("judge_accuracy", "fid_test", "precision_test", "recall_test")})
    wall = cache.parent / "wall_seconds.txt"
    row["train_minutes"] = round(float(wall.read_text()) / 60, 1) if wall.is_file() else None
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(row, indent=2) + "\n")
    return row


def write_outputs(rows: list[dict], out: Path, *, judge: str, n: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    columns = [("recipe", "{}"), ("n", "{}"), ("epochs_done", "{}"), ("clean_acc", "{:.3f}"), ("pgd20_L2", "{:.3f}"), ("pgd20_Linf", "{:.3f}"), ("santurkar_judge_accuracy", "{:.3f}"),
               ("santurkar_fid_test", "{:.2f}"), ("santurkar_recall_test", "{:.3f}"), ("train_minutes", "{}")]
    titles = ["recipe", "classifier-only samples", "epochs trained", "clean", "PGD-20 L2 0.5", "PGD-20 Linf 8/255", "classifier-only judge acc", "classifier-only FID (test)",
              "classifier-only recall (test)", "train minutes"]
    lines = ["| " + " | ".join(titles) + " |", "|" + "---|" * len(titles)]
    for row in rows:
        lines.append("| " + " | ".join(fmt.format(row[k]) if row.get(k) is not None else "-" for k, fmt in columns) + " |")
    note = (f"\nJudge and feature extractor: {judge}; classifier-only samples per recipe as listed (n; rows without n: 200, measured in an earlier round); FID/recall against the test split; "
            "robust accuracy: PGD-20, one restart, on a seeded subset of the test split.\n")
    (out / "frontier.md").write_text("\n".join(lines) + "\n" + note)
    (out / "frontier.json").write_text(json.dumps(rows, indent=2) + "\n")
    plot(rows, out / "frontier.png")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.8))
    for ax, key, title in ((axes[0], "pgd20_L2", "robust accuracy, PGD-20 L2 eps 0.5"), (axes[1], "pgd20_Linf", "robust accuracy, PGD-20 Linf 8/255")):
        for row in rows:
            third_party, elsewhere = "third-party" in row["recipe"], row.get("options") == "trained elsewhere"
            done, total = (row.get("epochs_done") or "0/0").split("/") if not third_party else ("1", "1")
            partial = int(done) < int(total)
            label = (row["recipe"] if elsewhere else row["recipe"].split(" ")[0]) + (f" ({done}/{total} epochs)" if partial else "")
            ax.scatter(row[key], row["santurkar_judge_accuracy"], s=50, marker="s" if third_party else "^" if elsewhere else "o",
                       facecolors="none" if partial else None, edgecolors="C0" if partial else None, color=None if partial else ("C2" if third_party else "C0"))
            ax.annotate(label, (row[key], row["santurkar_judge_accuracy"]), fontsize=7, xytext=(4, 3), textcoords="offset points")
        ax.set_xlabel(title)
        ax.set_ylabel("judge accuracy on classifier-only samples")
        ax.axhline(0.1, color="grey", lw=0.8, ls=":")
        ax.grid(alpha=0.3)
    fig.suptitle("Robustness against generative strength, CIFAR-10 subset\n(circles: robustgen recipes, hollow = unfinished; "
                 "triangles: fine-tuned (DAT) or trained elsewhere; squares: published nets; dotted: chance)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--judge", required=True)
    p.add_argument("--judge-mean", default=None)
    p.add_argument("--judge-std", default=None)
    p.add_argument("--runs", default="runs/frontier")
    p.add_argument("--out", default="experiments/results/generation-frontier")
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma list of recipe names (default: all)")
    p.add_argument("--n", type=int, default=500, help="classifier-only samples per recipe")
    p.add_argument("--subset", type=int, default=500, help="test images attacked per threat (seeded)")
    p.add_argument("--no-train", action="store_true", help="only measure recipes whose runs finished")
    p.add_argument("--partial", action="store_true", help="also measure unfinished runs (their epochs are in the table)")
    p.add_argument("--third-party", action="store_true", help="also measure the published nets in ../shared/models")
    p.add_argument("--include", default=None, help="an earlier frontier.json: its rows (recipes not measured now) join the table as they were")
    p.add_argument("--models", default="", help="name=PATH/best.pt,...: models trained elsewhere (e.g. generative fine-tuning), measured alike")
    args = p.parse_args()
    rows = []
    for name in args.recipes.split(","):
        best = ensure_trained(name, RECIPES[name], data=args.data, runs=Path(args.runs), train=not args.no_train)
        partial = run_dir(Path(args.runs), name) / "best.pt"
        if best is None and args.partial and partial.is_file():
            best = partial
        if best is not None:
            rows.append(measure(name, RECIPES[name], str(best), cache=best.parent / f"frontier-{args.n}-{args.subset}.json", args=args))
            rows[-1]["epochs_done"] = epochs_done(best.parent, RECIPES[name])
            print(json.dumps(rows[-1]), flush=True)
    for item in filter(None, args.models.split(",")):
        name, best = item.split("=", 1)
        rows.append(measure(name, "trained elsewhere", best, cache=Path(best).parent / f"frontier-{args.n}-{args.subset}.json", args=args))
        print(json.dumps(rows[-1]), flush=True)
    for name, (spec, mean, std) in (THIRD_PARTY.items() if args.third_party else ()):
        cache = Path(args.runs) / "third-party" / f"{name.split(' ')[0]}-{args.n}-{args.subset}.json"
        rows.append(measure(name, "published weights", spec, cache=cache, args=args, mean=mean, std=std))
        print(json.dumps(rows[-1]), flush=True)
    for row in rows:
        row.setdefault("n", args.n)
    if args.include:
        measured = {row["recipe"] for row in rows}
        rows += [row for row in json.loads(Path(args.include).read_text()) if row["recipe"] not in measured]
    write_outputs(rows, Path(args.out), judge=Path(args.judge.split("=")[-1]).name, n=args.n)


if __name__ == "__main__":
    main()
