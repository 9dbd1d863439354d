"""`robustgen demo` and `robustgen report`: the whole pipeline on the embedded digits data.

The demo is the one place (with the rest of the CLI) that uses all three
packages: it trains a DER-robust model and a standard reference classifier,
samples every class with the default sampler (local-pca + sgld + adaptive
stop) and with the Santurkar et al. 2019 baseline (gaussian + pgd), scores
both with the reference classifier as feature extractor and judge, and writes
`demo.json` and a self-contained `report.html`.

    runs/demo/
      robust/                    robustgen train digits --der
      reference/                 robustgen train digits --method standard (extractor + judge)
      samples-local-pca-sgld/    samples.npz, grid.png, meta.json, score.json
      samples-gaussian-pgd/
      real-test/                 the real test split, scored the same way (the best achievable)
      demo.json, report.html

Every stage is skipped on `--resume` once its outputs exist, so an interrupted
demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import click
import numpy as np

from robustgen.cli.common import echo_json, format_table, user_errors
from robustgen.errors import RobustgenError
from robustgen.io import LOCK_NAME, atomic_write_json, clean_stale_temps, now_iso, read_jsonl, run_dir_lock, versions
from robustgen.report import build_report

DATASET = "digits"


@dataclass(frozen=True)
class DemoConfig:
    out: str = "runs/demo"
    samples_per_class: int = 100  # images per class and sampler
    robust_epochs: int | None = None  # None = `robustgen train digits --der` defaults
    reference_epochs: int = 15
    seed: int = 0
    device: str = "auto"


# (name, init, sampler) the demo compares; the first is the toolkit's default.
SAMPLERS = (
    ("local-pca-sgld", "local-pca", "sgld"),
    ("gaussian-pgd", "gaussian", "pgd"),
)


def run_demo(config: DemoConfig, *, resume: bool = False, overwrite: bool = False, log=click.echo) -> dict:
    """Train, sample, score, report. Returns the demo summary (also written to demo.json)."""
    out = Path(config.out)
    _check_out(out, resume=resume, overwrite=overwrite)
    with run_dir_lock(out):  # a second demo on this --out gets one clear line
        clean_stale_temps(out)
        if overwrite:
            _empty(out)
        timings: dict[str, float] = {}

        def stage(name: str, done: bool, work):
            if done:
                log(f"[{name}] already done, skipped")
                return
            log(f"[{name}] ...")
            start = time.perf_counter()
            work()
            timings[name] = time.perf_counter() - start

        robust_dir, reference_ckpt = _train_stages(config, out, stage)
        scored = _score_stages(config, out, stage, _sample_stages(config, out, stage, robust_dir), reference_ckpt)
        summary = _summary(config, out, robust_dir, scored, timings)
        atomic_write_json(out / "demo.json", summary)
        summary["report"] = str(build_report(out))
    return summary


def _demo_entries(out: Path) -> list[Path]:
    names = ["robust", "reference", "real-test", "demo.json"] + [f"samples-{name}" for name, _, _ in SAMPLERS]
    return [out / name for name in names if (out / name).exists()]


def _check_out(out: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse contradictory flags, resuming what is not a demo, and deleting what is not a demo."""
    if resume and overwrite:
        raise RobustgenError("--resume and --overwrite contradict each other: pass --resume to continue the demo or --overwrite to start again")
    if out.exists() and not out.is_dir():
        raise RobustgenError(f"{out} is a file: choose a directory with --out")
    holds_files = out.is_dir() and any(p.name != LOCK_NAME for p in out.iterdir())
    holds_demo = bool(_demo_entries(out)) if out.is_dir() else False
    if resume and not holds_demo:
        raise RobustgenError(f"cannot resume {out}: it holds no demo: drop --resume to start one there, or give the --out of an earlier demo")
    if holds_files and not holds_demo:
        raise RobustgenError(f"{out} holds files that are not a robustgen demo: choose another --out (the demo never deletes them)")
    if holds_demo and not (resume or overwrite):
        raise RobustgenError(f"{out} already holds a demo: pass --resume to continue it, --overwrite to start again, or --out elsewhere")


