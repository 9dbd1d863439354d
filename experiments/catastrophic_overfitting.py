"""Catastrophic overfitting (CO) of single-step AT, without and with DER, on the real CIFAR-10 subset.

Two runs with the same seed, data and budget: `--method fgsm` (zero init) without DER,
then the same with `--der`. For each run the script finds the epoch where test PGD
accuracy collapses (training.collapse.collapse_epoch, the rule the CO alarms use) and prints delta energies and AAE counts around it. Outputs (small files only)
go to experiments/results/co-<tag>/{plain,der}/: metrics.jsonl, config.json, curves.png,
quiver.png, plus summary.json / summary.md.

    OMP_NUM_THREADS=1 python experiments/catastrophic_overfitting.py                  # eps 8/255
    OMP_NUM_THREADS=1 python experiments/catastrophic_overfitting.py --eps 16/255     # what CO needed here

Budget on a shared 2-core CPU: ~35-60 s per epoch per run at width 16 (5,085 images).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "cifar10-subset.npz"


def around(records: list[dict], epoch: int, width: int = 2) -> list[dict]:
    keys = ("epoch", "train_adv_acc", "test_clean_acc", "test_pgd_acc", "de_x_mean", "de_xy_mean", "de_norm_mean", "de_norm_max",
            "aae_count", "aae_high_count", "co_alarm")
    return [{k: r.get(k) for k in keys} for r in records if abs(r["epoch"] - epoch) <= width]


def _arguments(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DEFAULT_DATA), help="npz with x_train y_train x_test y_test")
    p.add_argument("--eps", default="8/255")
    p.add_argument("--method", default="fgsm")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eval-subset", type=int, default=500)
    p.add_argument("--eval-pgd-steps", type=int, default=10)
    p.add_argument("--der-beta", type=float, default=None)
    p.add_argument("--der-gamma", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--precision", default="auto", help="auto (bf16 where fast, the default of robustgen train) or fp32")
    p.add_argument("--runs", default="plain,der", help="which runs: plain, der or both (comma separated)")
    p.add_argument("--work", default=str(REPO / "runs" / "co"), help="scratch run dirs (checkpoints stay here)")
    p.add_argument("--results", default=str(REPO / "experiments" / "results"))
    return p.parse_args(argv)


def _train(args, name: str, eps: float, tag: str, results_dir: Path) -> None:
    """One run (plain or der), its diagnostics, and its small files copied into results_dir/name."""
    from training import TrainConfig, train
    from training.config import DER_BETA, DER_GAMMA
    from training.diagnostics import diagnose_run

    config = TrainConfig(
        dataset=f"npz:{args.data}", method=args.method, eps=eps, der=(name == "der"),
        der_beta=args.der_beta if args.der_beta is not None else DER_BETA,
        der_gamma=args.der_gamma if args.der_gamma is not None else DER_GAMMA,
        width=args.width, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
        eval_subset=args.eval_subset, eval_pgd_steps=args.eval_pgd_steps, seed=args.seed, device="cpu", precision=args.precision,
        out=str(Path(args.work) / tag / name),
    )
    print(f"== {name}: {config.method} eps {args.eps}{' + DER' if config.der else ''}, {args.epochs} epochs, width {args.width}", flush=True)
    started = time.time()
    result = train(config, overwrite=True)
    print(f"== {name}: {time.time() - started:.0f} s", flush=True)
    diagnose_run(result.run_dir, checkpoint="last", n=64, device="cpu")
    out = results_dir / name
    out.mkdir(parents=True, exist_ok=True)
    for f in ("metrics.jsonl", "config.json", "curves.png", "quiver.png"):
        shutil.copyfile(result.run_dir / f, out / f)


PER_EPOCH = ("epoch", "train_adv_acc", "test_clean_acc", "test_pgd_acc", "de_x_mean", "de_xy_mean", "de_norm_mean", "aae_count", "aae_high_count")


def _summarise(results_dir: Path) -> dict:
    """Every run stored under results_dir (earlier invocations included), read with training.rundir."""
    from training.collapse import collapse_epoch
    from training.rundir import read_training_run

    summary = {}
    for run_dir in sorted(d for d in results_dir.iterdir() if (d / "metrics.jsonl").is_file()):
        run = read_training_run(run_dir)
        records, cfg = run.metrics, run.recorded["config"]
        summary[run_dir.name] = {
            "der": cfg["der"], "der_beta": cfg["der_beta"], "der_gamma": cfg["der_gamma"], "epochs_run": len(records),
            "wall_s": round(sum(r["time_s"] for r in records), 1), "collapse_epoch": collapse_epoch(records),
            "first_alarm_epoch": next((r["epoch"] for r in records if r.get("co_alarm")), None),
            "best_pgd_acc": max(r["test_pgd_acc"] for r in records), "final_pgd_acc": records[-1]["test_pgd_acc"],
            "final_clean_acc": records[-1]["test_clean_acc"], "final_train_adv_acc": records[-1]["train_adv_acc"],
            "max_de_norm_mean": max(r["de_norm_mean"] for r in records), "max_aae_count": max(r["aae_count"] for r in records),
            "per_epoch": [{k: r[k] for k in PER_EPOCH} | {"co_alarm": r.get("co_alarm")} for r in records],
        }
    return summary


def _markdown(args, tag: str, summary: dict) -> str:
    pivot = summary.get("plain", {}).get("collapse_epoch")  # the epochs around the plain run's collapse, for both runs
    lines = [f"# {tag}", "", f"data {args.data}, eps {args.eps}, method {args.method}, width {args.width}, {args.epochs} epochs, "
             f"lr {args.lr} cyclic, seed {args.seed}, per-epoch PGD-{args.eval_pgd_steps} on {args.eval_subset} test images", "",
             "| run (DER beta/gamma) | collapse epoch | best PGD acc | final PGD acc | final clean acc | final train adv acc | max mean ||dE|| | max AAEs/epoch | wall s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        ce = "none" if s["collapse_epoch"] is None else s["collapse_epoch"] + 1
        der = f"{s['der_beta']:g}/{s['der_gamma']:g}" if s["der"] else "off"
        lines.append(f"| {name} ({der}) | {ce} | {s['best_pgd_acc']:.3f} | {s['final_pgd_acc']:.3f} | {s['final_clean_acc']:.3f} | "
                     f"{s['final_train_adv_acc']:.3f} | {s['max_de_norm_mean']:.3g} | {s['max_aae_count']} | {s['wall_s']} |")
    lines += ["", "Per epoch (epoch is 1-based): train adv acc / test PGD acc / mean dE(x) / mean dE(x,y) / mean ||dE|| / AAEs / high-energy AAEs", "",
              "| epoch | " + " | ".join(summary) + " |", "|---|" + "---|" * len(summary)]
    for i in range(args.epochs):
        cells = [_cell(s["per_epoch"][i]) if i < len(s["per_epoch"]) else "(stopped)" for s in summary.values()]
        star = " (plain collapses)" if pivot == i else ""
        lines.append(f"| {i + 1}{star} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(r: dict) -> str:
    mark = " **CO**" if r["co_alarm"] else ""
    return (f"{r['train_adv_acc']:.2f} / {r['test_pgd_acc']:.2f} / {r['de_x_mean']:+.2f} / {r['de_xy_mean']:+.2f} / "
            f"{r['de_norm_mean']:.2f} / {r['aae_count']} / {r['aae_high_count']}{mark}")


def main(argv=None) -> int:
    from robustgen.kernel.io import atomic_write_json, atomic_write_text
    from robustgen.kernel.threat import parse_eps

    args = _arguments(argv)
    if not Path(args.data).is_file():
        print(f"Error: {args.data} not found: pass --data PATH to the CIFAR-10 subset npz", file=sys.stderr)
        return 1
    eps = parse_eps(args.eps)
    tag = f"co-{args.method}-eps{round(eps * 255)}-w{args.width}-e{args.epochs}-s{args.seed}"
    results_dir = Path(args.results) / tag
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in [n for n in args.runs.split(",") if n]:
        _train(args, name, eps, tag, results_dir)
    summary = _summarise(results_dir)
    text = _markdown(args, tag, summary)
    atomic_write_json(results_dir / "summary.json", {"args": vars(args), "runs": summary})
    atomic_write_text(results_dir / "summary.md", text)
    print(text)
    return 0

if __name__ == "__main__":
    sys.exit(main())
