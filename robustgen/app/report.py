"""A self-contained HTML report for robustgen run dirs (open it straight from disk).

Works on any of:
- a training run dir (config.json + metrics.jsonl [+ diagnose PNGs]),
- a sample run dir (samples.npz + meta.json + grid.png [+ score.json
  [+ memorisation.npz: the closest (sample, nearest training image) pairs]]),
- a directory holding several of those (e.g. the demo's combined dir).

Everything is embedded (PNG as base64), so the page has no external
references. The report only reads files; it lives above `training` and
`samplers` (robustgen.app) so it reads runs with their own readers, plots and keys.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any, Sequence

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import atomic_write_text, ensure_writable_dir, now_iso, versions
from samplers.scoring import result as keys
from training.diagnostics import curves_png
from training.epoch import selection_score
from training.rundir import read_training_run

REPORT_NAME = "report.html"


def find_runs(root: Path) -> tuple[list[Path], list[Path]]:
    """Training run dirs and sample run dirs under `root` (itself included), sorted."""
    train_dirs = sorted({p.parent for p in root.rglob("metrics.jsonl")})
    sample_dirs = sorted({p.parent for p in root.rglob("samples.npz")})
    return train_dirs, sample_dirs


def build_report(run_dir: str | os.PathLike, *, out: str | os.PathLike | None = None) -> Path:
    """Write `report.html` into `run_dir` (or `out`) and return its path."""
    target = Path(out) if out else Path(run_dir) / REPORT_NAME
    atomic_write_text(target, render_report(run_dir))
    return target


def build_reports(run_dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """`build_report` for several run dirs, all rendered (and so all checked) before the first page is written."""
    pages = [(Path(run_dir) / REPORT_NAME, render_report(run_dir)) for run_dir in run_dirs]
    for target, _ in pages:
        ensure_writable_dir(target.parent)  # a read-only B fails before A's page is written
    for target, page in pages:
        atomic_write_text(target, page)
    return [target for target, _ in pages]


def render_report(run_dir: str | os.PathLike) -> str:
    """The report page of `run_dir` as HTML text; reads every file it shows, writes nothing."""
    root = Path(run_dir)
    if not root.is_dir():
        raise RobustgenError(f"{root} is not a directory: pass a run dir written by robustgen train, sample or demo")
    train_dirs, sample_dirs = find_runs(root)
    if not train_dirs and not sample_dirs:
        raise RobustgenError(f"{root} holds no robustgen run (no metrics.jsonl or samples.npz): pass a train, sample or demo run dir")
    sections = [_samples_section(sample_dirs, root)] if sample_dirs else []  # the pictures first, then the numbers
    summary = _read_json(root / "demo.json")
    if summary:
        sections.append(_summary_section(summary))
    sections += [_comparison_section(path, root) for path in sorted(root.rglob("comparison.json"))]
    sections += [_training_section(d, root) for d in train_dirs]
    sections.append(_versions_section(root, train_dirs, sample_dirs))
    return _PAGE.format(title=html.escape(f"robustgen report: {root.resolve().name}"), generated=now_iso(), body="\n".join(sections))


# --------------------------------------------------------------------------- sections


def _summary_section(summary: dict) -> str:
    headline = summary.get("headline", [])
    pairs = headline.items() if isinstance(headline, dict) else headline  # a list of [name, value] keeps its order
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in pairs)
    timings = summary.get("timings_s", [])
    timing = "".join(f"<tr><th>{html.escape(k)}</th><td>{v:.1f} s</td></tr>" for k, v in (timings.items() if isinstance(timings, dict) else timings))
    return f"""<section><h2>Headline</h2><div class="cols">
