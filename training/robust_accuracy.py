"""`evaluate_model`: clean and robust accuracy of any model spec on its own test split (what `robustgen eval` runs).

    from training.robust_accuracy import EvalConfig, evaluate_model
    result = evaluate_model("robustbench:cifar10/Linf/Wong2020Fast", config=EvalConfig(attack="autoattack", subset=1000),
                            data="npz:cifar10.npz")
    result["clean_acc"], result["robust_acc"], result["attack_label"]

PGD-50-10 by default (DESIGN section 2): 50 steps, 10 restarts, step 2.5 eps / steps, on the full test split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.threat import check_norm, parse_eps

PGD_STEPS = 50  # the usual "PGD-50-10" robust accuracy
PGD_RESTARTS = 10


@dataclass(frozen=True)
class EvalConfig:
    attack: str = "pgd"  # pgd | autoattack (standard) | a comma list of apgd-ce, apgd-dlr, apgd-t, fab, fab-t, square
    steps: int | None = None  # PGD steps (None: PGD_STEPS); AutoAttack: APGD/FAB iterations (None: 100)
    restarts: int | None = None  # PGD restarts (None: PGD_RESTARTS); AutoAttack: APGD/FAB restarts (None: the version's)
    eps: str | float | None = None  # radius in pixel units, 8/255 or 0.031 (None: the model's training / threat-model eps)
    norm: str | None = None  # Linf | L2 (None: the model's, else Linf)
    step_size: str | float | None = None  # PGD step in pixel units (None: 2.5 eps / steps)
    subset: int | None = None  # a fixed seeded subset of this many test images (None: all)
    batch_size: int = 256  # images per batch (AutoAttack: per resumable chunk)
    state: str | None = None  # AutoAttack resume file (None: one per evaluation under $ROBUSTGEN_CACHE/autoattack)
    seed: int = 0

    @property
    def pgd(self) -> bool:
        return self.attack.strip().lower() == "pgd"

    def validate(self) -> tuple[str, ...] | None:
        """Check everything that needs no model; returns AutoAttack's attacks (None: PGD or the standard version)."""
        from training.autoattack_accuracy import parse_attacks

        attacks = None if self.pgd else parse_attacks(self.attack)
        low = 0 if self.pgd else 1
        if (self.steps is not None and self.steps < low) or (self.restarts is not None and self.restarts < 1) \
                or (self.subset is not None and self.subset < 1) or self.batch_size < 1:
            raise RobustgenError(f"--steps must be >= {low}, --restarts, --subset and --batch-size >= 1")
        if self.norm is not None:
            check_norm(self.norm)
        if self.state is not None and self.pgd:
            raise RobustgenError("--state is AutoAttack's resume file and PGD evaluation keeps none: drop --state, or use --attack autoattack")
        for value, option in ((self.eps, "--eps"), (self.step_size, "--step-size")):  # the Linf bound waits for the model's norm
            if value is not None:
                parse_eps(value, norm=self.norm, name=option)
        return attacks


def evaluate_model(
    spec, *, config: EvalConfig = EvalConfig(), data: str | None = None, data_root: str | os.PathLike | None = None,
    model_dir: str | os.PathLike | None = None, trust_checkpoint: bool = False, mean=None, std=None, device: str = "auto", progress: bool = True,
    check: str = "off",
) -> dict:
    """Clean and robust accuracy of `spec` (any `load_classifier` spec) on the test split of `data` (default: its own dataset).

    The result holds clean_acc, robust_acc, n, eps, norm, attack_label and what was evaluated (checkpoint, source,
    dataset, epoch, weights_sha256, notes), plus AutoAttack's own checks when it ran. check: "warn"/"strict", the
    loader's clean-accuracy check of a foreign model (robustgen.kernel.models.sanity).
    """
    from robustgen.kernel.data import conversion_note
    from robustgen.kernel.models.model_data import EVALUATING, model_dataset
    from robustgen.kernel.models.sanity import flush_warnings
    from robustgen.kernel.models.sources import load_classifier

    attacks = config.validate()
    model, meta = load_classifier(spec, device=device, model_dir=model_dir, trust_checkpoint=trust_checkpoint, mean=mean, std=std, data=data,
                                  data_root=data_root, check=check)
    trained = meta.get("config") or {}
    norm = config.norm or trained.get("norm") or "Linf"
    eps = parse_eps(config.eps, norm=norm, name="--eps") if config.eps is not None else trained.get("eps")
    if eps is None:
        raise RobustgenError(f"{spec} does not record its threat model's eps: pass --eps (e.g. 8/255)")
    dataset = model_dataset(meta, data=data, data_root=data_root, purpose=EVALUATING, model=str(spec))
    flush_warnings()  # model and data are read and checked: a near-chance warning now, before the attack runs
    result = _attack(model, dataset, config, attacks=attacks, eps=eps, norm=norm, progress=progress)
    result.update(checkpoint=str(spec), source=meta.get("source"), dataset=dataset.name, epoch=meta.get("epoch"),
                  weights_sha256=meta.get("weights_sha256"), notes=[*meta.get("notes", []), *filter(None, [conversion_note(dataset)])])
    return result


def _attack(model, dataset, config: EvalConfig, *, attacks, eps: float, norm: str, progress: bool) -> dict:
    if config.pgd:
        from training.pgd_accuracy import evaluate_robustness

        steps = PGD_STEPS if config.steps is None else config.steps
        restarts = PGD_RESTARTS if config.restarts is None else config.restarts
        step_size = parse_eps(config.step_size, norm=norm, name="--step-size") if config.step_size is not None else None
        result = evaluate_robustness(model, dataset, eps=eps, norm=norm, steps=steps, restarts=restarts, step_size=step_size,
                                     subset=config.subset, batch_size=config.batch_size, seed=config.seed, progress=progress)
        return {**result, "attack_label": f"PGD-{steps}-{restarts}"}
    from training.autoattack_accuracy import evaluate_autoattack

    return evaluate_autoattack(model, dataset, eps=eps, norm=norm, attacks=attacks, steps=config.steps, restarts=config.restarts,
                               subset=config.subset, batch_size=config.batch_size, seed=config.seed, state_path=config.state or "auto",
                               progress=progress)
