"""`robustgen train`: thin shell over the `training` API (`diagnose` and `eval` have their own modules)."""

from __future__ import annotations

import click

from robustgen.cli.common import EPS, FINITE, apply_options, echo_json, format_table, user_errors
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.device import PRECISIONS
from robustgen.kernel.models import model_names
from robustgen.kernel.threat import NORMS
from training.attacks.base import MULTI_STEP
from training.config import AUGMENTS, COMPILE, DATASET_DEFAULTS, ON_CO, SCHEDULES, TrainConfig
from training.methods import METHODS
from training.presets import PRESETS


_CONFIG = TrainConfig()


def _per_dataset(field: str) -> str:
    """A field's per-dataset default as help text, from training.config.DATASET_DEFAULTS (a long eps as n/255)."""
    def shown(value) -> str:
        short, in_255 = f"{value:g}", value * 255
        return f"{round(in_255)}/255" if field == "eps" and len(short) > 4 and abs(in_255 - round(in_255)) < 1e-9 else short

    default = DATASET_DEFAULTS["_default"][field]
    special = [f"{name} {shown(values[field])}" for name, values in DATASET_DEFAULTS.items() if name != "_default" and values[field] != default]
    return "; ".join([shown(default), *special])


OPTIONS = (
    click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
    help="A named recipe; options given explicitly win. generation: " + PRESETS["generation"].summary + "."),
    click.option("--method", type=click.Choice(list(METHODS)), default=_CONFIG.method, show_default=True, help="Adversarial-training method."),
    click.option("--norm", type=click.Choice(list(NORMS)), default=_CONFIG.norm, show_default=True, is_eager=True, help="Threat model."),
    click.option("--eps", type=EPS, default=None, help=f"Attack radius in pixel units, e.g. 8/255, 0.031 or 1e-3 (L2: radii above 1 too) [default: {_per_dataset('eps')}]"),
    click.option("--step-size", type=EPS, default=None, help="Attack step in pixel units [default: the method's rule: eps, 1.25 eps, 2.5 eps/steps]"),
    click.option("--steps", type=int, default=None, help=f"Attack steps for pgd/trades [default: {MULTI_STEP}]"),
    click.option("--restarts", type=int, default=_CONFIG.restarts, show_default=True, help="Attack restarts at train time (pgd)."),
    click.option("--der/--no-der", default=False, show_default=True, help="Add the Delta Energy Regularizer."),
    click.option("--der-beta", type=FINITE, default=_CONFIG.der_beta, show_default=True, help="Weight of the DER term."),
    click.option("--der-gamma", type=FINITE, default=_CONFIG.der_gamma, show_default=True, help="Tolerated ||[dE(x), dE(x,y)]|| (energy units) before DER bites."),
    click.option("--der-start", type=int, default=_CONFIG.der_start, show_default=True, help="First epoch (0-based) with DER for multi-step methods."),
    click.option("--der-squared", is_flag=True, help="Penalise the squared delta-energy norm."),
    click.option("--init-from", default=None, metavar="CHECKPOINT", help="Start from this checkpoint's weights (RUN/best.pt); the run inherits its method, threat model and width unless given."),
    click.option("--generative", is_flag=True, help="Generative fine-tuning (DAT): BCE on s(x) = -E(x), real images vs --ood images pushed T steps up s. Needs --init-from and --ood."),
    click.option("--ood", default=None, metavar="SPEC", help="Out-of-distribution images for --generative: any dataset spec or a flat folder:DIR of images (resized, channels converted). With --preset generation: train, then fine-tune."),
    click.option("--ood-resize/--no-ood-resize", default=_CONFIG.ood_resize, show_default=True, help="Resize --ood images to the model's input size."),
    click.option("--gen-start", type=int, default=_CONFIG.gen_start, show_default=True, help="First generative epoch (0-based); earlier epochs are plain adversarial training."),
    click.option("--gen-lr", type=FINITE, default=_CONFIG.gen_lr, show_default=True, help="Constant learning rate of the generative epochs."),
    click.option("--gen-weight", type=FINITE, default=_CONFIG.gen_weight, show_default=True, help="Weight of the BCE terms."),
    click.option("--gen-steps", type=int, default=_CONFIG.gen_steps, show_default=True, help="T at the start: L2 ascent steps on s(x) from the OOD images."),
    click.option("--gen-steps-max", type=int, default=_CONFIG.gen_steps_max, show_default=True, help="Largest T."),
    click.option("--gen-steps-increment", type=int, default=_CONFIG.gen_steps_increment, show_default=True, help="T rises by this after a window whose AUC passed --gen-auc-threshold."),
    click.option("--gen-step-size", type=FINITE, default=None, help="L2 ascent step in pixels [default: 0.2 x sqrt(D/3072)]."),
    click.option("--gen-auc-threshold", type=FINITE, default=_CONFIG.gen_auc_threshold, show_default=True, help="Real-vs-contrastive AUC of s above which T rises (DAT); 0: T rises after every window (a plain ramp)."),
    click.option("--gen-auc-window", type=int, default=_CONFIG.gen_auc_window, show_default=True, help="Training images per AUC window; 0: one window per epoch."),
    click.option("--ema-decay", type=FINITE, default=_CONFIG.ema_decay, show_default=True, help="EMA decay per SGD step in generative epochs (best.pt holds the EMA weights)."),
    click.option("--holdout", type=int, default=_CONFIG.holdout, show_default=True, help="Training images a generative run never trains on; best.pt is picked on them."),
    click.option("--arch", type=click.Choice(model_names()), default=_CONFIG.arch, show_default=True),
    click.option("--width", type=int, default=None, help=f"Base width of PreActResNet-18 [default: {_per_dataset('width')}]."),
    click.option("--epochs", type=int, default=None, help=f"[default: {_per_dataset('epochs')}]"),
    click.option("--batch-size", type=int, default=None, help=f"Global batch (images per SGD step, split over torchrun ranks) [default: {_per_dataset('batch_size')}]"),
    click.option("--lr", type=FINITE, default=None, help=f"Peak learning rate [default: {_per_dataset('lr')}]."),
    click.option("--schedule", type=click.Choice(list(SCHEDULES)), default=_CONFIG.schedule, show_default=True, help="cyclic (one-cycle) or piecewise (/10 at 50% and 75%)."),
    click.option("--augment", type=click.Choice(list(AUGMENTS)), default=None, help="Training augmentation [default: the dataset's: crop+flip for CIFAR, crop for digits/SVHN]."),
    click.option("--momentum", type=FINITE, default=_CONFIG.momentum, show_default=True),
    click.option("--weight-decay", type=FINITE, default=_CONFIG.weight_decay, show_default=True),
    click.option("--eval-pgd-steps", type=int, default=_CONFIG.eval_pgd_steps, show_default=True, help="PGD steps of the per-epoch test evaluation (0 = clean only)."),
    click.option("--eval-subset", type=int, default=_CONFIG.eval_subset, show_default=True, help="Test images for the per-epoch evaluation."),
    click.option("--co-check-every", type=int, default=_CONFIG.co_check_every, show_default=True, help="SGD steps between in-epoch catastrophic-overfitting checks (0 = off)."),
    click.option("--co-check-images", type=int, default=_CONFIG.co_check_images, show_default=True, help="Fixed training images the in-epoch check attacks."),
    click.option("--on-co", type=click.Choice(list(ON_CO)), default=_CONFIG.on_co, show_default=True,
    help="On a CO alarm: warn, stop, rollback (to the last healthy check), der (roll back and switch DER on / double beta)."),
    click.option("--sync-bn", is_flag=True, help="Synchronise BatchNorm statistics across torchrun ranks [default: per-rank BN]."),
    click.option("--out", default=None, help="Run dir [default: runs/{dataset}-{method}[-der]]."),
    click.option("--data-root", default=None, help="Where downloadable datasets are (or go)."),
    click.option("--channels", type=click.Choice(["1", "3"]), default=None,
    help="Convert every image to 1 (grayscale) or 3 (RGB) channels [default: the count most training images have; the others are converted and counted]."),
    click.option("--device", default=_CONFIG.device, show_default=True, help="auto (cuda:LOCAL_RANK under torchrun, else cuda, mps or cpu), cpu, cuda, cuda:N."),
    click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default=_CONFIG.precision, show_default=True,
    help="auto: bf16 where the hardware has fast bf16 (CUDA, AVX512-BF16/AMX CPUs), else fp32."),
    click.option("--compile", "compile_mode", type=click.Choice(list(COMPILE)), default=_CONFIG.compile, show_default=True,
    help="torch.compile the model (auto: for long runs where a C++ compiler exists)."),
    click.option("--seed", type=int, default=_CONFIG.seed, show_default=True),
    click.option("--resume", "resume", default=None, metavar="RUN_DIR", help="Continue an interrupted run with its recorded config (give no other options)."),
    click.option("--overwrite", is_flag=True, help="Replace the run files in an existing --out."),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset", required=False, default=None)