<table class="kv">{rows}</table><table class="kv"><caption>Wall time</caption>{timing}</table></div>
<p class="note">{html.escape(summary.get("note", ""))}</p></section>"""


def _training_section(run_dir: Path, root: Path) -> str:
    run = read_training_run(run_dir)
    metrics = run.metrics
    title = html.escape(str(run_dir.relative_to(root)) if run_dir != root else run_dir.name)
    parts = [f"<section><h2>Training run: {title}</h2>"]
    if metrics:
        last = metrics[-1]
        alarms = [m["epoch"] + 1 for m in metrics if m.get("co_alarm")]
        config = run.config
        best = max(metrics, key=lambda m: selection_score(m, config))  # best.pt's epoch, by training's own rule
        parts.append("<div class='cols'>")
        parts.append(_kv_table({
            "epochs": len(metrics),
            "last clean acc": last["test_clean_acc"],
            f"last PGD-{last['eval_pgd_steps']} acc": last["test_pgd_acc"],
            f"best.pt: PGD-{best['eval_pgd_steps']} acc (epoch {best['epoch'] + 1})": best["test_pgd_acc"],
            "catastrophic-overfitting alarms": ", ".join(map(str, alarms)) if alarms else "none",
            **_generative_rows(metrics),
        }))
        parts.append("</div>")
        settings = {k: v for k, v in _flatten(run.recorded["config"]).items() if v not in (None, "")}
        parts.append(f"<details><summary>config.json ({len(settings)} settings)</summary>{_kv_table(settings)}</details>")
        parts.append(_img(curves_png(metrics), "training curves"))
    pngs = sorted(p for p in run_dir.glob("*.png") if p.name != "curves.png")  # the curves are drawn above, from the current metrics
    if pngs:
        parts.append("<h3>Diagnostics</h3><div class='gallery'>")
        parts += [f"<figure>{_img(p.read_bytes(), p.stem)}<figcaption>{html.escape(p.name)}</figcaption></figure>" for p in pngs]
        parts.append("</div>")
    parts.append("</section>")
    return "\n".join(parts)


def _generative_rows(metrics: list[dict]) -> dict:
    """A generative run's last real-vs-contrastive AUC, T, energies and the held-out pick of best.pt (nothing for other runs)."""
    tuned = [m for m in metrics if m.get("generative")]
    if not tuned:
        return {}
    last, best = tuned[-1], min(tuned, key=lambda m: m["heldout_frechet"])
    return {
        "generative epochs": f"{tuned[0]['epoch'] + 1}-{last['epoch'] + 1}",
        "last real-vs-contrastive AUC of s": last["gen_auc"] if last["gen_auc"] is not None else "-",
        "T (ascent steps), start -> last": f"{tuned[0]['gen_steps_start']} -> {last['gen_steps']}",
        "last mean E(x): real / contrast": f"{last['energy_real_mean']:+.3f} / {last['energy_ood_mean']:+.3f}",
        f"best.pt: held-out Frechet distance (epoch {best['epoch'] + 1}, EMA weights)": best["heldout_frechet"],
    }


def _samples_section(sample_dirs: list[Path], root: Path) -> str:
    cards, score_rows = [], []
    for run in sample_dirs:
        meta = _read_json(run / "meta.json") or {}
        score = _read_json(run / "score.json")
        name = html.escape(str(run.relative_to(root)) if run != root else run.name)
        grid = _img((run / "grid.png").read_bytes(), f"sample grid {name}", css="grid") if (run / "grid.png").exists() else ""
        strips = _img((run / "strips.png").read_bytes(), f"start, middle, final of a few chains {name}", css="strips") if (run / "strips.png").exists() else ""
        chains = f"<details><summary>start, middle and final image of a few chains</summary>{strips}</details>" if strips else ""
        cards.append(f"<figure><h3>{name}</h3>{grid}<figcaption>{html.escape(_sampler_description(meta))}</figcaption>{chains}</figure>")
        if score:
            score_rows.append((name, score))
    table = _score_table(score_rows) if score_rows else ""
    memorisation = "".join(_memorisation_block(run, root) for run in sample_dirs)
    return f"<section><h2>Samples</h2><div class='samples'>{''.join(cards)}</div>{table}{memorisation}</section>"


def _comparison_section(path: Path, root: Path) -> str:
    """A samplers.compare table (comparison.json carries its own column spec) and a sweep's frontier.png."""
    data = _read_json(path) or {}
    columns, rows = data.get("columns") or [], data.get("rows") or []
    head = "".join(f"<th>{html.escape(str(title))}</th>" for title, _, _ in columns)
    body = ""
    for row in rows:
        cells = []
        for _, key, fmt in columns:
            value = row.get(key)
            try:
                text = fmt.format(value) if value is not None else "-"
            except (ValueError, TypeError):
                text = str(value)
            cells.append(f"<td>{html.escape(text)}</td>")
        body += "<tr>" + "".join(cells) + "</tr>"
    name = html.escape(str(path.parent.relative_to(root)) if path.parent != root else path.parent.name)
    frontier = path.parent / "frontier.png"
    picture = _img(frontier.read_bytes(), "quality-diversity frontier") if frontier.exists() else ""
    note = html.escape(f"{data.get('note', '')}; extractor and judge: {data.get('features')} / {data.get('judge')}; n = {data.get('n')}, seed {data.get('seed')}")
    return f"""<section><h2>Comparison: {name}</h2><div class="table-wrap"><table class="scores"><tr>{head}</tr>{body}</table></div>
<p class="note">{note}</p>{picture}</section>"""


# Columns of the score table, in reading order; unknown numeric keys follow.
_SCORE_COLUMNS = (
    keys.KEY_FID, keys.KEY_FID_TEST, keys.KEY_IS_MEAN, keys.KEY_IS_STD, keys.KEY_KID_MEAN, keys.KEY_KID_STD, keys.KEY_PRECISION, keys.KEY_RECALL,
    keys.KEY_F_SCORE, keys.KEY_JUDGE_ACCURACY, keys.KEY_CLASS_FID_MEAN, *(key for space in keys.MEMORISATION_KEYS.values() for key in space),
)


