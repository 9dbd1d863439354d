"""`robustgen report`: self-contained HTML pages for run dirs (thin shell over robustgen.app.report)."""

from __future__ import annotations

from pathlib import Path

import click

from robustgen.app.report import build_reports
from robustgen.cli.common import user_errors


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@user_errors
def report(run_dirs):
    """(Re)build report.html for each RUN_DIR (training run, sample run, or demo dir).

    Every RUN_DIR is read and checked before any page is written: one bad dir leaves all pages as they were."""
    for page in build_reports(run_dirs):
        click.echo(f"Report: {page}")
