"""`robustgen eval`: clean and robust accuracy of any model source, under PGD-k-r or AutoAttack."""

from __future__ import annotations

import click

from robustgen.cli.common import apply_options, check_mode, echo_json, format_table, strict_option, user_errors
from robustgen.kernel.errors import RobustgenError
from samplers.config import RunOptions
from training.attacks.pgd import default_pgd_step_size
from training.robust_accuracy import PGD_RESTARTS, PGD_STEPS, EvalConfig

_RUN = RunOptions()


_EVAL = EvalConfig()

OPTIONS = (
    click.option("--checkpoint", "checkpoint_option", default=None, metavar="SPEC", help="Same as the SPEC argument."),
    click.option("--attack", default=_EVAL.attack, show_default=True,
                 help="pgd | autoattack (standard: APGD-CE, APGD-T, FAB-T, Square) | a comma list of apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square."),
    click.option("--steps", type=int, default=None, help=f"PGD steps [default: {PGD_STEPS}]; AutoAttack: APGD/FAB iterations [default: pyautoattack's 100]."),
    click.option("--restarts", type=int, default=None, help=f"PGD restarts [default: {PGD_RESTARTS}]; AutoAttack: APGD/FAB restarts [default: the version's]."),
    click.option("--eps", default=None, metavar="EPS", help="Attack radius, e.g. 8/255 [default: the model's training / RobustBench threat eps]."),
    click.option("--norm", default=None, help="Linf or L2 [default: the model's]."),
    click.option("--step-size", default=None, metavar="EPS", help=f"PGD step [default: {default_pgd_step_size.__doc__.split(' (')[0]}]."),
    click.option("--subset", type=int, default=None, help="Evaluate on a fixed seeded subset of N test images [default: all]."),
    click.option("--batch-size", type=int, default=_EVAL.batch_size, show_default=True, help="Images per batch (AutoAttack: per resumable chunk)."),
    click.option("--state", default=None, metavar="PATH",
                 help="AutoAttack state file; rerunning resumes from it [default: one per evaluation under $ROBUSTGEN_CACHE/autoattack]."),
    click.option("--data", "--dataset", "data", default=None, metavar="SPEC", help="Dataset to evaluate on (e.g. npz:PATH, folder:PATH) [default: the model's own]."),
    click.option("--data-root", default=None, help="Where the model's dataset lives [default: as recorded]."),
    click.option("--model-dir", default=None, type=click.Path(file_okay=False),
                 help="Where zoo files live (RobustBench layout DATASET/THREAT/NAME.pt) [default: $ROBUSTGEN_MODEL_DIR, else ~/.cache/robustgen/models]."),
    click.option("--trust-checkpoint", is_flag=True, help="Allow fully unpickling a third-party file (only for files you trust: it can run code)."),
    click.option("--mean", default=None, metavar="M1,M2,M3",
                 help="Input normalisation mean of torchvision:/timm: (default ImageNet's) and python:/torchscript:/export: networks (default none)."),
    click.option("--std", default=None, metavar="S1,S2,S3", help="Input normalisation std (as --mean)."),
    click.option("--judge", default=None, metavar="SPEC",
                 help="Also measure generative strength: classifier-only (Santurkar) samples judged by this independent standard classifier (any model spec)."),
    click.option("--judge-n", type=int, default=None, help=f"Classifier-only samples drawn for --judge (all classes, balanced).  [default: {_RUN.n}]"),
    click.option("--judge-mean", default=None, metavar="M1,M2,M3", help="Input normalisation mean of a python:/torchscript:/export: --judge."),
    click.option("--judge-std", default=None, metavar="S1,S2,S3", help="Input normalisation std of the --judge (as --judge-mean)."),
    click.option("--device", default=_RUN.device, show_default=True),
    click.option("--seed", type=int, default=_EVAL.seed, show_default=True),
    click.option("--json", "as_json", is_flag=True, help="Print the result as JSON."),
    strict_option,
)


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("spec", metavar="[SPEC]", required=False)
@apply_options(OPTIONS)
@user_errors
def evaluate(spec, checkpoint_option, data, data_root, model_dir, trust_checkpoint, mean, std, judge, judge_n, judge_mean, judge_std, device,
             as_json, strict, **attack):
    """Clean and robust accuracy of SPEC on its dataset's test split (PGD-50-10 by default).

    SPEC is a robustgen checkpoint path, robustbench:DATASET/THREAT/NAME, robustness:PATH,
    torchvision:ARCH=PATH, timm:ARCH=PATH, python:FILE.py:FACTORY=WEIGHTS (your network's code:
    FACTORY() returns it, WEIGHTS its state dict), python:package.module:FACTORY=WEIGHTS,
    torchscript:PATH or export:PATH.pt2. The last four take their classes and input size from --data.

    \b
    Examples:
      robustgen eval runs/cifar10-fgsm-rs-der/best.pt
      robustgen eval robustbench:cifar10/Linf/Wong2020Fast --attack autoattack --subset 1000 --data npz:cifar10.npz
      robustgen eval --checkpoint robustness:imagenet_linf_4.pt --data folder:imagenet --attack apgd-ce,apgd-t --subset 100
      robustgen eval python:nets.py:resnet20=resnet20.th --data npz:cifar10.npz --mean 0.485,0.456,0.406 --std 0.229,0.224,0.225 --eps 2/255
      robustgen eval runs/cifar10-generation/best.pt --judge python:nets.py:resnet20=resnet20.th --judge-mean 0.4914,0.4822,0.4465 --judge-std 0.247,0.243,0.261

    With --judge, also prints the model's generative strength: how often an independent classifier
    recognises the model's classifier-only samples (Santurkar et al.: Gaussian start, 60 plain steps),
    with their FID / precision / recall against the test split in the judge's features.
    """
    from training.robust_accuracy import evaluate_model

    if spec and checkpoint_option and spec != checkpoint_option:
        raise RobustgenError(f"two models given ({spec} and --checkpoint {checkpoint_option}): pass one")
    spec = spec or checkpoint_option
    if not spec:
        raise RobustgenError("no model given: robustgen eval SPEC (a checkpoint path or e.g. robustbench:cifar10/Linf/Wong2020Fast)")
    config = EvalConfig(**attack)  # attack, steps, restarts, eps, norm, step_size, subset, batch_size, state, seed: EvalConfig's own names
    config.validate()  # before the judge and the model are read
    judge_spec = _judge_spec(judge, judge_n, judge_mean, judge_std, data=data, check=check_mode(strict))  # a bad judge fails before the attack
    loading = dict(data=data, data_root=data_root, model_dir=model_dir, trust_checkpoint=trust_checkpoint, mean=mean, std=std, device=device)
    result = evaluate_model(spec, config=config, progress=not as_json, check=check_mode(strict), **loading)
    if judge_spec is not None:
        from samplers.from_checkpoint import ModelSource
        from samplers.strength import generative_strength

        run = RunOptions(**{k: v for k, v in {"n": judge_n, "seed": config.seed, "device": device}.items() if v is not None})
        source = ModelSource(dataset=data, data_root=data_root, model_dir=model_dir, trust_checkpoint=trust_checkpoint, mean=mean, std=std)
        result["generative_strength"] = generative_strength(spec, judge=judge_spec, run=run, source=source, progress=not as_json)
    if as_json:
        echo_json(result)
        return
    _print_result(result, spec=spec)
    if judge_spec is not None:
        click.echo(strength_line(result["generative_strength"]))


