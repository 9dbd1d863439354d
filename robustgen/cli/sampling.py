"""Options shared by `robustgen sample` and `robustgen sweep`: the model, its data, and every sampling knob.

Choice lists and defaults come from the config dataclasses (samplers/config.py);
an option left unset keeps the dataclass default, so the two stay in one place.
"""

from __future__ import annotations

import click

from robustgen.cli.common import FINITE, EpsType, check_mode, strict_option
from robustgen.device import COMPILE_MODES
from samplers.config import ENERGIES, INITS, NEIGHBOUR_SPACES, NORMS, SAMPLERS, STOP_RULES, InitConfig, SamplerConfig, StopConfig

_I, _S, _T = InitConfig(), SamplerConfig(), StopConfig()
_PGD_L2_STEP = SamplerConfig(kind="pgd").resolved_step_size(3072)

MODEL_OPTIONS = (
    click.option("--checkpoint", required=True, metavar="SPEC",
                 help="best.pt written by `robustgen train`, or robustbench:DATASET/THREAT/NAME, robustness:PATH, torchvision:ARCH=PATH, timm:ARCH=PATH, "
                      "python:FILE.py:FACTORY=WEIGHTS, python:package.module:FACTORY=WEIGHTS, torchscript:PATH, export:PATH.pt2."),
    click.option("--device", default="auto", show_default=True, help="auto (cuda:LOCAL_RANK under torchrun, else cuda, mps or cpu), cpu, cuda, cuda:N."),
    click.option("--data", "--dataset", "dataset", default=None, metavar="SPEC",
                 help="Dataset for initialisers and reference energies when not the model's own or not at hand (e.g. npz:PATH, folder:PATH); "
                      "python:/torchscript:/export: models also take their classes and input size from it."),
    click.option("--data-root", type=click.Path(file_okay=False), default=None, help="Where the checkpoint's dataset lives."),
    click.option("--model-dir", type=click.Path(file_okay=False), default=None, help="Where zoo files live  [default: $ROBUSTGEN_MODEL_DIR or ~/.cache/robustgen/models]."),
    click.option("--trust-checkpoint", is_flag=True, help="Allow fully unpickling a third-party file (only for files you trust: it can run code)."),
    click.option("--mean", default=None, metavar="M1,M2,M3",
                 help="Input normalisation mean of torchvision:/timm: (default ImageNet's) and python:/torchscript:/export: networks (default none)."),
    click.option("--std", default=None, metavar="S1,S2,S3", help="Input normalisation std (as --mean)."),
    strict_option,
)

