"""The console table for a ScoreResult: every FID says which split it was measured against."""

from __future__ import annotations

from typing import TYPE_CHECKING

from robustgen.kernel.tables import format_table

if TYPE_CHECKING:
    from samplers.scoring import ScoreResult


def _num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.2e}"
    return f"{value:.{digits}g}"


def format_result(result: "ScoreResult") -> str:
    against = ""
    if result.reference:
        cached = ", cached" if result.reference_cached else ""
        against = f" vs {result.reference} {result.reference_split} ({result.n_reference} images{cached})"
    lines = [f"Scores of {result.samples} ({result.n_samples} samples){against}", result.label, ""]
    lines.append(format_table(_metric_rows(result), ["metric", "value", "vs split", "better"]))
    if result.memorisation is not None:
        lines += ["", *_memorisation_lines(result)]
    if result.per_class:
        lines += ["", *_per_class_lines(result)]
    if result.judge:
        lines.append(f"judge: {result.judge.checkpoint} (sha256 {result.judge.sha256[:12]})")
    for title, items in (("Warnings", result.warnings), ("Notes", result.notes)):
        if items:
            lines += ["", f"{title}:"] + [f"  - {item}" for item in items]
    return "\n".join(lines)


def _metric_rows(result: "ScoreResult") -> list[dict]:
    from samplers.scoring.result import (
        KEY_CLASS_FID_MEAN, KEY_F_SCORE, KEY_FID, KEY_FID_TEST, KEY_IS_MEAN, KEY_IS_STD, KEY_JUDGE_ACCURACY, KEY_KID_MEAN, KEY_KID_STD,
        KEY_PRECISION, KEY_RECALL,
    )

    m, splits = result.metrics, result.splits

    def row(name: str, key: str, value: str, better: str) -> dict:
        return {"metric": name, "value": value, "vs split": splits.get(key, result.reference_split if key != KEY_IS_MEAN else "-") or "-", "better": better}

    rows = []
    if KEY_IS_MEAN in m:
        rows.append(row("IS", KEY_IS_MEAN, f"{_num(m[KEY_IS_MEAN])} ± {_num(m[KEY_IS_STD], 2)}", "higher"))
    if KEY_FID in m:
        rows.append(row("FID", KEY_FID, _num(m[KEY_FID]), "lower"))
    if KEY_FID_TEST in m:
        rows.append(row("FID (test split)", KEY_FID_TEST, _num(m[KEY_FID_TEST]), "lower; fair when starts use training images"))
    if KEY_CLASS_FID_MEAN in m:
        rows.append(row("mean class FID", KEY_CLASS_FID_MEAN, _num(m[KEY_CLASS_FID_MEAN]), "lower"))
    if KEY_KID_MEAN in m:
        rows.append(row(f"KID (subset {result.settings.get('kid_subset_size')})", KEY_KID_MEAN, f"{_num(m[KEY_KID_MEAN])} ± {_num(m[KEY_KID_STD], 2)}", "lower"))
    if KEY_PRECISION in m:
        rows.append(row("precision", KEY_PRECISION, _num(m[KEY_PRECISION]), "higher (quality)"))
        rows.append(row("recall", KEY_RECALL, _num(m[KEY_RECALL]), "higher (diversity)"))
        rows.append(row("F-score", KEY_F_SCORE, _num(m[KEY_F_SCORE]), "higher"))
    if KEY_JUDGE_ACCURACY in m:
        rows.append({"metric": "judge accuracy", "value": _num(m[KEY_JUDGE_ACCURACY]), "vs split": "-", "better": "higher"})
    return rows


def _memorisation_lines(result: "ScoreResult") -> list[str]:
    memo = result.memorisation
    rows = [
        {"space": name, "median NN dist (samples)": _num(s.median_sample), "median NN dist (test)": _num(s.median_test),
         "ratio": _num(s.nn_ratio, 3), "near-copies": f"{100 * s.near_copy_fraction:.1f}%",
         "C_T (cells used)": f"{_num(s.copying.statistic, 3)} ({s.copying.cells_used}/{s.copying.n_cells})"}
        for name, s in memo.spaces.items()
    ]
    columns = ["space", "median NN dist (samples)", "median NN dist (test)", "ratio", "near-copies", "C_T (cells used)"]
    lines = [
        f"Memorisation: each sample's distance to its nearest training image ({memo.n_train} in the train split), "
        f"against the same distance for the {memo.n_test} real test images",
        format_table(rows, columns),
        "  ratio 1 = as novel as real held-out images, 0 = copies; near-copies: closer than 99% of test images are (real data: 1%)",
    ]
    lines += [f"  {name}: {s.copying.reading}" for name, s in memo.spaces.items()]
    lines.append("  C_T: data-copying test of Meehan, Chaudhuri & Dasgupta (AISTATS 2020), per k-means cell of the training set")
    if memo.pairs:
        closest = ", ".join(f"#{p.sample_index}~train #{p.train_index} ({_num(p.distance, 3)})" for p in memo.pairs[:4])
        lines.append(f"  closest (sample ~ training image, pixel distance): {closest}")
    return lines


def _per_class_lines(result: "ScoreResult") -> list[str]:
    cols = ["class", "n", "n_ref", "FID"] + (["judge acc"] if result.judge else [])
    rows = [
        {"class": f"{c.class_index} {c.class_name}" if c.class_name != str(c.class_index) else c.class_name,
         "n": c.n_samples, "n_ref": "-" if c.n_reference is None else c.n_reference,
         "FID": _num(c.fid), "judge acc": _num(c.judge_accuracy)}
        for c in result.per_class
    ]
    split = result.reference_split or "train"
    return [f"Per class (class-conditional FID: samples of class k vs {split}-split images of class k):", format_table(rows, cols)]