def _judge_spec(judge, judge_n: int, judge_mean, judge_std, *, data, check: str):
    """The --judge as a ModelSpec, loaded once now so that a bad one fails before the attack runs; None without --judge."""
    if judge is None:
        if judge_mean or judge_std:
            raise RobustgenError("--judge-mean/--judge-std describe a --judge: add --judge SPEC, or drop them")
        return None
    if judge_n is not None and judge_n < 1:
        raise RobustgenError(f"--judge-n {judge_n} must be at least 1 sample")
    import torch

    from robustgen.kernel.models.classes import JUDGE_FLAGS
    from robustgen.kernel.models.sources import ModelSpec
    from samplers.scoring.extractors import load_judge

    spec = ModelSpec(judge, mean=judge_mean, std=judge_std, flags=JUDGE_FLAGS, option="--judge", check=check)
    load_judge(spec, device=torch.device("cpu"), data=data)  # the judge is also the feature extractor: one read checks both
    return spec


def strength_line(strength: dict) -> str:
    """One line: how well an independent judge recognises the model's classifier-only samples."""
    return (f"generative strength (classifier-only samples, Santurkar; n={strength['n']}, judged by {strength['judge']}): "
            f"judge acc {strength['judge_accuracy']:.3f} (chance {strength['chance']:.3f}), FID (test) {strength['fid_test']:.2f}, "
            f"precision {strength['precision_test']:.3f}, recall {strength['recall_test']:.3f}")


def _print_result(result: dict, *, spec: str) -> None:
    """The RobustBench-style table, then notes, resumption and AutoAttack's own checks."""
    label, norm, eps = result["attack_label"], result["norm"], result["eps"]
    click.echo(f"{spec}: {result['dataset']}, {result['n']} test images, {label} at {norm} eps {_eps_text(eps)}")
    row = {"clean acc": result["clean_acc"], f"{label} acc": result["robust_acc"], "n": result["n"], "attack": label,
           "eps": _eps_text(eps), "norm": norm}
    click.echo(format_table([row], list(row)))
    for note in result["notes"]:
        click.echo(f"note: {note}")
    if result.get("attack") == "pgd":
        return
    if result["resumed_chunks"]:
        click.echo(f"resumed {result['resumed_chunks']}/{result['chunks']} finished chunks from {result['state']}")
    if not result["within_eps"]:
        click.echo(f"warning: an adversarial example lies {result['max_perturbation']:.4g} from its image, outside eps {eps:.4g}")
    for message in result["warnings"]:
        click.echo(f"AutoAttack check: {message}")


def _eps_text(eps: float) -> str:
    """8/255 when eps is a whole number of grey levels, else the number."""
    levels = eps * 255
    return f"{round(levels)}/255" if abs(levels - round(levels)) < 1e-6 and 0 < levels < 255 else f"{eps:.4g}"
