"""A model's calibrated chain: run the calibration (`calibrate`), store it, and find it again when sampling.

    record = calibrate("runs/x/best.pt", judge=ModelSpec("python:r20.py:resnet20=w.th", mean=..., std=...))
    found = find_calibration(model_sha256, checkpoint="runs/x/best.pt")        # None: no calibration
    init, sampler, stop = calibrated_configs(found)

The record (JSON) holds the chosen chain, every candidate's held-out numbers, the criterion,
the judge and its hash, the held-out split's size, the model's hash, and what it cost. It lives at
`<cache>/calibration/<model sha256>.json`, and beside a robustgen checkpoint as `calibration.json`
(used only while the checkpoint's hash matches the one recorded).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import atomic_write_json, default_cache_dir, ensure_writable_dir, now_iso, versions
from samplers import calibration as cal
from samplers.config import InitConfig, RunOptions, SamplerConfig, StopConfig
from samplers.from_checkpoint import ModelSource
from samplers.initializers.images import refuse_training_images
from samplers.scoring import result as keys

CALIBRATION_FILE = "calibration.json"
NEAR_COPIES = keys.KEY_NEAR_COPY_FRACTION_PIXEL


@dataclass(frozen=True)
class Candidate:
    """One chain read off a trajectory: its configs and, per chain, the step it stops at."""

    name: str
    init: InitConfig
    sampler: SamplerConfig
    stop: StopConfig
    trajectory: int  # index into the trajectories
    stopped_at: np.ndarray  # (n,) frame index of each chain's final image


def trajectory_plans(data_shape: tuple[int, int, int], config: cal.CalibrationConfig, seeds: str | None) -> list[tuple[InitConfig, SamplerConfig]]:
    """(init, sampler) of every trajectory, at most cal.MAX_TRAJECTORIES: today's local-pca start at the first step size,
    the seed images at each blur, then local-pca at the other step sizes."""
    scale = (int(np.prod(data_shape)) / 3072) ** 0.5  # the L2 step rule of SamplerConfig.resolved_step_size

    def chain(step: float) -> SamplerConfig:
        return replace(SamplerConfig(), step_size=step * scale, steps=config.max_steps)

    first, *others = config.step_sizes
    plans = [(InitConfig(), chain(first))]
    if seeds:
        init = InitConfig(**InitConfig.parse_kind(seeds))
        init = replace(init, source=_absolute(init.source))  # the record is read from other working directories
        plans += [(replace(init, blur=blur), chain(config.seed_step_size)) for blur in config.seed_blurs]
    plans += [(InitConfig(), chain(step)) for step in others]
    return plans[: cal.MAX_TRAJECTORIES]


def _absolute(spec: str) -> str:
    """A folder:/npz: spec with its path made absolute (a split suffix kept); other specs as they are."""
    for prefix in ("folder:", "npz:"):
        if spec.startswith(prefix):
            return prefix + str(Path(spec[len(prefix):]).expanduser().absolute())
    return spec


def candidates(trajectories: list[cal.Trajectory], thresholds: dict[float, np.ndarray], config: cal.CalibrationConfig) -> list[Candidate]:
    """Every fixed length and adaptive stop of every trajectory, plus today's default and the init-only control."""
    rows, n = [], len(trajectories[0].labels)
    for k, tr in enumerate(trajectories):
        label = f"{tr.init.label()}{f', blur {tr.init.blur:g}' if tr.init.blur else ''}, L2 step {tr.sampler.step_size:.3g}"
        rows.append(Candidate(f"{label}, 0 steps", tr.init, replace(tr.sampler, steps=0), StopConfig(rule="fixed"), k, np.zeros(n, dtype=np.int64)))
        for steps in (s for s in config.fixed_steps if s <= config.max_steps):
            rows.append(Candidate(f"{label}, fixed {steps}", tr.init, replace(tr.sampler, steps=steps), StopConfig(rule="fixed"), k,
                                  np.full(n, steps, dtype=np.int64)))
        for q in config.quantiles:
            stop = StopConfig(quantile=q)
            rows.append(Candidate(f"{label}, adaptive q {q:g} (at most {config.max_steps})", tr.init, tr.sampler, stop, k,
                                  cal.stop_step(tr, stop, thresholds[q], config.max_steps)))
    default = _default_candidate(trajectories, thresholds)
    return rows + ([default] if default is not None else [])


