"""Sampler configurations side by side, always with their controls: init-only, the Santurkar baseline, real data.

    rows = compare(checkpoint, {"default": (InitConfig(), SamplerConfig(), StopConfig())},
                   out="runs/cmp", features="runs/ref/best.pt", judge="runs/ref/best.pt", run=RunOptions(n=1000))

Each configuration and each control is a sample run dir under `out` (resumable:
finished runs and scores are reused). Every row is scored once (score.json), with one
extractor, against the training split (FID comparable with papers, memorisation:
distance of every image to its nearest training image) and the test split (FID,
precision and recall that a start built from training images cannot game). Rows carry
the score keys of samplers.scoring.result, nothing renamed.
"Gain over init" = what the gradient steps changed relative to the row's own
init-only control (same initialiser, `--steps 0`).

Controls (DESIGN.md section 3): `init-only:<init>` for every initialiser used,
`santurkar` (class Gaussian + PGD, 60 fixed steps, Santurkar et al. 2019),
`real-test` (the real test images: memorisation 1.0 / 1% by definition) and
`real-train` (as many real training images as samples, scored against the test split).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.from_checkpoint import ModelSource
from samplers.scoring import result as keys

Configs = tuple[InitConfig, SamplerConfig, StopConfig]
# Santurkar et al. 2019: class-conditional Gaussian start, 60 plain normalised-gradient L2 steps, no ball, no
# preconditioning, no early stop; spelled out so that changes to the defaults never change the baseline.
SANTURKAR: Configs = (
    InitConfig(kind="gaussian"),
    SamplerConfig(kind="pgd", steps=60, step_size=None, norm="L2", eps=None, energy="joint", smooth=0.0, spectrum=0.0, jitter=0.0, flip=False),
    StopConfig(rule="fixed"),
)
GAIN_KEYS = (keys.KEY_FID_TEST, keys.KEY_JUDGE_ACCURACY, keys.KEY_PRECISION_TEST, keys.KEY_RECALL_TEST)


@dataclass
class Row:
    name: str
    kind: str  # "sampler" | "init-only" | "baseline" | "real"
    run: Path
    metrics: dict = field(default_factory=dict)
    init_only: str | None = None  # name of the row's init-only control

    def to_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "run": str(self.run), "init_only": self.init_only, **self.metrics}


def compare(
    checkpoint: str | Path, configs: dict[str, Configs], *, out: str | Path, features: str | Path, judge: str | Path | None,
    run: RunOptions | None = None, source: ModelSource = ModelSource(), classes=None, controls: bool = True,
    log: Callable[[str], None] = print, extra_features: dict[str, str | Path] | None = None,
) -> list[Row]:
    """Sample (or reuse) and score every configuration and control; returns the rows in order.

    extra_features: {name: extractor spec}: each row is also scored against the test split in these
    extractors' features (columns fid_test@name, precision_test@name, recall_test@name): realism
    seen by a second, weaker classifier catches class texture a strong judge rewards.
    """
    from robustgen.kernel.models.sanity import flush_warnings
    from samplers.from_checkpoint import sample_from_checkpoint

    check_scorers(features=features, judge=judge)  # a bad --features or --judge fails before the first image is sampled
    check_model(checkpoint, source, classes=classes)  # so does a bad --checkpoint, --mean/--std, --data or --class: no "sampling ..." first
    flush_warnings()  # every model is read: near-chance warnings now, before the first row is sampled
    for spec in (extra_features or {}).values():
        check_scorers(features=spec, judge=None)
    out, run = Path(out), run if run is not None else RunOptions()
    rows, plans = [], dict(configs)
    if controls:
        for init in dict.fromkeys(c[0] for c in configs.values()):
            plans.setdefault(init_only_name(init), (init, SamplerConfig(steps=0), StopConfig(rule="fixed")))
        plans.setdefault("santurkar", SANTURKAR)
    for name, (init, sampler, stop) in plans.items():
        row_dir = out / _safe(name)
        if not (row_dir / "samples.npz").is_file():
            log(f"sampling {name}")
            sample_from_checkpoint(checkpoint, classes=classes, init=init, sampler=sampler, stop=stop, run=run, source=source, out=row_dir,
                                   resume=row_dir.exists(), progress=False)
        kind = "init-only" if name.startswith("init-only") else ("baseline" if name == "santurkar" else "sampler")
        rows.append(Row(name, kind, row_dir, init_only=init_only_name(init) if kind == "sampler" and controls else None))
    if controls:
        rows += _real_rows(checkpoint, out, run=run, source=source)
    for row in rows:
        row.metrics = score_row(row, features=features, judge=judge, source=source, device=run.device)
        for name, spec in (extra_features or {}).items():
            row.metrics.update(score_in_features(row, name, spec, source=source, device=run.device))
        log(f"scored {row.name}")
    add_gains(rows)
    write_comparison(out, rows, features=features, judge=judge, n=run.n, seed=run.seed)
    return rows


def check_model(checkpoint, source: ModelSource, *, classes=None) -> None:
    """Read the sampled model, its data and the classes asked for the way sampling will, so a bad one fails before
    anything is sampled."""
    from robustgen.kernel.models.sources import load_classifier
    from samplers.from_checkpoint import load_checkpoint_dataset

    _, meta = load_classifier(checkpoint, device="cpu", **source.loader())
    data = load_checkpoint_dataset(meta, dataset=source.dataset, data_root=source.data_root)
    for name in classes or ():
        data.class_index(name)


def check_scorers(*, features, judge, data: str | None = None) -> None:
    """Read the feature extractor and the judge the way scoring will, so a bad one fails now, not after sampling."""
    import torch

    from samplers.scoring.extractors import load_judge, resolve_extractor

    resolve_extractor(features)
    if judge is not None:
        load_judge(judge, device=torch.device("cpu"), data=data)


def write_comparison(out: Path, rows: list[Row], *, features, judge, n: int, seed: int) -> None:
    """comparison.json (rows + the column spec, which `robustgen report` renders as is) and comparison.md."""
    from robustgen.kernel.io import atomic_write_json, atomic_write_text

    atomic_write_json(out / "comparison.json", {
        "columns": [list(c) for c in table_columns(rows)], "rows": [r.to_dict() for r in rows], "features": str(features), "judge": str(judge) if judge else None,
        "n": n, "seed": seed, "note": "FID/precision/recall '(test)' are against the test split; memorisation is against the training split",
    })
    atomic_write_text(out / "comparison.md", markdown(rows) + "\n")


def init_only_name(init: InitConfig) -> str:
    """Name of the init-only control of an initialiser (its non-default options spelled out)."""
    changed = {f.name: getattr(init, f.name) for f in dataclasses.fields(init) if f.name != "kind" and getattr(init, f.name) != getattr(InitConfig(), f.name)}
    return "init-only:" + init.kind + "".join(f",{k}={v}" for k, v in sorted(changed.items()))


def _safe(name: str) -> str:
    from robustgen.kernel.io import safe_name

    return "=".join(safe_name(part.replace(":", "-")) for part in name.split("="))  # "scale=1.5" stays readable


def _real_rows(checkpoint, out: Path, *, run: RunOptions, source: ModelSource) -> list[Row]:
    """Real test images, and n real training images (balanced), written like sample runs."""
    from robustgen.kernel.models.sources import load_classifier
    from samplers.from_checkpoint import load_checkpoint_dataset
    from samplers.sampling import balanced_labels
    from samplers.scoring.inputs import write_image_set

    rows, n, seed = [], run.n, run.seed
    for name, split in (("real-test", "test"), ("real-train", "train")):
        row_dir = out / name
        if not (row_dir / "samples.npz").is_file():
            _, meta = load_classifier(str(checkpoint), device="cpu", **source.loader())
            data = load_checkpoint_dataset(meta, dataset=source.dataset, data_root=source.data_root)
            x, y = data.split(split)
            if split == "train":  # n images, as balanced as the samples, drawn with the run's seed
                rng = np.random.default_rng(seed)
                counts = np.bincount(balanced_labels(sorted(set(y.tolist())), min(n, len(y))), minlength=data.num_classes)
                pick = np.concatenate([rng.choice(np.flatnonzero(y == c), min(k, int((y == c).sum())), replace=False) for c, k in enumerate(counts) if k])
                x, y = x[np.sort(pick)], y[np.sort(pick)]
            write_image_set(row_dir, x, y, classes=data.classes, meta={"dataset": data.name, "split": split, "note": "real images"})
        rows.append(Row(name, "real", row_dir))
    return rows


def score_row(row: Row, *, features, judge, source: ModelSource, device: str) -> dict:
    """Scores of one row, cached in score.json beside the samples: against the training split (papers' FID,
    memorisation) and, in the same call, the test split (fid_test, precision_test, recall_test)."""
    from samplers.scoring import score

    path = row.run / "score.json"
    if not path.is_file():
        memorise = row.name != "real-train"  # training images are their own nearest neighbours
        score(row.run, metrics=("is", "fid", "prc"), judge=judge, memorisation=memorise, features=features, device=device,
              data_root=source.data_root, ref=_reference(row.run, source)).save(path)
    return row_metrics(row.run)


def score_in_features(row: Row, name: str, features, *, source: ModelSource, device: str) -> dict:
    """FID / precision / recall of a row against the test split in another extractor's features (cached in score-test@name.json),
    under the score keys with "@name" appended."""
    from robustgen.kernel.io import safe_name
    from samplers.scoring import score

    if row.name == "real-test":
        return {}
    path = row.run / f"score-test@{safe_name(name)}.json"
    if not path.is_file():
        score(row.run, metrics=("fid", "prc"), ref_split="test", memorisation=False, per_class=False, features=features,
              device=device, data_root=source.data_root, ref=_reference(row.run, source)).save(path)
    test = json.loads(path.read_text())["metrics"]
    return {f"{key}@{name}": test.get(key) for key in (keys.KEY_FID_TEST, keys.KEY_PRECISION_TEST, keys.KEY_RECALL_TEST)}


def _reference(run: Path, source: ModelSource) -> str | None:
    return source.dataset or json.loads((run / "meta.json").read_text()).get("dataset")


ROW_KEYS = (keys.KEY_JUDGE_ACCURACY, keys.KEY_IS_MEAN, keys.KEY_FID, keys.KEY_FID_TEST, keys.KEY_PRECISION, keys.KEY_RECALL,
            keys.KEY_PRECISION_TEST, keys.KEY_RECALL_TEST, keys.KEY_NN_RATIO_PIXEL, keys.KEY_NEAR_COPY_FRACTION_PIXEL,
            keys.KEY_NN_RATIO_FEATURES, keys.KEY_NEAR_COPY_FRACTION_FEATURES, keys.KEY_DATA_COPYING_FEATURES)
GRAD_EVALS = "grad_evals_per_image"  # meta.json's


def row_metrics(run: Path) -> dict:
    """The numbers a comparison table shows, under their score keys: meta.json's gradient evaluations and score.json's metrics."""
    meta = json.loads((run / "meta.json").read_text())
    scored = json.loads((run / "score.json").read_text())["metrics"]
    return {GRAD_EVALS: meta.get(GRAD_EVALS, 0.0), **{key: scored.get(key) for key in ROW_KEYS}}


def add_gains(rows: list[Row]) -> None:
    """gain_<key> = row - its init-only control, for the sampler rows (and ratio_fid_test... = row / init-only for FIDs)."""
    by_name = {r.name: r for r in rows}
    for row in rows:
        base = by_name.get(row.init_only) if row.init_only else None
        for key in [k for k in row.metrics if k.startswith(keys.KEY_FID_TEST)]:
            if base is not None and row.metrics.get(key) is not None and base.metrics.get(key):
                row.metrics[f"ratio_{key}"] = row.metrics[key] / base.metrics[key]
        for key in GAIN_KEYS:
            if base is not None and row.metrics.get(key) is not None and base.metrics.get(key) is not None:
                row.metrics[f"gain_{key}"] = row.metrics[key] - base.metrics[key]


TABLE = (  # (column title, key, format): keys are samplers.scoring.result's, gains and ratios add_gains'
    ("samples", "name", "{}"), ("grad evals / image", GRAD_EVALS, "{:.1f}"), ("judge acc", keys.KEY_JUDGE_ACCURACY, "{:.3f}"),
    ("FID (train)", keys.KEY_FID, "{:.3g}"), ("FID (test)", keys.KEY_FID_TEST, "{:.3g}"), ("precision (test)", keys.KEY_PRECISION_TEST, "{:.3f}"),
    ("recall (test)", keys.KEY_RECALL_TEST, "{:.3f}"), ("NN ratio px", keys.KEY_NN_RATIO_PIXEL, "{:.2f}"),
    ("near-copies px", keys.KEY_NEAR_COPY_FRACTION_PIXEL, "{:.1%}"), ("NN ratio feat", keys.KEY_NN_RATIO_FEATURES, "{:.2f}"),
    ("near-copies feat", keys.KEY_NEAR_COPY_FRACTION_FEATURES, "{:.1%}"), ("C_T feat", keys.KEY_DATA_COPYING_FEATURES, "{:.1f}"),
    ("gain FID (test)", f"gain_{keys.KEY_FID_TEST}", "{:+.3g}"), ("gain judge", f"gain_{keys.KEY_JUDGE_ACCURACY}", "{:+.3f}"),
    ("gain recall", f"gain_{keys.KEY_RECALL_TEST}", "{:+.3f}"),
)


def table_columns(rows: list[Row]) -> tuple:
    """TABLE, plus FID ratio columns and one FID / ratio / recall group per extra feature extractor in the rows."""
    fid, recall = keys.KEY_FID_TEST, keys.KEY_RECALL_TEST
    extra = sorted({k.split("@", 1)[1] for r in rows for k in r.metrics if k.startswith(f"{fid}@")})
    columns = TABLE + (("FID (test) / init-only", f"ratio_{fid}", "{:.2f}"),)
    for name in extra:
        columns += ((f"FID (test) @{name}", f"{fid}@{name}", "{:.3g}"), (f"/ init-only @{name}", f"ratio_{fid}@{name}", "{:.2f}"),
                    (f"recall (test) @{name}", f"{recall}@{name}", "{:.3f}"))
    return columns


ROW_LABELS = {"santurkar": "classifier-only (Santurkar)"}  # the baseline measures the model's generative strength: say so in tables


def markdown(rows: list[Row], columns: tuple | None = None) -> str:
    """The comparison as a markdown table (splits named in the column titles)."""
    columns = columns or table_columns(rows)
    lines = ["| " + " | ".join(t for t, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        values = {"name": ROW_LABELS.get(row.name, row.name), **row.metrics}
        cells = [fmt.format(values[key]) if isinstance(values.get(key), (int, float, str)) and values.get(key) is not None else "-" for _, key, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
