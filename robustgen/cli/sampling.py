"""Options shared by `robustgen sample` and `robustgen sweep`: the model, its data, and every sampling knob.

Choice lists, defaults and the help's [default: ...] come from the dataclasses (samplers/config.py: InitConfig,
SamplerConfig, StopConfig, RunOptions). An option left unset is None here: a config none of whose options is
given comes from the model's calibration (or the dataclass defaults), so no default is written twice.
"""

from __future__ import annotations

import click

from robustgen.cli.common import FINITE, EpsType, apply_options, check_mode, strict_option
from robustgen.kernel.device import COMPILE_MODES, PRECISIONS
from samplers.config import ENERGIES, INITS, NEIGHBOUR_SPACES, NORMS, SAMPLERS, STOP_RULES, InitConfig, RunOptions, SamplerConfig, StopConfig

_I, _S, _T, _R = InitConfig(), SamplerConfig(), StopConfig(), RunOptions()
_PGD_L2_STEP = SamplerConfig(kind="pgd").resolved_step_size(3072)

class InitType(click.ParamType):
    """`--init`: one of INITS, or images:SPEC."""

    name = "INIT"

    def convert(self, value, param, ctx):
        parsed = InitConfig.parse_kind(str(value))
        if parsed["kind"] not in INITS or (parsed["kind"] == "images" and not parsed.get("source")):
            self.fail(f"{value!r} is not an init: choose one of {', '.join(k for k in INITS if k != 'images')}, or images:SPEC", param, ctx)
        return str(value)


MODEL_OPTIONS = (
    click.option("--checkpoint", required=True, metavar="SPEC",
                 help="best.pt written by `robustgen train`, or robustbench:DATASET/THREAT/NAME, robustness:PATH, torchvision:ARCH=PATH, timm:ARCH=PATH, "
                      "python:FILE.py:FACTORY=WEIGHTS, python:package.module:FACTORY=WEIGHTS, torchscript:PATH, export:PATH.pt2."),
    click.option("--device", default=None, help=f"auto (cuda:LOCAL_RANK under torchrun, else cuda, mps or cpu), cpu, cuda, cuda:N.  [default: {_R.device}]"),
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
    click.option("--init", "init_kind", type=InitType(), default=None,
                 help=f"Where chains start: {', '.join(k for k in INITS if k != 'images')}, or images:SPEC (real images of dataset SPEC as seeds, "
                      f"dealt to classes at random; a flat folder: works; SPEC@test takes one split).  [default: {_I.kind}]"),
    click.option("--sampler", "sampler_kind", type=click.Choice(SAMPLERS), default=None, help=f"How chains move.  [default: {_S.kind}]"),
    click.option("--stop", "stop_rule", type=click.Choice(STOP_RULES), default=None,
                 help=f"adaptive: stop in the energy band of real data or when no longer improving; fixed: run all steps.  [default: {_T.rule}]"),
    click.option("--steps", type=int, default=None, help=f"Maximum steps per chain (0 = the init-only control).  [default: {_S.steps}]"),
    click.option("--step-size", type=FINITE, default=None,
                 help=f"SGLD eta (pixel change per unit gradient), or PGD step length in pixels.  [default: sgld calibrated by --drift; pgd L2 {_PGD_L2_STEP:g} x sqrt(D/3072), Linf 2/255]"),
    click.option("--drift", type=FINITE, default=None, help=f"SGLD without --step-size: eta is set per chain so its first drift step moves pixels by this rms.  [default: {_S.drift:g}]"),
    click.option("--noise", type=FINITE, default=None, help=f"SGLD noise std in pixel units.  [default: {_S.noise:g}]"),
    click.option("--momentum", type=FINITE, default=None, help=f"SGLD momentum m.  [default: {_S.momentum:g}]"),
    click.option("--eps", type=EpsType(), default=None, help="PGD: radius of the ball around x0 (pixels, e.g. 16/255, or an L2 radius like 2.0). Default: no ball."),
    click.option("--norm", type=click.Choice(NORMS), default=None, is_eager=True, help=f"PGD step and ball norm.  [default: {_S.norm}]"),
    click.option("--energy", type=click.Choice(ENERGIES), default=None, help=f"joint E(x,y), cross-entropy, or E(x,y) + w E(x).  [default: {_S.energy}]"),
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
    click.option("--blur", type=FINITE, default=None,
                 help=f"Gaussian low-pass of every start, std in pixels per 32 of image height (calibration tries 1 on real-image seeds).  [default: {_I.blur:g}]"),
    click.option("--resolution", type=int, default=None,
                 help="gaussian: fit at this image height in pixels and upsample (Santurkar et al.).  [default: full up to 64x64x3, height/4 above (224 -> 56)]"),
    *(RUN_OPTIONS := (
        click.option("--batch-size", type=int, default=None, help=f"Chains on the device at once.  [default: {_R.batch_size}]"),
        click.option("--refill/--no-refill", default=None, help=f"Continuous batching: new chains take the slots of stopped ones (same images either way).  [default: {'refill' if _R.refill else 'no-refill'}]"),
        click.option("--precision", type=click.Choice(["auto", *PRECISIONS]), default=None,
                     help="auto: bf16 where the hardware runs it natively (CUDA, AVX512-BF16/AMX CPUs), else fp32; bf16: autocast + channels_last "
                          f"for the model's body (energies stay fp32). Judged quality is the same (README: sampling precision).  [default: {_R.precision}]"),
        click.option("--compile", type=click.Choice(list(COMPILE_MODES)), default=None,
                     help=f"torch.compile the chains' model (auto: only for long runs; ~1 min to compile on CPU; images then match eager ones to rounding).  [default: {_R.compile}]"),
        click.option("--seed", type=int, default=None, help=f"Chain i draws its randomness from (seed, i).  [default: {_R.seed}]"),
    )),
)