@apply_options(OPTIONS)
@click.pass_context
@user_errors
def train(ctx, dataset, preset, resume, overwrite, as_json, compile_mode, channels, **fields):
    """Adversarially train a classifier on DATASET (digits, cifar10, cifar100, svhn, tiny-imagenet, npz:PATH, folder:PATH).

    \b
    Examples:
      robustgen train digits --der                              # about a minute on a laptop CPU
      robustgen train cifar10 --method fgsm-rs --eps 8/255 --der
      robustgen train cifar10 --method pgd --steps 10 --der --der-start 50 --schedule piecewise
      robustgen train cifar10 --method fgsm --eps 16/255 --on-co der   # heal catastrophic overfitting
      robustgen train cifar10 --init-from runs/c/best.pt --generative --ood folder:tiny-imagenet-200/val/images
      robustgen train npz:cifar10-subset.npz --preset generation --ood folder:tiny/val/images   # train, then fine-tune to draw
      robustgen train --resume runs/cifar10-fgsm-rs-der         # continue after an interruption
      torchrun --nproc_per_node 8 -m robustgen train cifar10 --method pgd --der
    """
    from training import train as run_training

    if resume is not None:
        _refuse_options_with_resume(ctx)
        result = run_training(resume=resume, progress=not as_json)
    else:  # every other option is a TrainConfig field of the same name
        fields.update(dataset=dataset or "digits", channels=int(channels) if channels else None, compile=compile_mode)
        result = run_training(_config(ctx, fields, preset), overwrite=overwrite, progress=not as_json)
    _print_training(result, as_json=as_json)


