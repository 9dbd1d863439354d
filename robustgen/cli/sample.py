"""`robustgen sample`: class-conditional images from a robust checkpoint (thin shell over samplers)."""

from __future__ import annotations

import click

from robustgen.cli.common import EPS, echo_json, format_table, user_errors
from samplers.config import InitConfig, SamplerConfig, StopConfig

# defaults live in the config dataclasses; the help shows them (None options keep them)
_I, _S, _T = InitConfig(), SamplerConfig(), StopConfig()


class RadiusType(click.ParamType):
    """A ball radius in pixel units: 8/255 (Linf) or 2.0 (L2 radii may exceed 1)."""

    name = "RADIUS"

    def convert(self, value, param, ctx):
        try:
            return float(value)
        except (TypeError, ValueError):
            return EPS.convert(value, param, ctx)



@click.command("sample")
@click.option("--checkpoint", required=True, metavar="SPEC", help="best.pt written by `robustgen train`, or robustbench:DATASET/THREAT/NAME, robustness:PATH, torchvision:ARCH=PATH, timm:ARCH=PATH.")
@click.option("--class", "classes", multiple=True, help="Class index or name (repeatable). Omitted: all classes, balanced.")
@click.option("--n", type=int, default=100, show_default=True, help="Number of images in total.")
@click.option("--init", "init_kind", type=click.Choice(["local-pca", "pca", "gaussian", "uniform"]), default="local-pca", show_default=True)
@click.option("--sampler", "sampler_kind", type=click.Choice(["sgld", "pgd"]), default="sgld", show_default=True)
@click.option("--stop", "stop_rule", type=click.Choice(["adaptive", "fixed"]), default="adaptive", show_default=True, help="adaptive: stop in the energy band of real data or when no longer improving.")
@click.option("--steps", type=int, default=None, help=f"Maximum steps per chain.  [default: {_S.steps}]")
@click.option("--step-size", type=float, default=None, help=f"SGLD eta (pixel change per unit gradient), or PGD step length in pixels.  [default: sgld calibrated by --drift; pgd L2 {SamplerConfig(kind='pgd').resolved_step_size(3072):g} x sqrt(D/3072), Linf 2/255]")
@click.option("--drift", type=float, default=None, help=f"SGLD without --step-size: eta is set per chain so its first drift step moves pixels by this rms.  [default: {_S.drift:g}]")
@click.option("--noise", type=float, default=None, help=f"SGLD noise std in pixel units.  [default: {_S.noise:g}]")
@click.option("--momentum", type=float, default=None, help=f"SGLD momentum m.  [default: {_S.momentum:g}]")
@click.option("--eps", type=RadiusType(), default=None, help="PGD: radius of the ball around x0 (pixels, e.g. 16/255 or 2.0). Default: no ball.")
@click.option("--norm", type=click.Choice(["L2", "Linf"]), default="L2", show_default=True, help="PGD step and ball norm.")
@click.option("--energy", type=click.Choice(["joint", "ce", "mix"]), default="joint", show_default=True, help="joint E(x,y), cross-entropy, or E(x,y) + 0.5 E(x).")
@click.option("--quantile", type=float, default=None, help=f"Adaptive: stop once E(x,y) <= this quantile of real training images' E(x,y).  [default: {_T.quantile:g}]")
@click.option("--patience", type=int, default=None, help=f"Adaptive: stop after this many steps without improvement.  [default: {_T.patience}]")
@click.option("--k", type=int, default=None, help=f"local-pca: neighbourhood size.  [default: {_I.k}]")
@click.option("--variance", type=float, default=None, help=f"pca/local-pca: fraction of variance kept.  [default: {_I.variance:g}]")
@click.option("--scale", type=float, default=None, help=f"pca/local-pca: scale in units of each component's std.  [default: {_I.scale:g}]")
@click.option("--neighbour-space", type=click.Choice(["pixel", "features"]), default=None, help=f"local-pca: space of the neighbour search.  [default: {_I.neighbour_space}]")
@click.option("--batch-size", type=int, default=250, show_default=True, help="Chains per batch (what sits on the device at once).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run dir.  [default: runs/samples-<dataset>[-<class>]]")
@click.option("--png", is_flag=True, help="Also write one PNG per image under png/<class>/.")
@click.option("--overwrite", is_flag=True, help="Replace an existing run dir.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run dir (same options, same images).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or mps.")
@click.option("--data", "--dataset", "dataset", default=None, metavar="SPEC", help="Dataset for initialisers and reference energies when not the model's own or not at hand (e.g. npz:PATH, folder:PATH).")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Where the checkpoint's dataset lives.")
@click.option("--model-dir", type=click.Path(file_okay=False), default=None, help="Where zoo files live  [default: $ROBUSTGEN_MODEL_DIR or ~/.cache/robustgen/models].")
@click.option("--trust-checkpoint", is_flag=True, help="Allow fully unpickling a third-party file (only for files you trust: it can run code).")
@click.option("--mean", default=None, metavar="M1,M2,M3", help="torchvision:/timm: input normalisation mean  [default: ImageNet's].")
@click.option("--std", default=None, metavar="S1,S2,S3", help="torchvision:/timm: input normalisation std  [default: ImageNet's].")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@user_errors
def sample(checkpoint, classes, n, init_kind, sampler_kind, stop_rule, steps, step_size, drift, noise, momentum, eps, norm, energy,
           quantile, patience, k, variance, scale, neighbour_space, batch_size, seed, out, png, overwrite, resume, device,
           dataset, data_root, model_dir, trust_checkpoint, mean, std, as_json):
    """Generate class-conditional images from a robust classifier.

    \b
    Examples:
      robustgen sample --checkpoint runs/digits/best.pt --class 3 --n 1000
      robustgen sample --checkpoint best.pt --class cat --n 16 --init gaussian --sampler pgd
      robustgen sample --checkpoint best.pt --n 10000 --png        # all classes, for FID
      robustgen sample --checkpoint robustbench:cifar10/Linf/Wong2020Fast --class cat --n 16 --data npz:cifar10.npz
      robustgen sample --checkpoint robustness:imagenet_linf_4.pt --data folder:imagenet --class 207 --n 16 --init uniform
    """
    from robustgen.errors import RobustgenError
    from samplers import sample_from_checkpoint

    if n < 1:
        raise RobustgenError(f"--n {n}: ask for at least 1 image")
    init = _config(InitConfig, kind=init_kind, k=k, variance=variance, scale=scale, neighbour_space=neighbour_space)
    sampler = _config(SamplerConfig, kind=sampler_kind, steps=steps, step_size=step_size, drift=drift, noise=noise, momentum=momentum, eps=eps, norm=norm, energy=energy)
    stop = _config(StopConfig, rule=stop_rule, quantile=quantile, patience=patience)
    result = sample_from_checkpoint(
        checkpoint, classes=list(classes) or None, n=n, init=init, sampler=sampler, stop=stop, seed=seed,
        batch_size=batch_size, out=out, png=png, overwrite=overwrite, resume=resume, device=device,
        dataset=dataset, data_root=data_root, model_dir=model_dir, trust_checkpoint=trust_checkpoint, mean=mean, std=std,
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
    }
    if as_json:
        echo_json(summary)
        return
    columns = ["images", "seconds", "images_per_s", "grad_evals_per_image", "steps_mean", "energy_joint_mean"]
    click.echo(format_table([summary], columns))
    click.echo(f"wrote {result.out}/samples.npz, grid.png, meta.json" + (" and png/" if png else ""))


def _config(cls, **options):
    """Build a config from the options given; unset (None) options keep the dataclass default."""
    return cls(**{key: value for key, value in options.items() if value is not None})
