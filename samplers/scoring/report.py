"""The console table for a ScoreResult."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from samplers.scoring import ScoreResult


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def format_result(result: "ScoreResult") -> str:
    from samplers.scoring import (
        KEY_CLASS_FID_MEAN, KEY_F_SCORE, KEY_FID, KEY_IS_MEAN, KEY_IS_STD, KEY_JUDGE_ACCURACY, KEY_KID_MEAN, KEY_KID_STD, KEY_PRECISION, KEY_RECALL,
    )
    from robustgen.cli.common import format_table

    m = result.metrics
    against = f" vs {result.reference} {result.reference_split} ({result.n_reference} images{', cached' if result.reference_cached else ''})" if result.reference else ""
    lines = [f"Scores of {result.samples} ({result.n_samples} samples){against}", result.label, ""]
    rows = []
    if KEY_IS_MEAN in m:
        rows.append({"metric": "IS", "value": f"{_num(m[KEY_IS_MEAN])} ± {_num(m[KEY_IS_STD], 2)}", "better": "higher"})
    if KEY_FID in m:
        rows.append({"metric": "FID", "value": _num(m[KEY_FID]), "better": "lower"})
    if KEY_CLASS_FID_MEAN in m:
        rows.append({"metric": "mean class FID", "value": _num(m[KEY_CLASS_FID_MEAN]), "better": "lower"})
    if KEY_KID_MEAN in m:
        rows.append({"metric": f"KID (subset {result.settings.get('kid_subset_size')})", "value": f"{_num(m[KEY_KID_MEAN])} ± {_num(m[KEY_KID_STD], 2)}", "better": "lower"})
    if KEY_PRECISION in m:
        rows.append({"metric": "precision", "value": _num(m[KEY_PRECISION]), "better": "higher (quality)"})
        rows.append({"metric": "recall", "value": _num(m[KEY_RECALL]), "better": "higher (diversity)"})
        rows.append({"metric": "F-score", "value": _num(m[KEY_F_SCORE]), "better": "higher"})
    if KEY_JUDGE_ACCURACY in m:
        rows.append({"metric": "judge accuracy", "value": _num(m[KEY_JUDGE_ACCURACY]), "better": "higher"})
    lines.append(format_table(rows, ["metric", "value", "better"]))
    if result.per_class:
        cols = ["class", "n", "n_ref", "FID"] + (["judge acc"] if result.judge else [])
        rows = [
            {"class": f"{c.class_index} {c.class_name}" if c.class_name != str(c.class_index) else c.class_name,
             "n": c.n_samples, "n_ref": "-" if c.n_reference is None else c.n_reference,
             "FID": _num(c.fid), "judge acc": _num(c.judge_accuracy)}
            for c in result.per_class
        ]
        lines += ["", "Per class (class-conditional FID: samples of class k vs reference images of class k):", format_table(rows, cols)]
    if result.judge:
        lines.append(f"judge: {result.judge.checkpoint} (sha256 {result.judge.sha256[:12]})")
    for title, items in (("Warnings", result.warnings), ("Notes", result.notes)):
        if items:
            lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
    return "\n".join(lines)