def _default_candidate(trajectories: list[cal.Trajectory], thresholds: dict[float, np.ndarray]) -> Candidate | None:
    """Today's default chain, when a trajectory runs it (local-pca at the default step size, long enough)."""
    init, sampler, stop = InitConfig(), SamplerConfig(), StopConfig()
    for k, tr in enumerate(trajectories):
        same_step = np.isclose(tr.sampler.step_size, sampler.resolved_step_size(int(np.prod(tr.frames.shape[2:]))))
        if tr.init == init and same_step and tr.sampler.steps >= sampler.steps and stop.quantile in thresholds:
            return Candidate(cal.DEFAULT_NAME, init, sampler, stop, k, cal.stop_step(tr, stop, thresholds[stop.quantile], sampler.steps))
    return None


def candidate_images(row: Candidate, trajectories: list[cal.Trajectory]) -> np.ndarray:
    """The final image of each of the candidate's chains, read off its trajectory."""
    tr = trajectories[row.trajectory]
    return tr.frames[row.stopped_at, np.arange(len(tr.labels))]


def judge_candidates(rows: list[Candidate], trajectories: list[cal.Trajectory], judge: cal.Judge, reference, chains: np.ndarray | None = None) -> list[dict]:
    """Each candidate's judged numbers against the held-out reference (on `chains` only, if given) and its mean steps
    (near-copies: see choose)."""
    out = []
    for row in rows:
        tr = trajectories[row.trajectory]
        pick = chains if chains is not None else np.arange(len(tr.labels))
        metrics = cal.judged_metrics(judge, candidate_images(row, trajectories)[pick], tr.labels[pick], reference)
        out.append({"name": row.name, "init": row.init.label(), "step_size": row.sampler.step_size, "stop": row.stop.rule,
                    "quantile": row.stop.quantile if row.stop.rule == "adaptive" else None, "max_steps": row.sampler.steps,
                    "steps_mean": float(row.stopped_at.mean()), "chains_judged": int(len(pick)), **metrics})
    return out


def finalists(rows: list[Candidate], screened: list[dict], config: cal.CalibrationConfig) -> list[int]:
    """Who is judged on all chains: every start (0 steps), today's default, and the `config.finalists` lowest-FID screened
    chains that meet the accuracy, recall and start rules (choose's rules, on the screening numbers)."""
    always = [i for i, r in enumerate(rows) if r.sampler.steps == 0 or r.name == cal.DEFAULT_NAME]
    ranked = [i for i in rule_abiding(rows, screened, config) if i not in always]
    return sorted(always + sorted(ranked, key=lambda i: screened[i][keys.KEY_FID])[: config.finalists])


