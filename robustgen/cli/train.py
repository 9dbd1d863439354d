"""`robustgen train`, `robustgen eval`, `robustgen diagnose`: thin shells over the `training` API."""

from __future__ import annotations

import click

from robustgen.cli.common import echo_json, format_table, user_errors
from robustgen.errors import RobustgenError
from robustgen.io import parse_eps


def _eps(value: str | None, norm: str | None = "Linf") -> float | None:
    """8/255 or 0.031; under L2 a radius above 1 (e.g. 1.5) is fine too."""
    if value is None:
        return None
    try:
        return parse_eps(value)
    except RobustgenError:
        if norm == "L2":
            try:
                radius = float(value)
            except ValueError:
                radius = -1.0
            if radius >= 0:
                return radius
        raise


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("dataset", required=False, default=None)
@click.option("--method", default="fgsm-rs", show_default=True, help="standard | fgsm | fgsm-rs | n-fgsm | pgd | trades")
@click.option("--norm", default="Linf", show_default=True, help="Threat model: Linf or L2.")
@click.option("--eps", default=None, metavar="EPS", help="Attack radius in pixel units, e.g. 8/255 or 0.031 [default: 8/255; digits 0.2]")
@click.option("--step-size", default=None, metavar="EPS", help="Attack step in pixel units [default: method's rule: eps, 1.25 eps, 2.5 eps/steps]")
@click.option("--steps", type=int, default=None, help="Attack steps for pgd/trades [default: 10]")
@click.option("--restarts", type=int, default=1, show_default=True, help="Attack restarts at train time (pgd).")
@click.option("--der/--no-der", default=False, show_default=True, help="Add the Delta Energy Regularizer.")
@click.option("--der-beta", type=float, default=None, help="Weight of the DER term [default: see training.config.DER_BETA].")
@click.option("--der-gamma", type=float, default=None, help="Tolerated ||[dE(x), dE(x,y)]|| before DER bites [default: DER_GAMMA].")
@click.option("--der-start", type=int, default=0, show_default=True, help="First epoch (0-based) with DER for multi-step methods.")
@click.option("--der-squared", is_flag=True, help="Penalise the squared delta-energy norm.")
@click.option("--arch", default="preact-resnet18", show_default=True)
@click.option("--width", type=int, default=None, help="Base width of PreActResNet-18 [default: 64; digits 16].")
@click.option("--epochs", type=int, default=None, help="[default: 30]")
@click.option("--batch-size", type=int, default=None, help="[default: 128]")
@click.option("--lr", type=float, default=None, help="Peak learning rate [default: 0.2; digits 0.1].")
@click.option("--schedule", default="cyclic", show_default=True, help="cyclic (one-cycle) or piecewise.")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--eval-pgd-steps", type=int, default=10, show_default=True, help="PGD steps of the per-epoch test evaluation (0 = clean only).")
@click.option("--eval-subset", type=int, default=512, show_default=True, help="Test images for the per-epoch evaluation.")
@click.option("--out", default=None, help="Run dir [default: runs/{dataset}-{method}[-der]].")
@click.option("--data-root", default=None, help="Where downloadable datasets are (or go).")
@click.option("--device", default="auto", show_default=True)
@click.option("--precision", default="auto", show_default=True, help="auto (bf16 on CUDA) | fp32 | bf16")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", "resume", default=None, metavar="RUN_DIR", help="Continue an interrupted run (its config.json wins over other options).")
@click.option("--overwrite", is_flag=True, help="Replace the run files in an existing --out.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@user_errors
def train(dataset, method, norm, eps, step_size, steps, restarts, der, der_beta, der_gamma, der_start, der_squared, arch, width,
          epochs, batch_size, lr, schedule, momentum, weight_decay, eval_pgd_steps, eval_subset, out, data_root, device,
          precision, seed, resume, overwrite, as_json):
    """Adversarially train a classifier on DATASET (digits, cifar10, cifar100, svhn, tiny-imagenet, npz:PATH, folder:PATH).

    \b
    Examples:
      robustgen train digits --der                              # minutes on a laptop CPU
      robustgen train cifar10 --method fgsm-rs --eps 8/255 --der
      robustgen train cifar10 --method pgd --steps 10 --der --der-start 50
      robustgen train --resume runs/cifar10-fgsm-rs-der         # continue after an interruption
    """
    from training import TrainConfig
    from training import train as run_training
    from training.config import DER_BETA, DER_GAMMA

    if resume is not None:
        result = run_training(resume=resume, progress=not as_json)
    else:
        config = TrainConfig(
            dataset=dataset or "digits", data_root=data_root, method=method, norm=norm, eps=_eps(eps, norm), step_size=_eps(step_size, norm),
            steps=steps, restarts=restarts, der=der, der_beta=DER_BETA if der_beta is None else der_beta,
            der_gamma=DER_GAMMA if der_gamma is None else der_gamma, der_start=der_start, der_squared=der_squared, arch=arch,
            width=width, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum, weight_decay=weight_decay,
            schedule=schedule, eval_pgd_steps=eval_pgd_steps, eval_subset=eval_subset, device=device, precision=precision,
            seed=seed, out=out,
        )
        result = run_training(config, overwrite=overwrite, progress=not as_json)
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
        "config": result.config.to_dict(),
    }
    if as_json:
        echo_json(summary)
        return
    c = result.config
    click.echo(f"{c.dataset} {c.method}{' + DER' if c.der else ''}, {c.norm} eps {c.eps:.4g}, {c.epochs} epochs -> {result.run_dir}")
    rows = [
        {"checkpoint": "best.pt", "epoch": summary["best_epoch"], "test clean acc": result.best_metrics["test_clean_acc"],
         f"test PGD-{c.eval_pgd_steps} acc": result.best_metrics["test_pgd_acc"]},
        {"checkpoint": "last.pt", "epoch": result.metrics["epoch"] + 1, "test clean acc": result.metrics["test_clean_acc"],
         f"test PGD-{c.eval_pgd_steps} acc": result.metrics["test_pgd_acc"]},
    ]
    columns = ["checkpoint", "epoch", "test clean acc"] + ([f"test PGD-{c.eval_pgd_steps} acc"] if c.eval_pgd_steps > 0 else [])
    click.echo(format_table(rows, columns))
    for alarm in summary["co_alarms"]:
        click.echo(f"CO alarm at epoch {alarm['epoch']}: {alarm['reason']}")
    click.echo(f"Next: robustgen eval {result.best}   |   robustgen diagnose {result.run_dir}")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("checkpoint", metavar="CKPT")
