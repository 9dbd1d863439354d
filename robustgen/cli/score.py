"""`robustgen score`: IS, FID, KID, precision/recall of generated images (thin shell over samplers.scoring.score)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from robustgen.cli.common import apply_options, check_mode, echo_json, strict_option, user_errors


OPTIONS = (
    click.option("--ref", default=None, metavar="DATASET",
                 help="Reference: digits, cifar10, ..., npz:PATH or folder:PATH. Default: the dataset of the sample run."),
    click.option("--ref-split", type=click.Choice(["train", "test"]), default="train", show_default=True, help="Reference split."),
    click.option("--metrics", default="is,fid", show_default=True, metavar="LIST", help="Comma-separated: is,fid,kid,prc."),
    click.option("--features", default="inception", show_default=True, metavar="inception|SPEC",
                 help="Feature extractor: torch-fidelity's Inception-v3 (comparable with papers) or any classifier SPEC: a robustgen checkpoint, "
                      "robustbench:D/T/NAME, robustness:PATH, torchvision:ARCH=PATH, timm:ARCH=PATH, python:FILE.py:FACTORY=WEIGHTS, torchscript:PATH, export:PATH.pt2."),
    click.option("--inception-weights", type=click.Path(path_type=Path), default=None, metavar="PATH",
                 help="Local weights-inception-2015-12-05-6726825d.pth for machines without internet."),
    click.option("--judge", default=None, metavar="SPEC",
                 help="Classifier (any SPEC, as --features) whose accuracy on the samples (w.r.t. their intended labels) is reported, overall and per class."),
    click.option("--features-mean", default=None, metavar="M1,M2,M3",
                 help="Input normalisation mean of a --features/--judge network that does not carry its own (torchvision:, timm:, python:, torchscript:, export:)."),
    click.option("--features-std", default=None, metavar="S1,S2,S3", help="Input normalisation std of that network (with --features-mean)."),
    click.option("--model-dir", default=None, type=click.Path(file_okay=False),
                 help="Where zoo files of --features/--judge live [default: $ROBUSTGEN_MODEL_DIR, else ~/.cache/robustgen/models]."),
    click.option("--trust-checkpoint", is_flag=True, help="Allow fully unpickling a third-party --features/--judge file (only for files you trust: it can run code)."),
    click.option("--no-per-class", is_flag=True, help="Skip class-conditional FID."),
    click.option("--no-memorisation", is_flag=True,
                 help="Skip the memorisation measures (nearest-training-image distances, near-copies, C_T), on by default when the reference is known."),
    click.option("--batch-size", type=click.IntRange(min=1), default=200, show_default=True),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N."),
    click.option("--data-root", type=click.Path(path_type=Path), default=None, help="Where registry datasets live."),
    click.option("--kid-subset-size", type=int, default=None, help="KID subset size (default 1000, lowered with a warning when fewer images exist)."),
    click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
                 help="Cache of reference features (default ~/.cache/robustgen/score or $ROBUSTGEN_CACHE/score)."),
    click.option("--no-cache", is_flag=True, help="Do not read or write cached reference features."),
    click.option("--out", type=click.Path(), default=None,
                 help="Write score.json here (a directory: DIR/score.json; default: inside a sample run dir). memorisation.npz goes beside it."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table."),
    strict_option,
)


@click.command("score")
@click.argument("samples", type=click.Path(path_type=Path))
@apply_options(OPTIONS)
@user_errors
def score(samples, features, judge, features_mean, features_std, model_dir, trust_checkpoint, no_per_class, no_memorisation, no_cache, out,
          as_json, strict, **passed):
    """Score generated images SAMPLES (a sample run dir, an .npz of uint8 images, or a folder of images).

    \b
    \b
    robustgen score runs/samples-cifar10 --ref cifar10
    robustgen score runs/samples --ref npz:data.npz --features runs/ref/best.pt --metrics is,fid,kid,prc
    robustgen score runs/samples --ref npz:cifar10.npz --features python:nets.py:resnet20=resnet20.th --features-mean 0.485,0.456,0.406 --features-std 0.229,0.224,0.225
    robustgen score SAMPLES --inception-weights weights-inception-2015-12-05-6726825d.pth

    FID, precision and recall are against the train split (comparable with papers) and, as fid_test, precision_test and
    recall_test, the test split. Memorisation compares each sample's distance to its nearest training image with that of
    real test images.
    """
    from robustgen.kernel.io import ensure_writable_dir, refuse_symlink_loop
    from samplers.scoring import default_output, format_result
    from samplers.scoring import score as run_score
    from samplers.scoring.extractors import INCEPTION

    model_spec = model_specs(features_mean=features_mean, features_std=features_std, model_dir=model_dir, trust_checkpoint=trust_checkpoint,
                             strict=strict)
    features = features if features == INCEPTION else model_spec(features, "--features")
    judge = model_spec(judge, "--judge") if judge is not None else None

    target = _output_path(out) if out is not None else default_output(samples)
    if target is not None:
        refuse_symlink_loop(target, what="--out")  # checked before the scoring work, not after
    # passed: ref, ref_split, metrics, inception_weights, batch_size, device, data_root, cache_dir, kid_subset_size (score's own names)
    result = run_score(samples, features=features, judge=judge, per_class=not no_per_class, memorisation=not no_memorisation, cache=not no_cache,
                       verbose=sys.stderr.isatty() and not as_json, **passed)
    if target is not None:
        ensure_writable_dir(target.parent)
        result.save(target)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(format_result(result))
        if target is not None:
            click.echo(f"\nwrote {target}")


def model_specs(*, features_mean, features_std, model_dir, trust_checkpoint, strict: bool):
    """SPEC -> ModelSpec carrying the options that say how to read a --features/--judge network."""
    from robustgen.kernel.models.sources import ModelSpec

    from robustgen.kernel.models.classes import FEATURES_FLAGS

    def make(spec: str, option: str) -> ModelSpec:
        return ModelSpec(str(spec), mean=features_mean, std=features_std, model_dir=model_dir, trust_checkpoint=trust_checkpoint,
                         flags=FEATURES_FLAGS, option=option, check=check_mode(strict))

    return make


def _output_path(out: str) -> Path:
    """--out DIR (existing, or written with a trailing slash) means DIR/score.json, never a file named DIR."""
    import os

    from samplers.scoring import SCORE_FILE

    path = Path(out).expanduser()  # (pathlib drops a trailing slash: look at the string)
    return path / SCORE_FILE if path.is_dir() or out.endswith((os.sep, "/")) else path