NUM_IMAGES = click.option("--num-images", "-n", "--n", "n", type=int, default=None,
                          help=f"Number of images in total (under torchrun write --num-images or -n: torchrun reads --n as its own --nnodes).  [default: {_R.n}]")


model_options = apply_options(MODEL_OPTIONS)
knob_options = apply_options(KNOB_OPTIONS)


CALIBRATION_OPTION = click.option(
    "--calibration/--no-calibration", "use_calibration", default=True, show_default=True,
    help="Use the model's calibrated chain (robustgen calibrate) for every config (init / sampler / stop) none of whose options you pass.")


def configs(options: dict) -> tuple[InitConfig | None, SamplerConfig | None, StopConfig | None]:
    """The three sampling configs from the CLI options: a config none of whose options is passed is None (the model's
    calibrated one, else the dataclass defaults); one with options passed keeps the dataclass defaults for the rest."""
    kind = InitConfig.parse_kind(options["init_kind"]) if options["init_kind"] else {}
    init = _config(InitConfig, **kind, k=options["k"], variance=options["variance"], components=options["components"],
                   scale=options["scale"], neighbour_space=options["neighbour_space"], resolution=options["resolution"], blur=options["blur"])
    sampler = _config(SamplerConfig, kind=options["sampler_kind"], steps=options["steps"], step_size=options["step_size"], drift=options["drift"],
                      noise=options["noise"], momentum=options["momentum"], eps=options["eps"], norm=options["norm"], energy=options["energy"],
                      spectrum=options["spectrum"], smooth=options["smooth"], jitter=options["jitter"], flip=options["flip"])
    stop = _config(StopConfig, rule=options["stop_rule"], quantile=options["quantile"], marginal_quantile=options["marginal_quantile"],
                   patience=options["patience"])
    return init, sampler, stop


def model_source(options: dict):
    """Which model and data the command samples from (samplers.from_checkpoint.ModelSource), with its --strict check."""
    from samplers.from_checkpoint import ModelSource

    given = {key: options[key] for key in ("dataset", "data_root", "model_dir", "trust_checkpoint", "mean", "std")}
    return ModelSource(**given, check=check_mode(options["strict"]))


def run_options(options: dict) -> RunOptions:
    """How chains run, from the CLI options (unset ones keep RunOptions' defaults)."""
    given = {key: options.get(key) for key in ("n", "seed", "batch_size", "refill", "precision", "compile", "device")}
    return RunOptions(**{key: value for key, value in given.items() if value is not None})


def _config(cls, **options):
    given = {key: value for key, value in options.items() if value is not None}
    return cls(**given) if given else None

