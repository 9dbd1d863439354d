"""`robustgen sweep`: one sampling knob over a list of values, scored, drawn as a quality-diversity frontier."""

from __future__ import annotations

from pathlib import Path

import click

from robustgen.cli.common import echo_json, user_errors
from robustgen.cli.sampling import CALIBRATION_OPTION, NUM_IMAGES, configs, knob_options, model_options, model_source, run_options


@click.command("sweep")
@model_options
@click.option("--knob", required=True, help="The option to vary: a sample option's name without dashes, e.g. quantile, scale, k, steps, drift, init.")
@click.option("--values", required=True, metavar="V1,V2,...", help="Comma-separated values of --knob (\"none\" for an optional one).")
@click.option("--features", required=True, metavar="SPEC",
              help="Feature extractor for FID/precision/recall/memorisation: an independent standard classifier (never the sampled model; any model SPEC), or inception.")
@click.option("--judge", default=None, metavar="SPEC", help="Independent classifier (any model SPEC) whose accuracy on the samples is reported [default: --features unless inception].")
@click.option("--features-mean", default=None, metavar="M1,M2,M3", help="Input normalisation mean of a --features/--judge network that does not carry its own.")
@click.option("--features-std", default=None, metavar="S1,S2,S3", help="Input normalisation std of that network.")
@click.option("--class", "classes", multiple=True, help="Class index or name (repeatable). Omitted: all classes, balanced.")
@NUM_IMAGES
@knob_options
@CALIBRATION_OPTION
@click.option("--controls/--no-controls", default=True, show_default=True, help="Also run the init-only, Santurkar and real-data controls.")
@click.option("--out", type=click.Path(file_okay=False), required=True, help="Sweep dir: one run dir per point; rerun to resume.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
@user_errors
def sweep(**options):
    """Run sampling for each value of one knob, score every point, and draw the frontier.

    \b
    Writes OUT/<knob>=<value>/ (a sample run dir each), OUT/sweep.json, OUT/sweep.md and
    OUT/frontier.png: precision vs recall, FID vs near-copy fraction, gradient evaluations per image.
    Examples:
      robustgen sweep --checkpoint runs/cifar/best.pt --features runs/ref/best.pt --knob quantile --values 0.05,0.1,0.2,0.5 --out runs/sweep-q
      robustgen sweep --checkpoint best.pt --features ref.pt --knob scale --values 1,1.5,2 --k 50 --out runs/sweep-scale
    """
    from samplers.compare import markdown
    from samplers.sweep import sweep as run_sweep

    from robustgen.cli.score import model_specs

    values = [v for v in options["values"].split(",") if v.strip()]
    model_spec = model_specs(features_mean=options["features_mean"], features_std=options["features_std"], model_dir=options["model_dir"],
                             trust_checkpoint=options["trust_checkpoint"], strict=options["strict"])
    features = options["features"] if options["features"] == "inception" else model_spec(options["features"], "--features")
    judge = model_spec(options["judge"], "--judge") if options["judge"] else (features if options["features"] != "inception" else None)
    rows = run_sweep(
        options["checkpoint"], knob=options["knob"], values=values, out=options["out"], features=features, judge=judge,
        base=configs(options), run=run_options(options), source=model_source(options), classes=list(options["classes"]) or None,
        controls=options["controls"], calibration=options["use_calibration"],
        log=lambda message: click.echo(message, err=True),
    )
    if options["as_json"]:
        echo_json([r.to_dict() for r in rows])
        return
    click.echo(markdown(rows))
    click.echo(f"\nwrote {Path(options['out']) / 'sweep.md'}, sweep.json and frontier.png")