def _score_table(rows: list[tuple[str, dict]]) -> str:
    present = {k for _, score in rows for k, v in (score.get("metrics") or score).items() if isinstance(v, (int, float))}
    keys = [k for k in _SCORE_COLUMNS if k in present] + sorted(present - set(_SCORE_COLUMNS))
    head = "".join(f"<th>{html.escape(k).replace('_', '_<wbr>')}</th>" for k in keys)  # long keys break at their underscores
    body = ""
    labels = set()
    for name, score in rows:
        values = score.get("metrics") or score
        body += f"<tr><td>{name}</td>" + "".join(f"<td>{_cell(values.get(k))}</td>" for k in keys) + "</tr>"
        extractor = score.get("extractor")
        labels.add(str(score.get("label") or (extractor.get("description") if isinstance(extractor, dict) else extractor) or "unknown extractor"))
    return f"""<h3>Scores</h3><div class="table-wrap"><table class="scores"><tr><th>samples</th>{head}</tr>{body}</table></div>
<p class="note">{html.escape("; ".join(sorted(labels)))}</p>{_splits_note(rows, keys)}"""


def _splits_note(rows: list[tuple[str, dict]], keys: list[str]) -> str:
    """Which reference split each column was measured against (from score.json's `splits`)."""
    seen: dict[str, set[str]] = {}
    for _, score in rows:
        for key, split in (score.get("splits") or {}).items():
            if key in keys:
                seen.setdefault(key, set()).add(str(split))
    if not seen:
        return ""
    parts = [f"{k}: vs {' / '.join(sorted(seen[k]))}" for k in keys if k in seen]
    return f'<p class="note">Reference split per column: {html.escape("; ".join(parts))}.</p>'


def _memorisation_block(run: Path, root: Path) -> str:
    """The memorisation numbers and the closest (sample | nearest training image) pairs of one sample run."""
    score = _read_json(run / "score.json")
    memo = score.get("memorisation") if isinstance(score, dict) else None
    if not isinstance(memo, dict) or not isinstance(memo.get("spaces"), dict):
        return ""
    name = html.escape(str(run.relative_to(root)) if run != root else run.name)
    head = "<tr><th>space</th><th>median NN dist (samples)</th><th>median NN dist (test)</th><th>ratio</th><th>near-copies</th><th>C_T (cells used)</th></tr>"
    body, readings = "", []
    for space, m in memo["spaces"].items():
        copying = m.get("copying") or {}
        near = m.get("near_copy_fraction")
        body += (f"<tr><td>{html.escape(space)}</td><td>{_cell(m.get('median_nn_distance_samples'))}</td><td>{_cell(m.get('median_nn_distance_test'))}</td>"
                 f"<td>{_cell(m.get('nn_ratio'))}</td><td>{_cell(100 * near if isinstance(near, (int, float)) else None)}%</td>"
                 f"<td>{_cell(copying.get('C_T'))} ({_cell(copying.get('cells_used'))}/{_cell(copying.get('n_cells'))})</td></tr>")
        readings.append(f"{space}: {copying.get('reading', '')}")
    strip = _pairs_strip(run / Path(str(memo.get("file", "memorisation.npz"))).name)  # a name beside score.json, nothing else
    caption = ("Closest pairs in pixel space: each sample (top) above its nearest training image (bottom), closest first."
               if strip else "The closest pairs' images are missing (memorisation.npz not found or unreadable).")
    note = (f"Each sample's distance to its nearest training image ({_cell(memo.get('n_train'))} train images) against the same distance for "
            f"{_cell(memo.get('n_test'))} real test images: ratio 1 = as novel as held-out data, 0 = copies; near-copies: closer than 99% of "
            "test images (real data: 1%). C_T: Meehan, Chaudhuri &amp; Dasgupta, AISTATS 2020 (&lt;&lt; 0 copying, &gt;&gt; 0 underfitting).")
    return (f"<h3>Memorisation: {name}</h3><div class='table-wrap'><table class='scores'>{head}{body}</table></div><p class='note'>{note}</p>"
            f"<p class='note'>{html.escape(' | '.join(readings))}</p>{strip}<p class='note'>{html.escape(caption)}</p>")