def screen_chains(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """`count` chains, the same share of every class, drawn with `seed` (all chains if there are no more)."""
    if count >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    share = count / len(labels)
    picked = [rng.choice(np.flatnonzero(labels == c), max(1, round(share * (labels == c).sum())), replace=False) for c in np.unique(labels)]
    return np.sort(np.concatenate(picked))


def _init_only(rows: list[Candidate], judged: list[dict]) -> dict:
    return next(j for r, j in zip(rows, judged) if r.init == InitConfig() and r.sampler.steps == 0)  # today's start, no step


def rule_abiding(rows: list[Candidate], judged: list[dict], config: cal.CalibrationConfig) -> list[int]:
    """Chains (with steps) whose judge accuracy beats init-only's by min_accuracy_gain, whose recall is at least init-only's,
    and whose own start is judged at most max_start_gain above init-only's."""
    base = _init_only(rows, judged)
    starts = {r.trajectory: j[keys.KEY_JUDGE_ACCURACY] for r, j in zip(rows, judged) if r.sampler.steps == 0}
    return [i for i, (r, j) in enumerate(zip(rows, judged)) if r.sampler.steps > 0
            and j[keys.KEY_JUDGE_ACCURACY] >= base[keys.KEY_JUDGE_ACCURACY] + config.min_accuracy_gain
            and j[keys.KEY_RECALL] >= base[keys.KEY_RECALL]
            and starts[r.trajectory] <= base[keys.KEY_JUDGE_ACCURACY] + config.max_start_gain]


def choose(rows: list[Candidate], judged: list[dict], config: cal.CalibrationConfig,
           near_copies: Callable[[int], float] | None = None) -> tuple[int, str]:
    """(index of the chosen candidate, why), by cal.CRITERION. Near-copies (a nearest-neighbour search over the training
    images, the dearest measure) are measured only as needed, in FID order, by `near_copies(i)`; without it, read from `judged`."""
    base = _init_only(rows, judged)
    ok = rule_abiding(rows, judged, config)
    for rank, i in enumerate(sorted(ok, key=lambda i: judged[i][keys.KEY_FID])):
        if near_copies is not None:
            judged[i][NEAR_COPIES] = near_copies(i)
        if judged[i].get(NEAR_COPIES, 0.0) <= config.max_near_copies:
            return i, f"{len(ok)} of {len(rows)} chains met the accuracy, recall and start rules; the lowest FID of those with near-copies <= {config.max_near_copies:.0%} ({rank + 1} checked)"
    default = next((i for i, r in enumerate(rows) if r.name == cal.DEFAULT_NAME), None)
    if default is None:
        raise RobustgenError("no chain met the calibration criterion and the default was not among the candidates: raise --max-steps to 8 or more")
    if judged[default][keys.KEY_FID] <= base[keys.KEY_FID]:
        return default, "no chain met the criterion: today's default kept"
    start = next(i for i, j in enumerate(judged) if j is base)
    return start, "no chain met the criterion and today's default is less realistic than its start: the start alone (the model adds nothing here)"


# --------------------------------------------------------------------------- the run


def calibrate(checkpoint, *, judge, config: cal.CalibrationConfig = cal.CalibrationConfig(), seeds: str | None = None,
              run: RunOptions | None = None, source: ModelSource = ModelSource(), cache_dir=None, progress: bool = True,
              log: Callable[[str], None] = print) -> dict:
    """Choose the chain for the model `checkpoint` (any spec) by cal.CRITERION; store and return the record.

    judge: an independent classifier spec (a ModelSpec carries its --judge-mean/--judge-std). seeds: "images:SPEC" to
    also try real-image seeds. run: n samples per candidate, the seed of the held-out split and the chains, and how they
    run (RunOptions). The record is written to the cache (by the model's hash) and beside a robustgen checkpoint.
    """
    from robustgen.kernel.device import resolve_precision, with_precision
    from robustgen.kernel.models import model_fingerprint
    from samplers.from_checkpoint import load_for_sampling

    run = run if run is not None else RunOptions()
    config.validate()
    run.validate()
    if seeds is not None and not InitConfig.parse_kind(seeds).get("source"):
        raise RobustgenError(f"--init {seeds}: calibration tries real-image seeds given as --init images:SPEC")
    started, t0 = now_iso(), time.perf_counter()
    model, meta, data, _ = load_for_sampling(checkpoint, source=source, run=run)
    model_hash = model_fingerprint(model)  # before precision: the key sampling looks the calibration up by
    fit = cal.split_held_out(data, config, seed=run.seed)
    view = cal.load_judge_view(judge, data=source.dataset or meta.get("dataset"), input_shape=data.image_shape,
                               device=next(model.parameters()).device, model_sha256=meta.get("weights_sha256"))
    model = with_precision(model, resolve_precision(run.precision, next(model.parameters()).device))
    plans = trajectory_plans(data.image_shape, config, seeds)
    for init, _ in plans:  # seeds the model was trained on are refused against the whole training split, not only the fit part
        init.validate()
        if init.kind == "images":
            refuse_training_images(data, init.source, data.x_train, whose="the model")
    trajectories = [cal.record_trajectory(model, fit, init, sampler, n=run.n, seed=run.seed, cache_dir=cache_dir, model_hash=model_hash,
                                          batch_size=run.batch_size, progress=progress) for init, sampler in plans]
    thresholds = _thresholds(model, fit, trajectories[0].labels, config, cache_dir=cache_dir, model_hash=model_hash)
    rows = candidates(trajectories, thresholds, config)
    reference, _ = view.view(fit.x_test)
    screened = judge_candidates(rows, trajectories, view, reference, chains=screen_chains(trajectories[0].labels, config.screen, run.seed))
    final = finalists(rows, screened, config)
    judged = judge_candidates([rows[i] for i in final], trajectories, view, reference)
    copies = cal.CopyCheck.fit(fit, view.device)
    pick, why = choose([rows[i] for i in final], judged, config,
                       near_copies=lambda k: copies.fraction(candidate_images(rows[final[k]], trajectories), view.device))
    if NEAR_COPIES not in judged[pick]:  # the fallbacks' too, for the record
        judged[pick][NEAR_COPIES] = copies.fraction(candidate_images(rows[final[pick]], trajectories), view.device)
    record = _record(rows[final[pick]], judged, pick, why, screened=screened, config=config, run=run, checkpoint=checkpoint, meta=meta,
                     model_hash=model_hash, judge=view, fit=fit, started=started, seconds=time.perf_counter() - t0,
                     trajectory_seconds=[t.seconds for t in trajectories])
    for path in save_calibration(record, checkpoint=checkpoint, cache_dir=cache_dir):
        log(f"wrote {path}")
    return record


def _thresholds(model, fit, labels: np.ndarray, config: cal.CalibrationConfig, *, cache_dir, model_hash: str) -> dict[float, np.ndarray]:
    """Per chain (n, 2) stop thresholds for every quantile tried (and the default's), from the fit part's real energies."""
    from samplers.stopping import reference_energies, stop_thresholds

    fingerprint = fit.fingerprint()  # a hash of the whole fit part: once, not per class
    references = {c: reference_energies(model, fit, c, cache_dir=cache_dir, model_hash=model_hash, dataset_fingerprint=fingerprint)
                  for c in sorted(set(labels.tolist()))}
    out = {}
    for q in sorted({*config.quantiles, StopConfig().quantile}):
        per_class = {c: stop_thresholds(ref, StopConfig(quantile=q)) for c, ref in references.items()}
        out[q] = np.asarray([per_class[int(c)] for c in labels], dtype=np.float32)
    return out


def _record(row: Candidate, judged: list[dict], chosen: int, why: str, *, screened: list[dict], config, run, checkpoint, meta, model_hash, judge, fit, started,
            seconds: float, trajectory_seconds: list[float]) -> dict:
    return {
        "model_sha256": model_hash, "checkpoint": str(checkpoint), "weights_sha256": meta.get("weights_sha256"),
        "chosen": {"name": row.name, "init": asdict(row.init), "sampler": asdict(row.sampler), "stop": asdict(row.stop), "held_out_metrics": judged[chosen]},
        "why": why, "criterion": cal.CRITERION, "config": asdict(config), "run": asdict(run), "candidates": judged, "screened": screened,
        "judge": judge.extractor.checkpoint, "judge_sha256": judge.extractor.checkpoint_sha256,
        "held_out": {"images": int(len(fit.y_test)), "fit_images": int(len(fit.y_train)), "dataset": fit.name},
        "seconds": seconds, "trajectory_seconds": trajectory_seconds, "started": started, "finished": now_iso(), "versions": versions(),
    }


def cache_path(model_hash: str, cache_dir=None) -> Path:
    return Path(cache_dir if cache_dir not in (None, False) else default_cache_dir()) / "calibration" / f"{model_hash}.json"


def beside_checkpoint(checkpoint) -> Path | None:
    """calibration.json beside a robustgen checkpoint in a run dir (config.json there), else None."""
    path = Path(str(checkpoint)).expanduser()
    return path.parent / CALIBRATION_FILE if path.is_file() and (path.parent / "config.json").is_file() else None


def save_calibration(record: dict, *, checkpoint, cache_dir=None) -> list[Path]:
    paths = [p for p in (cache_path(record["model_sha256"], cache_dir), beside_checkpoint(checkpoint)) if p is not None]
    for path in paths:
        ensure_writable_dir(path.parent)
        atomic_write_json(path, record)
    return paths


def find_calibration(model_hash: str, *, checkpoint=None, cache_dir=None) -> tuple[dict, Path] | None:
    """(record, where) of the model's calibration: beside its checkpoint, else in the cache; None if there is none
    (a record whose model hash differs, or that cannot be read, is ignored)."""
    import json

    for path in (beside_checkpoint(checkpoint) if checkpoint is not None else None, cache_path(model_hash, cache_dir)):
        if path is None or not path.is_file():
            continue
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(record, dict) and record.get("model_sha256") == model_hash and isinstance(record.get("chosen"), dict):
            return record, path
    return None


def calibrated_configs(record: dict) -> tuple[InitConfig, SamplerConfig, StopConfig]:
    """The chosen chain's three configs (validated: a hand-edited record fails in one line)."""
    chosen = record["chosen"]
    try:
        configs = InitConfig(**chosen["init"]), SamplerConfig(**chosen["sampler"]), StopConfig(**chosen["stop"])
    except (TypeError, KeyError) as exc:
        raise RobustgenError(f"the calibration record is not one robustgen wrote ({exc}): rerun robustgen calibrate or pass --no-calibration") from None
    for c in configs:
        c.validate()
    return configs


def describe(record: dict) -> str:
    """One line: which chain the calibration chose."""
    c = record["chosen"]
    stop = f"fixed {c['sampler']['steps']} steps" if c["stop"]["rule"] == "fixed" else f"adaptive q {c['stop']['quantile']:g}, at most {c['sampler']['steps']} steps"
    init = InitConfig(**c["init"]).label() + (f", blur {c['init']['blur']:g}" if c["init"].get("blur") else "")
    step = c["sampler"]["step_size"]
    k = f" k {c['init']['k']}" if c["init"]["kind"] == "local-pca" else ""
    size = "default" if step is None else f"{step:.3g}"
    return f"init {init}{k}, L2 step {size}, {stop}"
