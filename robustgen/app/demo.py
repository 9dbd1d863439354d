"""The demo pipeline behind `robustgen demo`: the whole toolkit on the embedded digits data.

It trains a DER-robust model and a standard reference classifier, calibrates
the robust model's chain with the reference classifier as judge (on held-out
training images), samples every class with the calibrated chain, today's
default and their controls (the
init-only start, `--steps 0`; the Santurkar et al. 2019 baseline; real test
and training images), scores every row with the reference classifier as
feature extractor and judge against both splits, with memorisation and the
gain over init (samplers.compare), and writes `demo.json` and `report.html`.

    runs/demo/
      robust/                    robustgen train digits --der
      reference/                 robustgen train digits --method standard (extractor + judge)
      robust/calibration.json    robustgen calibrate robust/best.pt --judge reference/best.pt (held-out training images)
      samples/calibrated/        the calibrated chain: samples.npz, grid.png, strips.png, meta.json, score.json
      samples/default/           today's default chain
      samples/init-only-.../     the default's start without a gradient step
      samples/santurkar/         class Gaussian + PGD, 60 steps
      samples/real-test/, samples/real-train/
      samples/comparison.json    the table; demo.json, report.html

Every stage is skipped on `--resume` once its outputs exist, so an interrupted
demo continues where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

from robustgen.app.report import build_report
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import LOCK_NAME, atomic_write_json, clean_stale_temps, now_iso, run_dir_lock, versions
from samplers import InitConfig, SamplerConfig, StopConfig
from samplers.compare import compare
from samplers.config import RunOptions
from training import TrainConfig, train
from training.rundir import is_finished, read_training_run

DATASET = "digits"


@dataclass(frozen=True)
class DemoConfig:
    out: str = "runs/demo"
    robust_epochs: int | None = None  # None = `robustgen train digits --der` defaults
    reference_epochs: int = 15
    run: RunOptions = field(default_factory=RunOptions)  # images per sampler (n), seed, device, precision, ... as every sampling door


def run_demo(config: DemoConfig, *, resume: bool = False, overwrite: bool = False, log: Callable[[str], None] = print) -> dict:
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
        stage("calibrate the chain (held-out training images, judged by the reference classifier)", _calibrated(robust_dir),
              lambda: _calibrate(config, robust_dir, reference_ckpt, log=log))
        rows = []
        stage("sample and score the calibrated chain, the default sampler and their controls", False,
              lambda: rows.extend(_compare(config, out, robust_dir, reference_ckpt, log=log)))
        summary = _summary(config, out, robust_dir, rows, timings)
        atomic_write_json(out / "demo.json", summary)
        summary["report"] = str(build_report(out))
    return summary


def _demo_entries(out: Path) -> list[Path]:
    names = ["robust", "reference", "samples", "demo.json"]
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

    def train_stage(run: Path, cfg: TrainConfig):
        def work():
            if (run / "last.pt").exists():  # interrupted mid-run: continue it
                train(resume=run, progress=True)
            else:
                train(cfg, overwrite=True)

        return work

    robust_dir, reference_dir = out / "robust", out / "reference"
    robust_cfg = TrainConfig(dataset=DATASET, der=True, seed=config.run.seed, device=config.run.device, out=str(robust_dir))
    if config.robust_epochs is not None:
        robust_cfg = replace(robust_cfg, epochs=config.robust_epochs)
    reference_cfg = TrainConfig(
        dataset=DATASET, method="standard", epochs=config.reference_epochs, eval_pgd_steps=0,
        seed=config.run.seed + 1, device=config.run.device, out=str(reference_dir),
    )
    stage("train robust model (fgsm-rs + DER)", is_finished(robust_dir), train_stage(robust_dir, robust_cfg))
    stage("train reference classifier (standard)", is_finished(reference_dir), train_stage(reference_dir, reference_cfg))
    return robust_dir, reference_dir / "best.pt"


def _calibrated(robust_dir: Path) -> bool:
    """Whether the robust model's calibration.json is there and is this model's."""
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.models import model_fingerprint
    from samplers.calibrated import find_calibration

    if not (robust_dir / "calibration.json").is_file():
        return False
    model, _ = load_checkpoint(robust_dir / "best.pt")
    found = find_calibration(model_fingerprint(model), checkpoint=robust_dir / "best.pt")
    return found is not None and found[1] == robust_dir / "calibration.json"


def _calibrate(config: DemoConfig, robust_dir: Path, reference_ckpt: Path, *, log) -> None:
    from samplers.calibrated import calibrate, describe
    from samplers.calibration import CalibrationConfig

    record = calibrate(robust_dir / "best.pt", judge=reference_ckpt, config=CalibrationConfig(), run=config.run,
                       progress=False, log=lambda message: log(f"  {message}"))
    log(f"  chosen: {describe(record)} ({record['why']})")


def _compare(config: DemoConfig, out: Path, robust_dir: Path, reference_ckpt: Path, *, log) -> list:
    """The calibrated chain, the default sampler and their controls, sampled (or reused) and scored by samplers.compare."""
    from samplers.calibrated import calibrated_configs, find_calibration
    from robustgen.kernel.models.checkpoint import load_checkpoint
    from robustgen.kernel.models import model_fingerprint

    model, _ = load_checkpoint(robust_dir / "best.pt")
    found = find_calibration(model_fingerprint(model), checkpoint=robust_dir / "best.pt")
    configs = {"calibrated": calibrated_configs(found[0])} if found is not None else {}
    configs["default"] = (InitConfig(), SamplerConfig(), StopConfig())
    return compare(robust_dir / "best.pt", configs, out=out / "samples",
                   features=reference_ckpt, judge=reference_ckpt, run=config.run, log=lambda message: log(f"  {message}"))


HEADLINE = (("FID (test)", "fid_test", "{:.3g}"), ("judge acc", "judge_accuracy", "{:.3f}"), ("recall (test)", "recall_test", "{:.3f}"),
            ("near-copies", "near_copy_fraction_pixel", "{:.1%}"), ("grad evals / image", "grad_evals_per_image", "{:.1f}"))


def _summary(config: DemoConfig, out: Path, robust_dir: Path, rows: list, timings: dict[str, float]) -> dict:
    robust = read_training_run(robust_dir)
    robust_final = robust.metrics[-1] if robust.metrics else {}
    previous = _readable_json(out / "demo.json") or {}
    headline = [  # a list of pairs: JSON objects are written with sorted keys, this keeps the reading order
        ["robust model clean acc (test)", robust_final.get("test_clean_acc")],
        [f"robust model PGD-{robust_final.get('eval_pgd_steps')} acc (test, eps {_eps(robust)})", robust_final.get("test_pgd_acc")],
    ]
    for row in rows:
        values = [fmt.format(row.metrics[key]) if isinstance(row.metrics.get(key), (int, float)) else "-" for _, key, fmt in HEADLINE]
        headline.append([f"{row.name}: " + " / ".join(title for title, _, _ in HEADLINE), " / ".join(values)])
    return {
        "config": asdict(config),
        "headline": headline,
        "scores": {row.name: row.metrics for row in rows},
        "extractor": f"features and judge: the demo's reference classifier {out / 'reference' / 'best.pt'}",
        "timings_s": [[k, v] for k, v in {**dict(previous.get("timings_s", [])), **timings}.items()],  # in run order
        "note": "Scores use the demo's standard reference classifier (not Inception) as feature extractor and judge: compare rows with "
        "each other and with the real-data rows, not with papers. FID/precision/recall (test) are against the test split, which a "
        "start built from training images cannot game; near-copies: samples closer to a training image than 99% of real test images are.",
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


def _eps(run) -> str:
    eps = run.recorded["config"].get("eps")
    return f"{eps:.3g}" if isinstance(eps, (int, float)) else "?"
