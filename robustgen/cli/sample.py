"""`robustgen sample`: class-conditional images from a robust classifier (thin shell over samplers)."""

from __future__ import annotations

import click

from robustgen.cli.common import echo_json, format_table, user_errors
from robustgen.cli.sampling import CALIBRATION_OPTION, NUM_IMAGES, configs, knob_options, model_options, model_source, run_options


@click.command("sample")
@model_options
@click.option("--class", "classes", multiple=True, help="Class index or name (repeatable). Omitted: all classes, balanced.")
@NUM_IMAGES
@knob_options
@CALIBRATION_OPTION
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run dir.  [default: runs/samples-<dataset>[-<class>]]")
@click.option("--png", is_flag=True, help="Also write one PNG per image under png/<class>/.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run dir.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run dir (same options, same images; any batch size or number of ranks).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def sample(**options):
    """Generate class-conditional images from a robust classifier.

    \b
    Examples:
      robustgen sample --checkpoint runs/digits/best.pt --class 3 --num-images 1000
      robustgen sample --checkpoint best.pt --class cat -n 16 --init gaussian --stop fixed --steps 60     # Santurkar et al.
      robustgen sample --checkpoint best.pt -n 10000 --png        # all classes, for FID
      robustgen sample --checkpoint best.pt -n 1000 --steps 0     # the init-only control
      torchrun --nproc_per_node 8 -m robustgen sample --checkpoint best.pt --num-images 50000
      robustgen sample --checkpoint robustbench:cifar10/Linf/Wong2020Fast --class cat -n 16 --data npz:cifar10.npz
      robustgen sample --checkpoint python:nets.py:resnet20=resnet20.th --data npz:cifar10.npz --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 -n 16
    """
    from samplers import sample_from_checkpoint

    init, sampler, stop = configs(options)
    notes: list[str] = []
    result = sample_from_checkpoint(
        options["checkpoint"], classes=list(options["classes"]) or None, init=init, sampler=sampler, stop=stop,
        calibration=options["use_calibration"], run=run_options(options), source=model_source(options), out=options["out"], png=options["png"],
        overwrite=options["overwrite"], resume=options["resume"],
        log=notes.append,  # what the loader inferred and the calibration used: shown with the summary, so a failure stays one line
    )
    summary = {
        "out": str(result.out),
        "images": int(len(result.labels)),
        "classes": sorted({int(c) for c in result.labels}),
        "seconds": round(result.seconds, 2),
        "images_per_s": round(len(result.labels) / max(result.seconds, 1e-9), 1),
        "grad_evals": result.grad_evals,
        "grad_evals_per_image": round(result.grad_evals_per_image, 2),
        "steps_mean": round(float(result.steps.mean()), 2),
        "energy_joint_mean": round(float(result.energy_joint.mean()), 3),
        "notes": [note.removeprefix("note: ") for note in notes],
    }
    if options["as_json"]:
        echo_json(summary)
        return
    click.echo(format_table([summary], ["images", "seconds", "images_per_s", "grad_evals_per_image", "steps_mean", "energy_joint_mean"]))
    click.echo(f"wrote {result.out}/samples.npz, grid.png, strips.png, meta.json" + (" and png/" if options["png"] else ""))
    for note in notes:
        click.echo(note)