@click.option("--attack", default="pgd", show_default=True, help="Attack (pgd).")
@click.option("--steps", type=int, default=50, show_default=True)
@click.option("--restarts", type=int, default=10, show_default=True)
@click.option("--eps", default=None, metavar="EPS", help="Attack radius [default: the eps the checkpoint was trained at].")
@click.option("--norm", default=None, help="Linf or L2 [default: the checkpoint's].")
@click.option("--step-size", default=None, metavar="EPS", help="[default: 2.5 eps / steps]")
@click.option("--subset", type=int, default=None, help="Evaluate on a fixed seeded subset of N test images [default: all].")
@click.option("--batch-size", type=int, default=256, show_default=True)
@click.option("--data-root", default=None, help="Where the checkpoint's dataset lives [default: as recorded].")
@click.option("--device", default="auto", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def evaluate(checkpoint, attack, steps, restarts, eps, norm, step_size, subset, batch_size, data_root, device, seed, as_json):
    """Clean and PGD-k-r robust accuracy of CKPT on its dataset's full test split (PGD-50-10 by default)."""
    from robustgen.checkpoint import load_checkpoint
    from robustgen.data import load_dataset
    from robustgen.device import resolve_device
    from training import evaluate_robustness

    if attack != "pgd":
        raise RobustgenError(f"unknown attack {attack!r}: only pgd is available")
    if steps < 0 or restarts < 1 or (subset is not None and subset < 1):
        raise RobustgenError("--steps must be >= 0, --restarts >= 1 and --subset >= 1")
    model, meta = load_checkpoint(checkpoint, device=resolve_device(device))
    trained = meta.get("config") or {}
    norm = norm or trained.get("norm", "Linf")
    eps_value = _eps(eps, norm) if eps is not None else trained.get("eps")
    if eps_value is None:
        raise RobustgenError(f"{checkpoint} does not record its training eps: pass --eps")
    dataset = load_dataset(meta["dataset"], root=data_root or meta.get("data_root"))
    if meta.get("dataset_sha256") and meta["dataset_sha256"] != dataset.fingerprint():
        raise RobustgenError(f"dataset {meta['dataset']} on this machine differs from the one {checkpoint} was trained on (sha256 mismatch): point --data-root at the original files")
    result = evaluate_robustness(model, dataset, eps=eps_value, norm=norm, steps=steps, restarts=restarts, step_size=_eps(step_size, norm),
                                 subset=subset, batch_size=batch_size, seed=seed, progress=not as_json)
    result.update(checkpoint=str(checkpoint), dataset=meta["dataset"], epoch=meta.get("epoch"))
    if as_json:
        echo_json(result)
        return
    click.echo(f"{checkpoint}: {meta['dataset']}, {result['n']} test images, PGD-{steps}-{restarts} at {norm} eps {eps_value:.4g}")
    click.echo(format_table([{"clean acc": result["clean_acc"], f"PGD-{steps}-{restarts} acc": result["robust_acc"]}],
                            ["clean acc", f"PGD-{steps}-{restarts} acc"]))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("run_dir")
@click.option("--checkpoint", default="best", show_default=True, help="best or last: whose batch goes into the quiver plot.")
@click.option("--n", "n", type=int, default=64, show_default=True, help="Test images in the quiver plot.")
@click.option("--device", default="auto", show_default=True)
@click.option("--json", "as_json", is_flag=True)
@user_errors
def diagnose(run_dir, checkpoint, n, device, as_json):
    """Plot a run's energy diagnostics: RUN_DIR/curves.png (PGD error, delta energies, AAEs per epoch)
    and RUN_DIR/quiver.png ((E(x), E(x,y)) -> (E(x*), E(x*,y)) for a test batch)."""
    from training.diagnostics import diagnose_run

    if n < 1:
        raise RobustgenError("--n must be at least 1")
    result = diagnose_run(run_dir, checkpoint=checkpoint, n=n, device=device)
    if as_json:
        echo_json(result)
        return
    click.echo(f"wrote {result['curves']} and {result['quiver']}")
    click.echo(f"{result['epochs']} epochs, {len(result['co_alarms'])} CO alarms; quiver batch: {result['aae_in_batch']} AAEs, "
               f"mean dE(x) {result['mean_de_x']:+.3f}, mean dE(x,y) {result['mean_de_xy']:+.3f}")
    for epoch, reason in result["co_alarms"]:
        click.echo(f"  CO alarm at epoch {epoch + 1}: {reason}")