def _empty(out: Path) -> None:
    """Delete what an earlier demo wrote in `out` (and only that)."""
    import shutil

    for path in _demo_entries(out) + ([out / "report.html"] if (out / "report.html").exists() else []):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _train_stages(config: DemoConfig, out: Path, stage) -> tuple[Path, Path]:
    """The robust model and the reference classifier; returns (robust run dir, reference best.pt)."""
    from training import TrainConfig, train

    def train_stage(run: Path, cfg: TrainConfig):
        def work():
            if (run / "last.pt").exists():  # interrupted mid-run: continue it
                train(resume=run, progress=True)
            else:
                train(cfg, overwrite=True)

        return work

    robust_dir, reference_dir = out / "robust", out / "reference"
    robust_cfg = TrainConfig(dataset=DATASET, der=True, seed=config.seed, device=config.device, out=str(robust_dir))
    if config.robust_epochs is not None:
        robust_cfg = replace(robust_cfg, epochs=config.robust_epochs)
    reference_cfg = TrainConfig(
        dataset=DATASET, method="standard", epochs=config.reference_epochs, eval_pgd_steps=0,
        seed=config.seed + 1, device=config.device, out=str(reference_dir),
    )
    stage("train robust model (fgsm-rs + DER)", _finished(robust_dir), train_stage(robust_dir, robust_cfg))
    stage("train reference classifier (standard)", _finished(reference_dir), train_stage(reference_dir, reference_cfg))
    return robust_dir, reference_dir / "best.pt"


def _sample_stages(config: DemoConfig, out: Path, stage, robust_dir: Path) -> list[Path]:
    """Every sampler of SAMPLERS, plus the real test split; returns the dirs to score."""
    from samplers import InitConfig, SamplerConfig, sample_from_checkpoint

    n = config.samples_per_class * 10
    for name, init, kind in SAMPLERS:
        sample_dir = out / f"samples-{name}"

        def sample_work(sample_dir=sample_dir, init=init, kind=kind):
            sample_from_checkpoint(
                robust_dir / "best.pt", n=n, init=InitConfig(kind=init), sampler=SamplerConfig(kind=kind),
                seed=config.seed, out=sample_dir, resume=sample_dir.exists(), device=config.device,
            )

        stage(f"sample {name}", (sample_dir / "samples.npz").exists(), sample_work)
    real_dir = out / "real-test"
    stage("real test images (calibration)", (real_dir / "samples.npz").exists(), lambda: _write_real_test(real_dir))
    return [out / f"samples-{name}" for name, _, _ in SAMPLERS] + [real_dir]


