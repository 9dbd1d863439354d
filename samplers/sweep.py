"""One sampling knob over a list of values: the quality-diversity frontier of a model.

    rows = sweep("runs/x/best.pt", knob="quantile", values=["0.05", "0.1", "0.2", "0.5"], out="runs/sweep-quantile",
                 features="runs/ref/best.pt", judge="runs/ref/best.pt")

Each value is a sample run dir (`<out>/<knob>=<value>/`), scored like every row
of `samplers.compare` (with the init-only, Santurkar and real-data controls
unless `controls=False`), so an interrupted sweep resumes where it stopped.
Writes sweep.json, sweep.md and frontier.png (precision vs recall, FID vs
near-copy fraction, gradient evaluations per image) into `out`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import finite
from robustgen.kernel.io import atomic_path, atomic_write_json, atomic_write_text
from samplers.compare import Configs, Row, compare, markdown
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.from_checkpoint import ModelSource

# knob name -> (which of the three configs, its field); the kinds go by their CLI names
_ALIASES = {"init": (0, "kind"), "sampler": (1, "kind"), "stop": (2, "rule")}
KNOBS: dict[str, tuple[int, str]] = {
    **{f.name: (i, f.name) for i, cls in enumerate((InitConfig, SamplerConfig, StopConfig)) for f in dataclasses.fields(cls) if f.name not in ("kind", "rule")},
    **_ALIASES,
}


def knob_configs(base: Configs, knob: str, values: Sequence[str]) -> dict[str, Configs]:
    """{"<knob>=<value>": configs with that value}, each validated before anything runs."""
    if knob not in KNOBS:
        raise RobustgenError(f"unknown knob {knob!r}: choose one of {', '.join(sorted(KNOBS))}")
    if not values:
        raise RobustgenError("--values is empty: give a comma-separated list such as 0.05,0.1,0.2")
    which, name = KNOBS[knob]
    out = {}
    for text in values:
        configs = list(base)
        change = InitConfig.parse_kind(text.strip()) if knob == "init" else {name: _parse(text, configs[which], name, knob)}
        configs[which] = dataclasses.replace(configs[which], **change)
        configs[which].validate()
        out[f"{knob}={text}"] = tuple(configs)
    return out


def _parse(text: str, config, name: str, knob: str) -> Any:
    """A knob value typed as the config field says ("none" for an optional field)."""
    annotation = next(f.type for f in dataclasses.fields(config) if f.name == name)
    if text.strip().lower() == "none":
        if "None" not in annotation:
            raise RobustgenError(f"--knob {knob} cannot be none: give a value")
        return None
    kind = str if annotation.startswith("str") else int if annotation.startswith("int") else float
    if kind is float:
        return finite(text.strip(), name=f"--values: {knob}")
    try:
        return kind(text.strip())
    except ValueError:
        raise RobustgenError(f"--values: {text!r} is not a valid {kind.__name__} for --knob {knob}") from None


def sweep(
    checkpoint: str | Path, *, knob: str, values: Sequence[str], out: str | Path, features: str | Path, judge: str | Path | None,
    base: tuple = (None, None, None), run: RunOptions | None = None, source: ModelSource = ModelSource(), classes=None, controls: bool = True,
    calibration: bool = True, log: Callable[[str], None] = print,
) -> list[Row]:
    """Sample and score every value of `knob` (plus controls); write sweep.json, sweep.md, frontier.png.

    base: the (init, sampler, stop) every value changes; a None is the model's calibrated config (if any and
    `calibration`), else the dataclass default."""
    run = run if run is not None else RunOptions()
    base = _resolved_base(checkpoint, base, calibration=calibration, source=source, log=log)
    configs = knob_configs(base, knob, values)  # all values checked before the first run
    out = Path(out)
    rows = compare(checkpoint, configs, out=out, features=features, judge=judge, run=run, source=source, classes=classes, controls=controls, log=log)
    atomic_write_json(out / "sweep.json", {"knob": knob, "values": list(values), "checkpoint": str(checkpoint), "features": str(features),
                                           "judge": str(judge) if judge else None, "n": run.n, "seed": run.seed, "rows": [r.to_dict() for r in rows]})
    atomic_write_text(out / "sweep.md", markdown(rows) + "\n")
    plot_frontier(rows, out / "frontier.png", title=f"{Path(str(checkpoint)).parent.name}: sweep of {knob} (n={run.n}, seed {run.seed})")
    return rows


def _resolved_base(checkpoint, base: tuple, *, calibration: bool, source: ModelSource, log) -> Configs:
    """`base` with its None configs filled from the model's calibration (loading the model once) or the defaults."""
    if all(c is not None for c in base):
        return base
    if not calibration:
        return tuple(c if c is not None else d for c, d in zip(base, (InitConfig(), SamplerConfig(), StopConfig())))
    from robustgen.kernel.models.sources import load_classifier
    from samplers.from_checkpoint import chain_configs

    model, _ = load_classifier(checkpoint, device="cpu", **source.loader())
    return chain_configs(model, checkpoint, base, calibration=True, log=log)


_STYLE = {"sampler": ("o-", "C0"), "init-only": ("s", "C7"), "baseline": ("^", "C3"), "real": ("*", "C2")}


def plot_frontier(rows: list[Row], path: Path, *, title: str = "") -> Path:
    """Three panels: precision vs recall (test split), FID (test) vs near-copy fraction, gradient evaluations per image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    panels = (("recall_test", "precision_test", "recall (test split)", "precision (test split)"),
              ("near_copy_fraction_pixel", "fid_test", "near-copy fraction (pixels)", "FID vs test split"))
    for ax, (xk, yk, xl, yl) in zip(axes, panels):
        for kind, (marker, color) in _STYLE.items():
            pts = [(r.metrics.get(xk), r.metrics.get(yk), r.name) for r in rows if r.kind == kind]
            pts = [p for p in pts if p[0] is not None and p[1] is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, color=color, label=kind, ms=7)
                for x, y, name in pts:
                    ax.annotate(name.split("=", 1)[-1] if kind == "sampler" else name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set(xlabel=xl, ylabel=yl)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].axvline(0.02, color="C3", ls=":", lw=1)  # 2x the real-data near-copy rate
    ax = axes[2]
    ax.barh([r.name for r in rows], [r.metrics.get("grad_evals_per_image") or 0 for r in rows], color=[_STYLE[r.kind][1] for r in rows])
    ax.set(xlabel="gradient evaluations per image")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
