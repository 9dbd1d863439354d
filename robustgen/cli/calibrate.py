"""`robustgen calibrate`: choose the chain (start, step size, length or stop) for one model, judged independently."""

from __future__ import annotations

import click

from robustgen.cli.common import FINITE, apply_options, check_mode, echo_json, format_table, user_errors
from robustgen.cli.sampling import MODEL_OPTIONS, NUM_IMAGES, RUN_OPTIONS, InitType, model_source, run_options
from samplers.calibration import CRITERION, CalibrationConfig

_C = CalibrationConfig()


@click.command("calibrate")
@click.argument("model", metavar="MODEL")
@click.option("--judge", required=True, metavar="SPEC", help="An independent classifier (any model spec; never the model itself): its accuracy, FID, precision and recall decide.")
@click.option("--judge-mean", default=None, metavar="M1,M2,M3", help="Input normalisation mean of a python:/torchscript:/export: --judge.")
@click.option("--judge-std", default=None, metavar="S1,S2,S3", help="Input normalisation std of the --judge (as --judge-mean).")
@click.option("--init", "seeds", type=InitType(), default=None, metavar="images:SPEC",
              help="Also try real images of dataset SPEC as seeds (dealt to classes at random), beside the local-pca start.")
@click.option("--max-steps", type=int, default=_C.max_steps, show_default=True, help="Longest chain considered (gradient evaluations per image).")
@click.option("--held-out", type=FINITE, default=_C.held_out, show_default=True, help="Fraction of each class's training images held out as the reference.")
@NUM_IMAGES
@apply_options(MODEL_OPTIONS[1:] + RUN_OPTIONS)
@click.option("--json", "as_json", is_flag=True, help="Print the calibration record as JSON.")
@user_errors
def calibrate(model, judge, judge_mean, judge_std, seeds, max_steps, held_out, as_json, **options):
    """Choose the sampling chain for MODEL; `robustgen sample`, sweep and the API then use it by default.

    \b
    Chains are compared on a held-out part of MODEL's training split (never the test split) by an
    independent --judge. The criterion, declared before anything is measured:
      {criterion}
    Every fixed length and adaptive stop is read off one trajectory per start and step size (at most
    3 trajectories of --max-steps), so it costs about 3 sampling runs of the longest chain.
    Writes ~/.cache/robustgen/calibration/<model sha256>.json (and calibration.json beside a robustgen best.pt).

    \b
    Examples:
      robustgen calibrate runs/cifar10-generation/best.pt --judge runs/cifar10-standard/best.pt
      robustgen calibrate python:nets.py:resnet4b=resnet4b.pth --mean 0.4914,0.4822,0.4465 --std 0.2471,0.2435,0.2616 \\
          --data npz:cifar10.npz --judge python:nets.py:resnet20=resnet20.th --judge-mean 0.485,0.456,0.406 --judge-std 0.229,0.224,0.225 \\
          --init images:folder:tiny-imagenet-200/val/images
    """
    from robustgen.kernel.models.classes import JUDGE_FLAGS
    from robustgen.kernel.models.sources import ModelSpec
    from samplers.calibrated import calibrate as run_calibration, describe

    config = CalibrationConfig(max_steps=max_steps, held_out=held_out, fixed_steps=tuple(s for s in _C.fixed_steps if s <= max_steps) or (max_steps,))
    notes: list[str] = []
    judge_spec = ModelSpec(judge, mean=judge_mean, std=judge_std, flags=JUDGE_FLAGS, option="--judge", check=check_mode(options["strict"]))
    record = run_calibration(model, judge=judge_spec, config=config, seeds=seeds, run=run_options(options),
                             source=model_source(options), log=notes.append)
    if as_json:
        echo_json(record)
        return
    columns = ["name", "judge_accuracy", "fid", "precision", "recall", "near_copy_fraction_pixel", "steps_mean"]
    click.echo(format_table(record["candidates"], columns))
    click.echo(f"\nchosen: {describe(record)} ({record['why']}; {record['seconds']:.0f} s)")
    for note in notes:
        click.echo(note)


calibrate.help = calibrate.help.replace("{criterion}", CRITERION)
