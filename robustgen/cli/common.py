"""Pieces every CLI command shares: error handling, eps parsing, JSON output, tables.

Error contract (README, `robustgen --help`): every failure prints exactly one line
`Error: <problem>: <fix>` on stderr and exits 1, with no traceback; with `--json`
the same message is also printed on stdout as `{"error": "<message>"}`. Ctrl-C and
SIGTERM print one `Interrupted: ...` line and exit 130.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import math
import os
import sys

import click

from robustgen.kernel.tables import format_table  # noqa: F401  (re-exported for the commands)
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.finite import finite
from robustgen.kernel.io import dumps_json, to_jsonable, write_error
from robustgen.kernel.threat import parse_eps

INTERRUPTED = "Interrupted: finished files are kept; rerun with --resume to continue."
EXIT_ERROR, EXIT_INTERRUPTED = 1, 130


def fail(message: str, *, as_json: bool = False) -> None:
    """Print one `Error:` line on stderr (and `{"error": ...}` on stdout with --json); exit 1."""
    message = " ".join(str(message).split())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # under torchrun: say which rank failed
        message = f"rank {os.environ.get('RANK', '?')}: {message}"
    if as_json:
        click.echo(dumps_json({"error": message}, indent=None))
    click.echo(f"Error: {message}", err=True)
    _tell_torchrun(f"Error: {message}")
    sys.exit(EXIT_ERROR)


def _tell_torchrun(line: str) -> None:
    """Under torchrun, put the one line where its failure summary looks (the rank's error file), so the summary's
    `traceback :` entry reads `Error: rank N: ...` instead of a link to the elastic docs. torchrun still prints its
    own ChildFailedError traceback after it: nothing a worker does turns that off (README, "Several processes")."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    import time

    record = {"message": {"message": line, "extraInfo": {"py_callstack": line, "timestamp": str(int(time.time()))}}}
    with contextlib.suppress(OSError):
        with open(path, "w") as fh:  # torchrun's own file in its temp dir, read only after this process exits
            fh.write(dumps_json(record, indent=None))


def interrupted() -> None:
    click.echo(INTERRUPTED, err=True)
    sys.exit(EXIT_INTERRUPTED)


def os_error_message(exc: OSError) -> str | None:
    """One line for the OSErrors a user can fix (full disk, permissions); None for the rest (bugs)."""
    if exc.errno == errno.ELOOP:
        return f"{exc.filename or 'a path'}: its path runs into a loop of symbolic links: fix the link or choose another path"
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS):
        return None
    if exc.filename:
        return str(write_error(exc, exc.filename))
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on device: free space or choose another --out"
    return f"{exc.strerror}: fix the permissions or choose another --out"


def user_errors(func):
    """Turn a RobustgenError (or a full disk) into one line on stderr and exit status 1 (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        as_json = bool(kwargs.get("as_json"))
        _near_chance_warnings("forget")  # each command warns once per model (in-process callers, such as tests, run many)
        try:
            result = func(*args, **kwargs)
            _near_chance_warnings("flush")  # the command ended well: its warnings follow its output
            return result
        except RobustgenError as exc:
            _near_chance_warnings("forget")  # a refusal is one line: the warnings of a failed command are dropped
            fail(str(exc), as_json=as_json)
        except KeyboardInterrupt:
            interrupted()
        except OSError as exc:
            message = os_error_message(exc)
            if message is None:
                raise
            _near_chance_warnings("forget")
            fail(message, as_json=as_json)

    return wrapper


def _near_chance_warnings(action: str) -> None:
    """robustgen.kernel.models.sanity's pending warnings: "flush" prints them, "forget" drops them (no import if never loaded)."""
    sanity = sys.modules.get("robustgen.kernel.models.sanity")
    if sanity is not None:
        sanity.flush_warnings() if action == "flush" else sanity.forget_warnings()


def usage_error_message(exc: click.ClickException, *, command: str | None = None) -> str:
    """click's own errors as one line that ends with where to look: `...; see robustgen train --help`.

    `command` is the subcommand to point at when click does not say (some parser errors carry no context).
    """
    message = " ".join(exc.format_message().split()).rstrip(".")
    if not isinstance(exc, click.UsageError):
        return message
    names, ctx = [], getattr(exc, "ctx", None)
    while ctx is not None and ctx.parent is not None:  # the root's name depends on how it was started
        names.append(ctx.info_name)
        ctx = ctx.parent
    if not names and command:
        names = [command]
    return f"{message}; see {' '.join(['robustgen', *reversed(names)])} --help"


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While the CLI runs, SIGTERM raises KeyboardInterrupt (like Ctrl-C): atomic writes clean up, the user sees one line."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


class EpsType(click.ParamType):
    """An eps or radius in pixel units: 8/255, 0.031, 1e-3 (robustgen.kernel.threat.parse_eps).

    norm "Linf" bounds it to [0, 1]; "L2" allows radii above 1. With norm=None the
    command's own `--norm` decides if click has already read it (declare `--norm`
    with is_eager=True to make sure); otherwise any finite value >= 0 passes here
    and the API checks the bound.
    """

    name = "EPS"

    def __init__(self, norm: str | None = None):
        self.norm = norm

    def convert(self, value, param, ctx):
        norm = self.norm
        if norm is None and ctx is not None:
            norm = ctx.params.get("norm")
        option = param.opts[0] if param is not None and param.opts else "eps"
        try:
            return parse_eps(value, norm=norm if norm in ("Linf", "L2") else None, name=option)
        except RobustgenError as exc:
            self.fail(str(exc), param, ctx)


EPS = EpsType()


class FiniteFloat(click.ParamType):
    """A float option that must be a finite number: `--noise nan` or `--der-beta inf` is refused with one line.

    The check is `robustgen.kernel.finite.finite`, the same one every config runs on its fields.
    """

    name = "FLOAT"

    def convert(self, value, param, ctx):
        option = param.opts[0] if param is not None and param.opts else "value"
        try:
            return finite(value, name=option)
        except RobustgenError as exc:
            self.fail(str(exc), param, ctx)


FINITE = FiniteFloat()


def echo_json(obj) -> None:
    """Print `obj` as JSON on stdout; NaN and inf become null, so the output is valid JSON for any reader."""
    click.echo(dumps_json(_json_finite(to_jsonable(obj))))


def _json_finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_finite(v) for v in value]
    return value


STRICT_HELP = ("Refuse a torchvision:/timm:/python:/torchscript:/export: model (or --features/--judge) whose clean accuracy on "
               "200 fixed test images is below 2x chance (usually a missing --mean/--std), instead of warning.")
strict_option = click.option("--strict", is_flag=True, help=STRICT_HELP)


def check_mode(strict: bool) -> str:
    """The clean-accuracy check a command asks of its loaders (robustgen.kernel.models.sanity): warn, or refuse with --strict."""
    return "strict" if strict else "warn"


def apply_options(options):
    """A decorator that applies a tuple of click options in order (the first is the first in --help)."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate
