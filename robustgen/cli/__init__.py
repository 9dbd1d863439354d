"""The `robustgen` command: a thin click shell over the Python API.

Each subcommand lives in its own module and is imported only when used, so
`robustgen --help` stays fast and one command's imports never slow another.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import importlib.util
import sys

import click

from robustgen.cli.common import fail, interrupted, sigterm_as_interrupt, usage_error_message
from robustgen.kernel.errors import RobustgenError

# command name -> (module, attribute, one-line help shown by `robustgen --help`)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("robustgen.cli.train", "train", "Adversarially train a classifier (optionally with DER)."),
    "eval": ("robustgen.cli.eval", "evaluate", "Clean and robust accuracy (PGD or AutoAttack) of any model source."),
    "inspect": ("robustgen.cli.inspect", "inspect", "What robustgen understood of a model spec (and its clean accuracy on --data)."),
    "diagnose": ("robustgen.cli.diagnose", "diagnose", "Plot energy diagnostics of a training run."),
    "sample": ("robustgen.cli.sample", "sample", "Generate class-conditional images from a robust classifier."),
    "score": ("robustgen.cli.score", "score", "IS, FID, KID, precision/recall and memorisation of generated images."),
    "sweep": ("robustgen.cli.sweep", "sweep", "Vary one sampling knob, score each value, draw the quality-diversity frontier."),
    "calibrate": ("robustgen.cli.calibrate", "calibrate", "Choose a model's sampling chain on held-out data, judged by an independent classifier."),
    "demo": ("robustgen.cli.demo", "demo", "Train, sample, score and report on the embedded digits data."),
    "report": ("robustgen.cli.report", "report", "Build a self-contained HTML report for run dirs."),
}


class LazyGroup(click.Group):
    """Imports each command's module on use, and owns the error contract for all of them."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        """click's main, but every error is ONE line `Error: ...` on stderr and exit 1 (usage errors too).

        SIGTERM is handled like Ctrl-C while a command runs (installed here, not at import).
        With standalone_mode=False, click's own behaviour (exceptions propagate) is kept.
        """
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        args = list(sys.argv[1:] if args is None else args)
        as_json = "--json" in args
        command = next((arg for arg in args if arg in COMMANDS), None)
        with sigterm_as_interrupt(), _one_rank_speaks():
            try:
                code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            except click.UsageError as exc:
                if type(exc).__name__ == "NoArgsIsHelpError":  # bare `robustgen`: show the help, it is not an error
                    click.echo(exc.ctx.get_help())
                    sys.exit(0)
                fail(usage_error_message(exc, command=command), as_json=as_json)
            except click.ClickException as exc:
                fail(usage_error_message(exc, command=command), as_json=as_json)
            except RobustgenError as exc:  # raised outside a command's own handler (e.g. while importing it)
                fail(str(exc), as_json=as_json)
            except (click.Abort, KeyboardInterrupt):
                interrupted()
        sys.exit(code if isinstance(code, int) else 0)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, (module, _, _) in COMMANDS.items() if _module_exists(module)]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not _module_exists(COMMANDS[name][0]):
            return None
        module, attr, _ = COMMANDS[name]
        return getattr(importlib.import_module(module), attr)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][2]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@contextlib.contextmanager
def _one_rank_speaks():
    """Under torchrun only rank 0 prints results (errors still come from the rank that failed);
    the process group is left at the end."""
    quiet = int(os.environ.get("RANK", "0")) != 0
    with open(os.devnull, "w") if quiet else contextlib.nullcontext() as sink:
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            try:
                yield
            finally:
                if "torch" in sys.modules:  # only a command that imported torch can have joined a group
                    from robustgen.kernel.distributed import teardown

                    teardown()


def _module_exists(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="robustgen")
def main() -> None:
    """robustgen: adversarially robust classifiers as generative models.

    \b
    Typical session:
      robustgen train digits --der                  # robust model with the Delta Energy Regularizer
      robustgen sample --checkpoint runs/digits-fgsm-rs-der/best.pt --class 3 -n 100
      robustgen score runs/samples --ref digits --features runs/ref/best.pt
    Run `robustgen COMMAND --help` for each command's options.

    \b
    Errors: one line `Error: <problem>: <fix>` on stderr, exit status 1, for bad
    options too. With --json a command also prints {"error": "<message>"} on
    stdout, so scripts can parse failures. Ctrl-C or SIGTERM: finished files are
    kept, one `Interrupted` line, exit status 130; rerun with --resume.
    """