def _score_stages(config: DemoConfig, out: Path, stage, scored_dirs: list[Path], reference_ckpt: Path) -> dict[str, dict]:
    """Score every set with the reference classifier as extractor and judge; returns score.json of each."""
    from samplers.scoring import score

    # One KID subset size for every row, small enough for the smallest set, so rows compare.
    smallest = min(_count(d / "samples.npz") for d in scored_dirs)
    kid_subset_size = max(2, min(1000, smallest // 2))
    scored = {}
    for sample_dir in scored_dirs:
        def score_work(sample_dir=sample_dir):
            result = score(sample_dir, ref=DATASET, metrics=("is", "fid", "kid", "prc"), features=reference_ckpt,
                           judge=reference_ckpt, device=config.device, kid_subset_size=kid_subset_size)
            result.save(sample_dir / "score.json")

        stage(f"score {sample_dir.name}", _readable_json(sample_dir / "score.json") is not None, score_work)
        scored[sample_dir.name] = _readable_json(sample_dir / "score.json")
    return scored


def _summary(config: DemoConfig, out: Path, robust_dir: Path, scored: dict[str, dict], timings: dict[str, float]) -> dict:
    records = read_jsonl(robust_dir / "metrics.jsonl")
    robust_final = records[-1] if records else {}
    previous = _readable_json(out / "demo.json") or {}
    headline = [  # a list of pairs: JSON objects are written with sorted keys, this keeps the reading order
        ["robust model clean acc (test)", robust_final.get("test_clean_acc")],
        [f"robust model PGD-{robust_final.get('eval_pgd_steps')} acc (test, eps {_eps(robust_dir)})", robust_final.get("test_pgd_acc")],
    ]
    for name, result in scored.items():
        metrics = result["metrics"]
        headline.append([f"{name}: FID / IS / judge acc", " / ".join(
            f"{metrics[k]:.3g}" if isinstance(metrics.get(k), (int, float)) else "-" for k in ("fid", "is_mean", "judge_accuracy")
        )])
    return {
        "config": asdict(config),
        "headline": headline,
        "scores": {k: v["metrics"] for k, v in scored.items()},
        "extractor": next(iter(scored.values()))["label"],
        "timings_s": [[k, v] for k, v in {**dict(previous.get("timings_s", [])), **timings}.items()],  # in run order
        "note": "FID/IS/KID/precision/recall use the demo's reference classifier (not Inception) as feature extractor: "
        "compare rows with each other and with real-test, not with papers.",
        "created": now_iso(),
        "versions": versions(),
    }


def _readable_json(path: Path) -> dict | None:
    """A JSON object from `path`, or None if it is missing or unreadable (the stage then runs again)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _count(samples_npz: Path) -> int:
    with np.load(samples_npz, allow_pickle=False) as z:
        return len(z["labels"])


def _finished(run_dir: Path) -> bool:
    """A training run is finished when its last epoch is recorded and last.pt exists."""
    if not (run_dir / "last.pt").exists() or not (run_dir / "metrics.jsonl").exists():
        return False
    config = (_readable_json(run_dir / "config.json") or {}).get("config")
    if not isinstance(config, dict) or not isinstance(config.get("epochs"), int):
        return False  # unreadable: let `train --resume` say what is wrong
    return len(read_jsonl(run_dir / "metrics.jsonl")) >= config["epochs"]


def _eps(run_dir: Path) -> str:
    eps = ((_readable_json(run_dir / "config.json") or {}).get("config") or {}).get("eps")
    return f"{eps:.3g}" if isinstance(eps, (int, float)) else "?"


def _write_real_test(real_dir: Path) -> None:
    """The real test split as a sample set, scored exactly like the samples."""
    from robustgen.data import load_dataset
    from samplers.scoring.inputs import write_image_set

    data = load_dataset(DATASET)
    write_image_set(real_dir, data.x_test, data.y_test, classes=data.classes, meta={"dataset": DATASET, "split": "test", "note": "real images"})


@click.command()
@click.option("--out", default="runs/demo", show_default=True, help="Demo run dir.")
@click.option("--samples-per-class", default=100, show_default=True, type=click.IntRange(min=1), help="Images per class and sampler.")
@click.option("--robust-epochs", type=click.IntRange(min=1), default=None, help="Epochs of the robust model [default: the digits training default].")
@click.option("--reference-epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="auto", show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted demo in --out (finished stages are kept).")
@click.option("--overwrite", is_flag=True, help="Delete the demo in --out and start again (refused for dirs that hold no demo).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def demo(out, samples_per_class, robust_epochs, reference_epochs, seed, device, resume, overwrite, as_json):
    """Train a DER-robust model on digits, sample every class, score, and write report.html.

    \b
    Takes about a minute on a 2-core laptop CPU. Produces, under --out:
      robust/ reference/                  training runs (metrics.jsonl, best.pt, plots)
      samples-local-pca-sgld/             the default sampler (grid.png, samples.npz, score.json)
      samples-gaussian-pgd/               the Santurkar et al. 2019 baseline
      report.html                         open it in a browser
    """
    config = DemoConfig(out=out, samples_per_class=samples_per_class, robust_epochs=robust_epochs,
                        reference_epochs=reference_epochs, seed=seed, device=device)
    start = time.perf_counter()
    summary = run_demo(config, resume=resume, overwrite=overwrite, log=lambda m: click.echo(m, err=True))
    if as_json:
        echo_json(summary)
        return
    click.echo(format_table([{"": k, "value": v} for k, v in summary["headline"]], ["", "value"]))
    click.echo(f"({summary['extractor']})")
    click.echo(f"Demo finished in {time.perf_counter() - start:.0f} s. Report: {summary['report']}")


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@user_errors
def report(run_dirs):
    """(Re)build report.html for each RUN_DIR (training run, sample run, or demo dir)."""
    for run_dir in run_dirs:
        click.echo(f"Report: {build_report(run_dir)}")
