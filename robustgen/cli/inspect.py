"""`robustgen inspect SPEC`: what the loader understood of a model, and its clean accuracy on --data."""

from __future__ import annotations

import click

from robustgen.cli.common import check_mode, echo_json, strict_option, user_errors


@click.command("inspect", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec", metavar="SPEC")
@click.option("--data", "--dataset", "data", default=None, metavar="SPEC",
              help="Dataset (e.g. npz:PATH, folder:PATH, cifar10): gives a python:/torchscript:/export: model its classes and input size, "
                   "and measures clean accuracy on --images of its test images.")
@click.option("--data-root", default=None, help="Where a registry dataset lives.")
@click.option("--images", type=int, default=500, show_default=True, help="Test images for the clean accuracy (a fixed seeded subset).")
@click.option("--mean", default=None, metavar="M1,M2,M3",
              help="Input normalisation mean of torchvision:/timm: (default ImageNet's) and python:/torchscript:/export: networks (default none).")
@click.option("--std", default=None, metavar="S1,S2,S3", help="Input normalisation std (as --mean).")
@click.option("--model-dir", default=None, type=click.Path(file_okay=False), help="Where zoo files live [default: $ROBUSTGEN_MODEL_DIR, else ~/.cache/robustgen/models].")
@click.option("--trust-checkpoint", is_flag=True, help="Allow fully unpickling a third-party file (only for files you trust: it can run code).")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the test-image subset.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@strict_option
@user_errors
def inspect(spec, data, data_root, images, mean, std, model_dir, trust_checkpoint, device, seed, as_json, strict):
    """Show what robustgen understood of SPEC: source, architecture, parameters, input, normalisation, classes, weights sha256.

    The first command to run on a model from elsewhere. SPEC is anything eval and sample take:
    a robustgen checkpoint, robustbench:DATASET/THREAT/NAME, robustness:PATH, torchvision:ARCH=PATH,
    timm:ARCH=PATH, python:FILE.py:FACTORY=WEIGHTS, python:package.module:FACTORY=WEIGHTS,
    torchscript:PATH or export:PATH.pt2. With --data, the clean accuracy on a few hundred test
    images tells at once whether classes, input size and normalisation are right.

    \b
    Examples:
      robustgen inspect runs/cifar10-fgsm-rs-der/best.pt --data cifar10
      robustgen inspect python:nets.py:resnet20=resnet20.th --data npz:cifar10.npz --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225
      robustgen inspect export:model.pt2
    """
    from robustgen.kernel.models.inspection import inspect_classifier

    info = inspect_classifier(spec, data=data, data_root=data_root, images=images, mean=mean, std=std, model_dir=model_dir,
                              trust_checkpoint=trust_checkpoint, device=device, seed=seed, check=check_mode(strict))
    if as_json:
        echo_json(info)
        return
    for label, value in _lines(info):
        click.echo(f"{label:<15} {value}")
    for note in info["notes"]:
        click.echo(f"note: {note}")


def _lines(info: dict) -> list[tuple[str, str]]:
    c, h, w = info["input_shape"]
    if info["mean"] is not None:
        norm = f"mean {_numbers(info['mean'])}, std {_numbers(info['std'])} (applied inside the model)"
    else:
        norm = "inside the network" if info["normalised_inside"] else "none: the network gets [0, 1] pixels as they are"
    names = info["classes"]
    classes = f"{info['num_classes']}: {', '.join(names[:10])}{', ...' if len(names) > 10 else ''}"
    threat = info["threat"]
    rows = [
        ("spec", info["spec"]),
        ("source", info["source"]),
        ("architecture", info["arch"]),
        ("parameters", f"{info['parameters']:,}"),
        ("input", f"{c}x{h}x{w} (C x H x W), pixels in [0, 1]"),
        ("normalisation", norm),
        ("classes", classes),
        ("features", f"{info['feature_dim']}-dim penultimate (head split off)" if info["feature_dim"] else "none: no linear head could be split off"),
        ("threat model", f"{threat['norm']} eps {threat['eps']:.4g}" if threat else "not recorded (eval needs --eps)"),
        ("dataset", info["dataset"] or "not recorded"),
        ("weights", info["weights_path"]),
        ("sha256", info["weights_sha256"]),
    ]
    if "clean_acc" in info:
        rows.append(("clean accuracy", f"{info['clean_acc']:.3f} on {info['n']} test images of {info['data']}"))
    other = info.get("other_normalisation")
    if other and other["differs"]:  # the missing-normalisation trap, shown side by side
        fix = f" (--mean {_numbers(other['mean'])} --std {_numbers(other['std'])})" if other["what"].startswith("with") else ""
        rows.append(("", f"{other['clean_acc']:.3f} {other['what']}{fix}"))
    return rows


def _numbers(values) -> str:
    return ",".join(f"{float(v):.4g}" for v in values)
