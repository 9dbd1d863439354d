"""Pieces every CLI command shares: error handling, eps parsing, JSON output (tables: robustgen.tables)."""

from __future__ import annotations

import functools
import json
import sys

import click

from robustgen.errors import RobustgenError
from robustgen.io import parse_eps
from robustgen.tables import format_table  # noqa: F401  (re-exported: commands import it from here)


def user_errors(func):
    """Turn a RobustgenError into one line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except RobustgenError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted: finished files are kept; rerun with --resume to continue.", err=True)
            sys.exit(130)

    return wrapper


class EpsType(click.ParamType):
    """Accepts 0.031 or 8/255; returns a float in pixel space."""

    name = "EPS"

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        try:
            return parse_eps(value)
        except RobustgenError as exc:
            self.fail(str(exc), param, ctx)


EPS = EpsType()


def echo_json(obj) -> None:
    click.echo(json.dumps(obj, indent=2, sort_keys=True, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
