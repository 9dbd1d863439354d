"""`robustgen diagnose`: a training run's energy diagnostics (thin shell over training.diagnostics)."""

from __future__ import annotations

import click

from robustgen.cli.common import echo_json, user_errors
from robustgen.kernel.errors import RobustgenError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir")
@click.option("--checkpoint", type=click.Choice(["best", "last"]), default="best", show_default=True, help="Whose batch goes into the quiver plot.")
@click.option("--num-images", "-n", "--n", "n", type=int, default=64, show_default=True, help="Test images in the quiver plot.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def diagnose(run_dir, checkpoint, n, device, as_json):
    """Plot a run's energy diagnostics: RUN_DIR/curves.png (PGD error, delta energies, AAEs per epoch)
    and RUN_DIR/quiver.png ((E(x), E(x,y)) -> (E(x*), E(x*,y)) for a test batch)."""
    from training.diagnostics import diagnose_run

    if n < 1:
        raise RobustgenError(f"--num-images {n}: the quiver plot needs at least 1 image")
    result = diagnose_run(run_dir, checkpoint=checkpoint, n=n, device=device)
    if as_json:
        echo_json(result)
        return
    click.echo(f"wrote {result['curves']} and {result['quiver']}")
    click.echo(f"{result['epochs']} epochs, {len(result['co_alarms'])} CO alarms; quiver batch: {result['aae_in_batch']} AAEs, "
               f"mean dE(x) {result['mean_de_x']:+.3f}, mean dE(x,y) {result['mean_de_xy']:+.3f}")
    for epoch, reason in result["co_alarms"]:
        click.echo(f"  CO alarm at epoch {epoch + 1}: {reason}")