def _config(ctx: click.Context, fields: dict, preset: str | None) -> TrainConfig:
    """The TrainConfig of the options; with --preset, the preset's values under the options given explicitly;
    with --init-from, the starting run's training setup under them."""
    if preset is None and fields["init_from"] is None:
        return TrainConfig(**fields)
    from training.finetune import finetune_config
    from training.presets import preset_config

    compile_field = {"compile": "compile_mode"}
    given = {k: v for k, v in fields.items() if k == "dataset" or ctx.get_parameter_source(compile_field.get(k, k)) not in (click.core.ParameterSource.DEFAULT, None)}
    if preset is not None:
        return preset_config(preset, given)
    return finetune_config(fields["init_from"], given)


def _refuse_options_with_resume(ctx: click.Context) -> None:
    """--resume continues a run with its recorded config: any other option would be silently ignored, so refuse it."""
    given = [name for name, value in ctx.params.items()
             if name not in ("resume", "as_json") and ctx.get_parameter_source(name) not in (click.core.ParameterSource.DEFAULT, None)]
    if given:
        options = ", ".join("--" + name.replace("_", "-") if name != "dataset" else "DATASET" for name in given)
        raise RobustgenError(f"--resume continues the run with its recorded config, so {options} would be ignored: drop {options} (or start a new run with --out)")


def _print_training(result, *, as_json: bool) -> None:
    summary = {
        "run_dir": str(result.run_dir),
        "best": str(result.best),
        "last": str(result.last),
        "best_epoch": result.best_metrics["epoch"] + 1,
        "best_test_clean_acc": result.best_metrics["test_clean_acc"],
        "best_test_pgd_acc": result.best_metrics["test_pgd_acc"],
        "last_test_clean_acc": result.metrics["test_clean_acc"],
        "last_test_pgd_acc": result.metrics["test_pgd_acc"],
        "eval_pgd_steps": result.config.eval_pgd_steps,
        "co_alarms": [{"epoch": e + 1, "reason": r} for e, r in result.co_alarms],
        "stopped": result.stopped,
        "config": result.config.to_dict(),
    }
    if result.config.generative:
        summary.update(best_heldout_frechet=result.best_metrics.get("heldout_frechet"), last_gen_auc=result.metrics.get("gen_auc"),
                       last_gen_steps=result.metrics.get("gen_steps"))
    if as_json:
        echo_json(summary)
        return
    c = result.config
    tuned = f" + generative fine-tuning on {c.ood} from epoch {c.gen_start + 1}" if c.generative else ""
    click.echo(f"{c.dataset} {c.method}{' + DER' if c.der else ''}{tuned}, {c.norm} eps {c.eps:.4g}, {c.epochs} epochs -> {result.run_dir}")
    rows = [
        {"checkpoint": "best.pt", "epoch": summary["best_epoch"], "test clean acc": result.best_metrics["test_clean_acc"],
         f"test PGD-{c.eval_pgd_steps} acc": result.best_metrics["test_pgd_acc"]},
        {"checkpoint": "last.pt", "epoch": result.metrics["epoch"] + 1, "test clean acc": result.metrics["test_clean_acc"],
         f"test PGD-{c.eval_pgd_steps} acc": result.metrics["test_pgd_acc"]},
    ]
    columns = ["checkpoint", "epoch", "test clean acc"] + ([f"test PGD-{c.eval_pgd_steps} acc"] if c.eval_pgd_steps > 0 else [])
    if c.generative:  # best.pt: the EMA weights picked by the held-out statistic (training.finetune), never the test split
        for row, record in zip(rows, (result.best_metrics, result.metrics)):
            row.update({"held-out FD": record.get("heldout_frechet", "-"), "AUC": record.get("gen_auc", "-"), "T": record.get("gen_steps", "-")})
        columns += ["held-out FD", "AUC", "T"]
    click.echo(format_table(rows, columns))
    for alarm in summary["co_alarms"]:
        click.echo(f"CO alarm at epoch {alarm['epoch']}: {alarm['reason']}")
    if result.stopped:
        click.echo(f"Run ended early: {result.stopped}")
    click.echo(f"Next: robustgen eval {result.best}   |   robustgen diagnose {result.run_dir}")