def _pairs_strip(path: Path, size: int = 64, gap: int = 4) -> str:
    """An image strip of the pairs in memorisation.npz (samples on top, nearest training images below)."""
    import numpy as np
    from PIL import Image

    from robustgen.kernel.cache import read_npz
    from robustgen.kernel.pictures import png_bytes, tile

    arrays, _ = read_npz(path, ["pair_sample_images", "pair_train_images"])
    if arrays is None:
        return ""
    top, bottom = arrays["pair_sample_images"], arrays["pair_train_images"]
    if top.ndim != 4 or top.shape != bottom.shape or top.dtype != np.uint8 or not len(top):
        return ""
    grey = top.shape[-1] == 1
    cells = np.stack([np.asarray(Image.fromarray(img[..., 0] if grey else img).resize((size, size), Image.NEAREST)) for img in (*top, *bottom)])
    picture = tile(cells[..., None] if grey else cells, per_row=len(top), pad=gap, border=False)
    return _img(png_bytes(picture[..., :1] if grey else picture), "closest (sample, nearest training image) pairs", css="pairs")


def _versions_section(root: Path, train_dirs: list[Path], sample_dirs: list[Path]) -> str:
    recorded = {}
    for d in train_dirs + sample_dirs:
        for name in ("config.json", "meta.json"):
            data = _read_json(d / name) or {}
            if isinstance(data.get("versions"), dict):
                recorded = data["versions"]
                break
        if recorded:
            break
    return f"<section><h2>Versions</h2>{_kv_table(recorded or versions())}</section>"


# --------------------------------------------------------------------------- pieces

def _sampler_description(meta: dict) -> str:
    bits = []
    for key in ("init", "sampler", "stop"):
        value = meta.get(key)
        if isinstance(value, dict):
            kind = value.get("kind") or value.get("rule") or value.get("name") or ""
            bits.append(f"{key}={kind}" if kind else f"{key}={json.dumps(value, sort_keys=True)[:80]}")
        elif value is not None:
            bits.append(f"{key}={value}")
    for key in ("n", "grad_evals_per_image", "seconds", "seed"):
        if key in meta:
            bits.append(f"{key}={_cell(meta[key])}")
    return ", ".join(bits) or "sample run"


def _img(png: bytes, alt: str, css: str = "") -> str:
    data = base64.b64encode(png).decode()
    return f'<img class="{css}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _kv_table(pairs: dict, caption: str = "", limit: int | None = None) -> str:
    items = list(pairs.items())[:limit] if limit else list(pairs.items())
    cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
    rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_cell(v)}</td></tr>" for k, v in items)
    return f'<table class="kv">{cap}{rows}</table>'


def _flatten(obj: Any, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if not isinstance(obj, dict):
        return {prefix: obj}
    out = {}
    for key, value in obj.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return html.escape(f"{value:.4g}")
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return html.escape(f"[{', '.join(map(str, value[:8]))}, … ({len(value)})]")
    return html.escape("" if value is None else str(value))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; background: #f6f7f9; color: #1d2330; }}
header {{ background: #1d2330; color: #fff; padding: 14px 28px; }}
header h1 {{ font-size: 19px; margin: 0; }} header p {{ margin: 2px 0 0; color: #aab; font-size: 12px; }}
main {{ max-width: 1180px; margin: 0 auto; padding: 10px 28px 40px; }}
section {{ background: #fff; border-radius: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.08); padding: 14px 20px; margin: 16px 0; }}
h2 {{ font-size: 16px; margin: 2px 0 10px; }} h3 {{ font-size: 14px; margin: 14px 0 6px; }}
table {{ border-collapse: collapse; font-size: 12.5px; }} caption {{ text-align: left; font-weight: 600; padding: 2px 0 4px; }}
.kv th {{ text-align: left; font-weight: 500; color: #556; padding: 2px 14px 2px 0; vertical-align: top; }}
.kv td {{ padding: 2px 0; font-family: ui-monospace, monospace; max-width: 420px; overflow-wrap: anywhere; }}
.scores th, .scores td {{ border-bottom: 1px solid #e4e6ea; padding: 4px 10px; text-align: right; }}
.scores th:first-child, .scores td:first-child {{ text-align: left; }}
.cols {{ display: flex; gap: 36px; flex-wrap: wrap; align-items: flex-start; }}
img {{ max-width: 100%; }} img.pairs {{ image-rendering: pixelated; }}
.samples {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(380px, 1fr)); gap: 24px; }}
.samples figure {{ margin: 0; min-width: 0; }} .samples h3 {{ margin-top: 0; overflow-wrap: anywhere; }}
img.grid {{ image-rendering: pixelated; width: 100%; max-width: 640px; border: 1px solid #dde; }} img.strips {{ display: block; margin-top: 6px; }}
.table-wrap {{ max-width: 100%; overflow-x: auto; }} .scores th {{ overflow-wrap: break-word; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 18px; align-items: flex-start; }} .gallery figure {{ margin: 0; min-width: 0; }}
details summary {{ cursor: pointer; color: #445; margin: 6px 0; }}
figcaption, .note {{ color: #667; font-size: 12px; }}
</style></head>
<body><header><h1>{title}</h1><p>generated {generated}</p></header><main>
{body}
</main></body></html>
"""
