"""`robustgen demo`: thin shell over robustgen.app.demo."""

from __future__ import annotations

import time

import click

from robustgen.cli.common import echo_json, format_table, user_errors
from samplers.config import RunOptions

_RUN = RunOptions()


@click.command()
@click.option("--out", default="runs/demo", show_default=True, help="Demo run dir.")
@click.option("--num-images", "-n", "n", type=click.IntRange(min=1), default=None, help=f"Images per sampler, balanced over the 10 classes.  [default: {_RUN.n}]")
@click.option("--samples-per-class", type=click.IntRange(min=1), default=None, hidden=True, help="Deprecated: --num-images 10 x this.")
@click.option("--robust-epochs", type=click.IntRange(min=1), default=None, help="Epochs of the robust model [default: the digits training default].")
@click.option("--reference-epochs", default=15, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", type=int, default=None, help=f"[default: {_RUN.seed}]")
@click.option("--device", default=None, help=f"[default: {_RUN.device}]")
@click.option("--resume", is_flag=True, help="Continue an interrupted demo in --out (finished stages are kept).")
@click.option("--overwrite", is_flag=True, help="Delete the demo in --out and start again (refused for dirs that hold no demo).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def demo(out, n, samples_per_class, robust_epochs, reference_epochs, seed, device, resume, overwrite, as_json):
    """Train a DER-robust model on digits, sample every class, score, and write report.html.

    \b
    Takes about a minute on a 2-core laptop CPU. Produces, under --out:
      robust/ reference/                  training runs (metrics.jsonl, best.pt, plots)
      samples/default/                    the default sampler (grid.png, strips.png, samples.npz, score.json)
      samples/init-only-*/ santurkar/     its controls: the start alone, the Santurkar et al. 2019 baseline
      samples/real-test/ real-train/      real images, scored the same way
      report.html                         open it in a browser
    """
    from robustgen.app.demo import DemoConfig, run_demo

    if samples_per_class is not None and n is None:
        n = 10 * samples_per_class  # digits: 10 classes
    run = RunOptions(**{k: v for k, v in {"n": n, "seed": seed, "device": device}.items() if v is not None})
    config = DemoConfig(out=out, robust_epochs=robust_epochs, reference_epochs=reference_epochs, run=run)
    start = time.perf_counter()
    summary = run_demo(config, resume=resume, overwrite=overwrite, log=lambda m: click.echo(m, err=True))
    if as_json:
        echo_json(summary)
        return
    click.echo(format_table([{"": k, "value": v} for k, v in summary["headline"]], ["", "value"]))
    click.echo(f"({summary['extractor']})")
    click.echo(f"Demo finished in {time.perf_counter() - start:.0f} s. Report: {summary['report']}")