KNOB_OPTIONS = (
    click.option("--init", "init_kind", type=click.Choice(INITS), default=_I.kind, show_default=True, help="Where chains start."),
    click.option("--sampler", "sampler_kind", type=click.Choice(SAMPLERS), default=_S.kind, show_default=True),
    click.option("--stop", "stop_rule", type=click.Choice(STOP_RULES), default=_T.rule, show_default=True,
                 help="adaptive: stop in the energy band of real data or when no longer improving; fixed: run all steps."),
    click.option("--steps", type=int, default=None, help=f"Maximum steps per chain (0 = the init-only control).  [default: {_S.steps}]"),
    click.option("--step-size", type=FINITE, default=None,
                 help=f"SGLD eta (pixel change per unit gradient), or PGD step length in pixels.  [default: sgld calibrated by --drift; pgd L2 {_PGD_L2_STEP:g} x sqrt(D/3072), Linf 2/255]"),
    click.option("--drift", type=FINITE, default=None, help=f"SGLD without --step-size: eta is set per chain so its first drift step moves pixels by this rms.  [default: {_S.drift:g}]"),
    click.option("--noise", type=FINITE, default=None, help=f"SGLD noise std in pixel units.  [default: {_S.noise:g}]"),
    click.option("--momentum", type=FINITE, default=None, help=f"SGLD momentum m.  [default: {_S.momentum:g}]"),
    click.option("--eps", type=EpsType(), default=None, help="PGD: radius of the ball around x0 (pixels, e.g. 16/255, or an L2 radius like 2.0). Default: no ball."),
    click.option("--norm", type=click.Choice(NORMS), default=_S.norm, show_default=True, is_eager=True, help="PGD step and ball norm."),
    click.option("--energy", type=click.Choice(ENERGIES), default=_S.energy, show_default=True, help="joint E(x,y), cross-entropy, or E(x,y) + w E(x)."),
    click.option("--spectrum", type=FINITE, default=None,
                 help=f"Scale each spatial frequency of the gradient by the training images' amplitude spectrum to this power (0 = plain gradient).  [default: {_S.spectrum:g}]"),
    click.option("--smooth", type=FINITE, default=None, help="Gaussian low-pass of the gradient, std in pixels per 32 of image height.  [default: off]"),
    click.option("--jitter", type=FINITE, default=None, help="Read the gradient at x shifted by up to this many pixels per 32 of height (per chain and step).  [default: off]"),
    click.option("--flip/--no-flip", default=None, help="Read the gradient at a randomly mirrored x on half the steps.  [default: off]"),
    click.option("--quantile", type=FINITE, default=None, help=f"Adaptive: stop once E(x,y) <= this quantile of real training images' E(x,y).  [default: {_T.quantile:g}]"),
    click.option("--marginal-quantile", type=FINITE, default=None, help="Adaptive: also require E(x) <= this quantile of real images' E(x).  [default: off]"),
    click.option("--patience", type=int, default=None, help=f"Adaptive: stop after this many steps without improvement.  [default: {_T.patience}]"),
    click.option("--k", type=int, default=None, help=f"local-pca: neighbourhood size.  [default: {_I.k}]"),
    click.option("--variance", type=FINITE, default=None, help=f"pca/local-pca: fraction of variance kept.  [default: {_I.variance:g}]"),
    click.option("--components", type=int, default=None, help="pca/local-pca: keep exactly this many components (overrides --variance)."),
    click.option("--scale", type=FINITE, default=None, help=f"pca/local-pca: scale in units of each component's std.  [default: {_I.scale:g}]"),
    click.option("--neighbour-space", type=click.Choice(NEIGHBOUR_SPACES), default=None,
                 help=f"local-pca: space of the neighbour search (auto: pixels up to 64x64x3, the model's penultimate features above).  [default: {_I.neighbour_space}]"),
    click.option("--resolution", type=int, default=None,
                 help="gaussian: fit at this image height in pixels and upsample (Santurkar et al.).  [default: full up to 64x64x3, height/4 above (224 -> 56)]"),
    click.option("--batch-size", type=int, default=250, show_default=True, help="Chains on the device at once."),
    click.option("--refill/--no-refill", default=True, show_default=True, help="Continuous batching: new chains take the slots of stopped ones (same images either way)."),
    click.option("--precision", type=click.Choice(["auto", "fp32", "bf16"]), default="auto", show_default=True,
                 help="auto: bf16 where the hardware runs it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32; bf16: autocast + channels_last "
                      "for the model's body (energies stay fp32). Judged quality is the same (README: sampling precision)."),
    click.option("--compile", type=click.Choice(list(COMPILE_MODES)), default="off", show_default=True,
                 help="torch.compile the chains' model (auto: only for long runs; ~1 min to compile on CPU; images then match eager ones to rounding)."),
    click.option("--seed", type=int, default=0, show_default=True),
)


def _apply(options):
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


model_options = _apply(MODEL_OPTIONS)
knob_options = _apply(KNOB_OPTIONS)


def configs(options: dict) -> tuple[InitConfig, SamplerConfig, StopConfig]:
    """The three sampling configs from the CLI options (unset options keep the dataclass defaults)."""
    init = _config(InitConfig, kind=options["init_kind"], k=options["k"], variance=options["variance"], components=options["components"],
                   scale=options["scale"], neighbour_space=options["neighbour_space"], resolution=options["resolution"])
    sampler = _config(SamplerConfig, kind=options["sampler_kind"], steps=options["steps"], step_size=options["step_size"], drift=options["drift"],
                      noise=options["noise"], momentum=options["momentum"], eps=options["eps"], norm=options["norm"], energy=options["energy"],
                      spectrum=options["spectrum"], smooth=options["smooth"], jitter=options["jitter"], flip=options["flip"])
    stop = _config(StopConfig, rule=options["stop_rule"], quantile=options["quantile"], marginal_quantile=options["marginal_quantile"],
                   patience=options["patience"])
    return init, sampler, stop


def model_arguments(options: dict) -> dict:
    """Keyword arguments of sample_from_checkpoint/sweep that say which model and data."""
    return {**{key: options[key] for key in ("device", "dataset", "data_root", "model_dir", "trust_checkpoint", "mean", "std")},
            "check": check_mode(options["strict"])}


def run_arguments(options: dict) -> dict:
    """Keyword arguments that say how chains run (not what they compute, except precision)."""
    return {key: options[key] for key in ("batch_size", "refill", "precision", "compile")}


def _config(cls, **options):
    return cls(**{key: value for key, value in options.items() if value is not None})

