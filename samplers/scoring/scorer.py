"""`score()`: inputs and reference, checks, one feature-extraction stage, metrics, per class, judge, memorisation.

Each stage is a function of what the previous ones produced:

    resolve inputs (samples, reference splits)  ->  check shapes, labels and counts
    -> extract features once (samples; reference splits from robustgen's cache)
    -> IS/FID/KID/PRC and FID vs the test split (torch-fidelity's functions on the features)
    -> class-conditional FID (features + labels) -> judge accuracy -> memorisation -> ScoreResult
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from robustgen.kernel import distributed
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.models.sanity import flush_warnings
from samplers.scoring.extractors import INCEPTION, Extractor, resolve_extractor
from samplers.scoring.features import ReferenceFeatures
from samplers.scoring.inputs import ImageSet, Reference, load_samples
from samplers.scoring.metrics import DEFAULT_KID_SUBSET_SIZE, IS_SPLITS, PRC_NEIGHBORHOOD, RNG_SEED, MetricSettings
from samplers.scoring.per_class import ClassScore, JudgeResult
from samplers.scoring.result import (
    _FIDELITY_KEYS,
    DEFAULT_METRICS,
    KEY_CLASS_FID_MEAN,
    KEY_FID,
    KEY_FID_TEST,
    KEY_JUDGE_ACCURACY,
    KEY_KID_MEAN,
    KEY_PRECISION,
    KEY_PRECISION_TEST,
    KEY_RECALL,
    KEY_RECALL_TEST,
    MEMORISATION_KEYS,
    SCORE_FILE,
    ScoreResult,
    memorisation_metrics,
    parse_metrics,
)


def score(
    samples: str | os.PathLike | ImageSet | np.ndarray,
    *,
    ref: str | None = None,
    ref_split: str = "train",
    metrics: str | tuple[str, ...] = DEFAULT_METRICS,
    features: str | os.PathLike = INCEPTION,
    inception_weights: str | os.PathLike | None = None,
    judge: str | os.PathLike | None = None,
    per_class: bool = True,
    labels: np.ndarray | None = None,
    batch_size: int = 200,
    device: str = "auto",
    data_root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    cache: bool = True,
    kid_subset_size: int | None = None,
    is_splits: int = IS_SPLITS,
    memorisation: bool = True,
    verbose: bool = False,
) -> ScoreResult:
    """Score `samples` (run dir, .npz, image folder or uint8 NHWC array) against `ref`.

    ref: dataset spec ("digits", "cifar10", "npz:PATH", "folder:PATH"); None = the
        dataset named in the sample run's meta.json / checkpoint.
    ref_split: the split FID/KID/PRC compare against ("train": comparable with papers).
        FID, precision and recall against the test split (`fid_test`, `precision_test`, `recall_test`) come too, where it has one.
    features: "inception" (torch-fidelity inception-v3-compat) or any classifier spec `load_classifier` takes
        (a robustgen checkpoint, robustbench:, ..., python:FILE.py:FACTORY=WEIGHTS; a ModelSpec carries --mean/--std).
    judge: a classifier spec (as features) whose accuracy on the samples (w.r.t. their labels) is reported.
    kid_subset_size: None = torch-fidelity's 1000, lowered (with a warning) when fewer images exist.
    is_splits: IS is the mean (± std) over this many splits (10, as in papers).
    memorisation: nearest-training-image distances, near-copies and C_T (needs the reference's
        train and test splits; see samplers.scoring.memorisation).
    """
    wanted = parse_metrics(metrics)
    if batch_size < 1:
        raise RobustgenError(f"--batch-size {batch_size}: must be at least 1")
    found = _Findings()
    sample_set = load_samples(samples, labels=labels)
    extractor = resolve_extractor(features, inception_weights=inception_weights, data=ref, data_root=data_root,  # fails fast (e.g. offline Inception)
                                  input_shape=sample_set.image_shape)
    dev = distributed.setup(device).device  # under torchrun: this rank's device (cuda:LOCAL_RANK or cpu)
    inputs = _resolve_inputs(sample_set, ref=ref, ref_split=ref_split, data_root=data_root, wanted=wanted, found=found)
    _check_inputs(inputs, extractor, found)
    memorise = _can_memorise(inputs, memorisation, found)
    settings = MetricSettings(is_splits=is_splits, verbose=verbose, kid_subset_size=_check_counts(
        wanted, n=len(inputs.samples), n_ref=len(inputs.reference or ()), extractor=extractor, is_splits=is_splits,
        kid_subset_size=kid_subset_size, warnings=found.warnings))
    judge_model = _load_judge(inputs, judge, device=dev, found=found, data_root=data_root)  # every model is read before anything is written
    flush_warnings()  # near-chance --features/--judge (robustgen.kernel.models.sanity): said now, before the features are extracted
    cache_root = _cache_root(cache, cache_dir)
    feats = _extract(inputs, extractor, wanted=wanted, memorise=memorise, cache_dir=cache_root, batch_size=batch_size, device=dev, progress=verbose)
    values = _metrics(inputs, feats, wanted=wanted, settings=settings, extractor=extractor, found=found)
    class_rows = _class_fids(inputs, feats, wanted=wanted, per_class=per_class, extractor=extractor, values=values, found=found)
    judged = _judge(inputs, judge, judge_model, batch_size=batch_size, values=values, found=found)
    memo = _memorise(inputs, feats, extractor=extractor, cache_dir=cache_root, device=dev, found=found) if memorise else None
    values.update(memorisation_metrics(memo) if memo is not None else {})
    run = dict(wanted=wanted, batch_size=batch_size, device=dev, settings=settings, memorisation=memorise)
    return _assemble(inputs, extractor, feats, values=values, class_rows=class_rows, judged=judged, memo=memo, found=found, run=run)


def default_output(samples: str | os.PathLike) -> Path | None:
    """Where score.json goes by default: inside a sample run dir (None for other inputs)."""
    path = Path(samples).expanduser()
    return path / SCORE_FILE if path.is_dir() and (path / "samples.npz").is_file() else None


# --------------------------------------------------------------------------- inputs and checks


@dataclass
class _Findings:
    warnings: list[str] = field(default_factory=list)  # things that change what a number means
    notes: list[str] = field(default_factory=list)  # things left out, and why


@dataclass(frozen=True, eq=False)
class _Inputs:
    samples: ImageSet  # labels mapped onto the reference's classes
    reference: Reference | None  # the split FID/KID/PRC compare against (--ref-split)
    splits: dict[str, Reference]  # every non-empty split of the reference dataset


def _resolve_inputs(sample_set: ImageSet, *, ref, ref_split, data_root, wanted, found: _Findings) -> _Inputs:
    """The reference dataset (given, or named by the sample run) and its splits."""
    from robustgen.kernel.models.model_data import check_same_data
    from samplers.scoring.inputs import load_reference_splits, reference_from_meta, relabel_by_class_names, sampled_model_meta

    if ref_split not in ("train", "test"):
        raise RobustgenError(f"unknown reference split {ref_split!r}: use train or test")
    binary = [m for m in wanted if m != "is"]
    from_meta = ref is None
    if ref is None:
        meta_ref = reference_from_meta(sample_set)
        if meta_ref is None and binary:
            raise RobustgenError(f"no reference for {', '.join(m.upper() for m in binary)}: pass --ref DATASET (e.g. --ref digits, --ref npz:data.npz)")
        if meta_ref is None:
            return _Inputs(sample_set, None, {})
        ref, meta_root = meta_ref
        data_root = data_root if data_root is not None else meta_root
    try:
        splits = load_reference_splits(ref, data_root=data_root, model_meta=sampled_model_meta(sample_set) if from_meta else None)
    except RobustgenError as exc:
        if binary or not from_meta:
            raise
        found.notes.append(f"IS needs no reference; the sample run's dataset could not be loaded for checks ({exc})")
        return _Inputs(sample_set, None, {})
    if ref_split not in splits:
        raise RobustgenError(f"reference {ref} has no {ref_split} images: choose the other --ref-split")
    reference = splits[ref_split]
    if from_meta:
        found.notes.append(f"reference {ref} taken from the sample run's metadata")
    seen = sample_set.meta.get("dataset_sha256")
    if isinstance(seen, str) and sample_set.meta.get("dataset") == reference.spec:
        check_same_data(reference.spec, recorded=seen, found=reference.fingerprint, used="the samples were drawn with")
    return _Inputs(relabel_by_class_names(sample_set, reference.classes), reference, splits)


def _check_inputs(inputs: _Inputs, extractor: Extractor, found: _Findings) -> None:
    samples, reference = inputs.samples, inputs.reference
    _check_shapes(samples, reference, extractor)
    if reference is not None and samples.labels is not None and int(samples.labels.max()) >= len(reference.classes):
        raise RobustgenError(
            f"{samples.source}: label {int(samples.labels.max())} but the reference {reference.spec} has classes 0..{len(reference.classes) - 1}: "
            "score against the dataset the samples were drawn for"
        )
    _note_extractor_origin(extractor, samples, reference, found.warnings, found.notes)


def _can_memorise(inputs: _Inputs, requested: bool, found: _Findings) -> bool:
    if not requested:
        return False
    if inputs.reference is None:
        found.notes.append("memorisation not measured: it needs the reference dataset's training images (pass --ref DATASET)")
        return False
    missing = [split for split in ("train", "test") if split not in inputs.splits]
    if missing:
        role = "the real held-out images it is measured against" if missing == ["test"] else "the images it searches"
        found.notes.append(f"memorisation not measured: {inputs.reference.spec} has no {' or '.join(missing)} split, {role}")
        return False
    return True


def _cache_root(cache: bool, cache_dir) -> Path | None:
    from samplers.scoring.feature_cache import resolve_cache_dir

    return resolve_cache_dir(cache_dir) if cache else None


# --------------------------------------------------------------------------- features


@dataclass(frozen=True, eq=False)
class _Features:
    samples: dict[str, torch.Tensor]  # layer -> (N, D)
    reference: dict[str, ReferenceFeatures]  # split -> features of that split
    layers: dict[str, str]  # metric ("is", "fid", ...) -> layer


def _extract(inputs: _Inputs, extractor: Extractor, *, wanted, memorise: bool, cache_dir, batch_size: int, device, progress: bool) -> _Features:
    """The one extraction stage: samples always, reference splits as the metrics and memorisation need them."""
    from samplers.scoring.features import build_network, extract_features, metric_layer, reference_features

    layers = {m: metric_layer(extractor, m) for m in ("is", "fid", "kid", "prc")}
    sample_layers = {layers[m] for m in wanted} | ({layers["fid"]} if memorise else set())
    per_split: dict[str, set[str]] = {split: set() for split in inputs.splits}
    if inputs.reference is not None:
        per_split[inputs.reference.split] |= {layers[m] for m in wanted if m != "is"}
        if "test" in per_split:  # fid_test, precision_test, recall_test
            per_split["test"] |= {layers[m] for m in ("fid", "prc") if m in wanted}
        if memorise:
            per_split["train"].add(layers["fid"])
            per_split["test"].add(layers["fid"])
    network = build_network(extractor, layers=sorted(sample_layers.union(*per_split.values())), device=device, verbose=progress)
    sample_feats = extract_features(network, inputs.samples.images, channels=extractor.channels, batch_size=batch_size, device=device, progress=progress)
    reference = {
        split: reference_features(inputs.splits[split], network=network, extractor=extractor, layers=sorted(needed), cache_dir=cache_dir,
                                  batch_size=batch_size, device=device, progress=progress)
        for split, needed in per_split.items() if needed
    }
    return _Features(sample_feats, reference, layers)


# --------------------------------------------------------------------------- metrics


def _metrics(inputs: _Inputs, feats: _Features, *, wanted, settings: MetricSettings, extractor: Extractor, found: _Findings) -> dict[str, float]:
    """IS, FID (ref split and test split), KID, precision/recall, with torch-fidelity's functions."""
    from samplers.scoring import metrics as fm

    raw: dict[str, float] = {}
    mine = feats.samples
    if "is" in wanted:
        raw.update(fm.inception_score(mine[feats.layers["is"]], settings))
    binary = [m for m in wanted if m != "is"]
    theirs = feats.reference[inputs.reference.split].features if binary else {}
    if "fid" in wanted:
        raw["frechet_inception_distance"] = fm.frechet_distance(mine[feats.layers["fid"]], theirs[feats.layers["fid"]], verbose=settings.verbose)
    if "kid" in wanted:
        raw.update(fm.kernel_distance(mine[feats.layers["kid"]], theirs[feats.layers["kid"]], settings))
    if "prc" in wanted:
        raw.update(fm.precision_recall(mine[feats.layers["prc"]], theirs[feats.layers["prc"]], settings))
    values = {_FIDELITY_KEYS[k]: float(v) for k, v in raw.items() if k in _FIDELITY_KEYS}
    if "kid" in wanted and values.get(KEY_KID_MEAN, 0.0) < 0:
        found.notes.append("KID slightly below 0 is valid (unbiased estimator): the two sets are very similar")
    if "fid" in wanted:
        _fid_test(inputs, feats, values=values, extractor=extractor, found=found)
    if "prc" in wanted:
        _prc_test(inputs, feats, values=values, settings=settings)
    return values


def _fid_test(inputs: _Inputs, feats: _Features, *, values: dict, extractor: Extractor, found: _Findings) -> None:
    """FID against the test split beside the paper-comparable FID (the same number when --ref-split test)."""
    test = inputs.splits.get("test")
    if test is None:
        found.notes.append(f"fid_test not computed: the reference {inputs.reference.spec} has no test split")
        return
    if inputs.reference.split == "test":
        values[KEY_FID_TEST] = values[KEY_FID]
        return
    if len(test) < 2:
        found.notes.append(f"fid_test not computed: the test split of {test.spec} has {len(test)} image (FID needs >= 2)")
        return
    from samplers.scoring.metrics import frechet_distance

    layer = feats.layers["fid"]
    values[KEY_FID_TEST] = frechet_distance(feats.samples[layer], feats.reference["test"].features[layer])
    if len(test) <= extractor.feature_dim:
        found.warnings.append(_rank_warning(len(test), "test-split images", extractor.feature_dim, metric="fid_test"))


def _prc_test(inputs: _Inputs, feats: _Features, *, values: dict, settings: MetricSettings) -> None:
    """Precision and recall against the test split beside those against --ref-split (the same numbers when it is test)."""
    from samplers.scoring.metrics import precision_recall

    test = inputs.splits.get("test")
    if inputs.reference.split == "test":
        values[KEY_PRECISION_TEST], values[KEY_RECALL_TEST] = values[KEY_PRECISION], values[KEY_RECALL]
    elif test is not None and len(test) > settings.prc_neighborhood:
        layer = feats.layers["prc"]
        prc = precision_recall(feats.samples[layer], feats.reference["test"].features[layer], settings)
        values[KEY_PRECISION_TEST], values[KEY_RECALL_TEST] = float(prc["precision"]), float(prc["recall"])


# --------------------------------------------------------------------------- per class, judge, memorisation


def _class_fids(inputs: _Inputs, feats: _Features, *, wanted, per_class: bool, extractor: Extractor, values: dict, found: _Findings) -> dict[int, dict]:
    """Class-conditional FID from the features already extracted: class index -> {n_reference, fid, note}."""
    from samplers.scoring.per_class import class_fids_from_features

    labels, reference = inputs.samples.labels, inputs.reference
    if not (per_class and "fid" in wanted and reference is not None):
        return {}
    if labels is None:
        found.notes.append("the samples carry no labels: per-class FID and judge accuracy need them (samples.npz `labels`, or one sub-folder per class)")
        return {}
    layer = feats.layers["fid"]
    fids = class_fids_from_features(sample_features=feats.samples[layer], sample_labels=labels, ref_features=feats.reference[reference.split].features[layer],
                                    ref_labels=reference.labels, classes=reference.classes)
    computed = [fid for fid, _, _ in fids.values() if fid is not None]
    if computed:
        values[KEY_CLASS_FID_MEAN] = float(np.mean(computed))
    rows, small = {}, []
    for k, (fid, m, note) in fids.items():
        rows[k] = {"n_reference": m, "fid": fid, "note": note}
        if note:
            found.notes.append(f"class-conditional FID for class {reference.classes[k]} {note}")
        elif min(int((labels == k).sum()), m) <= extractor.feature_dim:
            small.append(reference.classes[k])
    if small:
        found.warnings.append(
            f"class-conditional FID for {len(small)} class(es) has <= {extractor.feature_dim} images on one side (rank-deficient covariance): "
            "read it only relative to other sample sets of the same per-class size"
        )
    return rows


def _load_judge(inputs: _Inputs, judge, *, device, found: _Findings, data_root=None):
    """(model, meta, sha256) of the judge, read and checked before any feature is extracted (a bad file fails first)."""
    if judge is None:
        return None
    if inputs.samples.labels is None:
        if not any("samples carry no labels" in n for n in found.notes):
            found.notes.append("the samples carry no labels: per-class FID and judge accuracy need them (samples.npz `labels`, or one sub-folder per class)")
        return None
    from samplers.scoring.extractors import load_judge
    from samplers.scoring.per_class import check_judge

    data = inputs.reference.spec if inputs.reference is not None else None  # a python:/torchscript:/export: judge's classes and input size
    model, meta, sha = load_judge(judge, device=device, data=data, data_root=data_root, input_shape=inputs.samples.image_shape)
    check_judge(meta, image_shape=inputs.samples.image_shape, labels=inputs.samples.labels, path=str(judge))
    return model, meta, sha


def _judge(inputs: _Inputs, judge, loaded, *, batch_size: int, values: dict, found: _Findings) -> tuple[JudgeResult, dict] | None:
    """Accuracy of an independent classifier on the samples w.r.t. their intended labels: (result, judge meta)."""
    if loaded is None:
        return None
    from samplers.scoring.per_class import judge_accuracy

    model, meta, sha = loaded
    if _sampling_checkpoint_sha(inputs.samples) == sha:
        found.warnings.append("the judge is the classifier that generated the samples: its accuracy measures how far the sampler pushed its logits, "
                              "not whether the images look like their class to another model; use an independent --judge")
    result = judge_accuracy(model, images=inputs.samples.images, labels=inputs.samples.labels, batch_size=batch_size, checkpoint=str(judge), sha256=sha)
    values[KEY_JUDGE_ACCURACY] = result.accuracy
    return result, meta


def _memorise(inputs: _Inputs, feats: _Features, *, extractor: Extractor, cache_dir, device, found: _Findings):
    """Nearest-training-image distances in pixels and FID features, against the real test images'."""
    from samplers.scoring.feature_cache import training_side_key
    from samplers.scoring.memorisation import KMEANS_SEED, measure_memorisation, number_of_cells

    train, test = inputs.splits["train"], inputs.splits["test"]
    layer = feats.layers["fid"]
    converted = f"-ch{extractor.channels}" if train.image_shape[0] != extractor.channels else ""
    cells = number_of_cells(len(test))
    keys = {space: training_side_key(train.fingerprint, space=name, n_cells=cells, seed=KMEANS_SEED)
            for space, name in (("pixels", "pixels"), ("features", f"{extractor.name}{converted}"))}
    memo = measure_memorisation(
        sample_images=inputs.samples.images, sample_features=feats.samples[layer], train_images=train.images,
        train_features=feats.reference["train"].features[layer], test_images=test.images, test_features=feats.reference["test"].features[layer],
        keys=keys, cache_dir=cache_dir, device=device,
    )
    for name in memo.repaired:
        found.notes.append(f"score cache entry {name} was unreadable: recomputed and replaced")
    for space in memo.spaces.values():
        if space.test_in_train:
            found.warnings.append(f"{space.test_in_train} of {len(test)} test images of {test.spec} are at distance 0 from a training image in "
                                  f"{space.space}: the splits share images, which weakens the memorisation yardstick")
    return memo


# --------------------------------------------------------------------------- the result


def _assemble(inputs: _Inputs, extractor: Extractor, feats: _Features, *, values, class_rows, judged, memo, found: _Findings, run: dict) -> ScoreResult:
    from robustgen.kernel.io import now_iso, versions

    reference, settings = inputs.reference, run["settings"]
    for split_features in feats.reference.values():
        found.notes.extend(f"score cache entry {name} was unreadable: recomputed and replaced" for name in split_features.repaired)
    judge_result, judge_meta = judged if judged else (None, {})
    names = reference.classes if reference is not None else judge_meta.get("classes")
    return ScoreResult(
        metrics=values,
        extractor=extractor,
        samples=inputs.samples.source,
        n_samples=len(inputs.samples),
        reference=reference.spec if reference is not None else None,
        reference_split=reference.split if reference is not None else None,
        n_reference=len(reference) if reference is not None else 0,
        reference_fingerprint=reference.fingerprint if reference is not None else None,
        reference_cached=bool(reference is not None and reference.split in feats.reference and feats.reference[reference.split].cached),
        per_class=_class_scores(inputs.samples.labels, class_rows, judge_result, names),
        judge=judge_result,
        warnings=tuple(found.warnings),
        notes=tuple(found.notes),
        settings={"metrics": list(run["wanted"]), "batch_size": run["batch_size"], "device": str(run["device"]), "rng_seed": RNG_SEED,
                  "is_splits": settings.is_splits, "kid_subset_size": settings.kid_subset_size, "prc_neighborhood": PRC_NEIGHBORHOOD,
                  "memorisation": run["memorisation"]},
        created=now_iso(),
        versions=versions(),
        splits=_splits(values, reference),
        n_reference_test=len(inputs.splits["test"]) if "test" in inputs.splits else None,
        memorisation=memo,
    )


def _splits(values: dict, reference: Reference | None) -> dict[str, str]:
    """Which reference split each reported number was measured against."""
    if reference is None:
        return {}
    memorisation = {key for keys in MEMORISATION_KEYS.values() for key in keys}
    out = {}
    for key in values:
        if key in (KEY_FID_TEST, KEY_PRECISION_TEST, KEY_RECALL_TEST):
            out[key] = "test"
        elif key in memorisation:
            out[key] = "train (nearest neighbours), test (real held-out yardstick)"
        elif key not in ("is_mean", "is_std", KEY_JUDGE_ACCURACY):
            out[key] = reference.split
    return out


def _class_scores(labels, class_rows: dict, judge_result: JudgeResult | None, names) -> tuple[ClassScore, ...]:
    if labels is None or not (class_rows or judge_result):
        return ()
    rows = []
    for k in np.unique(labels).tolist():
        info = class_rows.get(k, {})
        rows.append(ClassScore(
            class_index=k, class_name=str(names[k]) if names and k < len(names) else str(k), n_samples=int((labels == k).sum()),
            n_reference=info.get("n_reference"), fid=info.get("fid"), judge_accuracy=judge_result.per_class.get(k) if judge_result else None,
            note=info.get("note"),
        ))
    return tuple(rows)


# --------------------------------------------------------------------------- checks


def _rank_warning(count: int, who: str, dim: int, *, metric: str = "FID") -> str:
    return (f"{metric} with {count} {who} <= {dim} feature dims: the covariance is rank-deficient (rank <= {count - 1}), "
            f"so FID is biased upward and only comparable between sets of the same size; use more than {dim} (papers: 10k-50k)")


def _check_counts(wanted, *, n: int, n_ref: int, extractor: Extractor, is_splits: int, kid_subset_size: int | None, warnings: list[str]) -> int | None:
    """Refuse counts a metric cannot use; warn where a number needs reading with care. Returns the KID subset size."""
    if "is" in wanted:
        if is_splits < 1 or n < is_splits:
            raise RobustgenError(f"IS on {n} samples in {is_splits} splits: it needs at least one sample per split; generate more samples or drop is from --metrics")
        if extractor.kind == "inception" and n < 5000:
            warnings.append(f"IS on {n} samples: papers use 50,000 in 10 splits; fewer samples bias IS low, so compare only with IS at the same n")
        per_split, k = n // is_splits, len(extractor.classes or ())
        if extractor.kind == "classifier" and k and per_split < 5 * k:
            warnings.append(
                f"IS with {per_split} samples per split for {k} classes: each split's class marginal is noisy, which biases IS low "
                "(real digits test: 8.2 in 10 splits, 9.3 in 1); compare only IS at the same n and splits"
            )
    if "fid" in wanted:
        for who, count in (("samples", n), ("reference images", n_ref)):
            if count < 2:
                raise RobustgenError(f"FID on {count} {who}: it needs at least 2 (a covariance); generate more samples")
            if count <= extractor.feature_dim:
                warnings.append(_rank_warning(count, who, extractor.feature_dim))
    if "prc" in wanted:
        for who, count in (("samples", n), ("reference images", n_ref)):
            if count <= PRC_NEIGHBORHOOD:
                raise RobustgenError(f"precision/recall on {count} {who}: it needs more than {PRC_NEIGHBORHOOD} (k-NN radius); generate more samples or drop prc")
    return _kid_subset(kid_subset_size, n, n_ref, warnings) if "kid" in wanted else None


def _kid_subset(requested: int | None, n: int, n_ref: int, warnings: list[str]) -> int:
    smallest = min(n, n_ref)
    if requested is not None:
        if requested < 2:
            raise RobustgenError(f"--kid-subset-size {requested}: must be at least 2")
        if requested > smallest:
            who = f"{n} samples" if n <= n_ref else f"{n_ref} reference images"
            raise RobustgenError(f"--kid-subset-size {requested} is larger than the {who}: pass --kid-subset-size {smallest} or less, or generate more samples")
        return requested
    if smallest < 2:
        raise RobustgenError(f"KID on {smallest} images: it needs at least 2 per side; generate more samples")
    if smallest < DEFAULT_KID_SUBSET_SIZE:
        warnings.append(
            f"KID subset size lowered from {DEFAULT_KID_SUBSET_SIZE} to {smallest} (only {smallest} images on one side): KID stays unbiased but is noisier; "
            "compare only KIDs with the same subset size (--kid-subset-size)"
        )
        return smallest
    return DEFAULT_KID_SUBSET_SIZE


def _shape(chw) -> str:
    c, h, w = chw
    return f"{h}x{w}x{c}"


def _channel_word(c: int) -> str:
    return {1: "grayscale (1 channel)", 3: "RGB (3 channels)"}.get(c, f"{c}-channel")


def _check_shapes(samples: ImageSet, reference: Reference | None, extractor: Extractor) -> None:
    c, h, w = samples.image_shape
    if reference is not None:
        rc, rh, rw = reference.image_shape
        if rc != c:
            raise RobustgenError(
                f"the samples are {_channel_word(c)} but the reference {reference.spec} is {_channel_word(rc)}: "
                "score against a reference with the same channels (the dataset the samples were drawn for)"
            )
        if (rh, rw) != (h, w):
            raise RobustgenError(
                f"the samples are {h}x{w} but the reference {reference.spec} is {rh}x{rw}: resize the samples to {rh}x{rw} or choose the matching --ref"
            )
    if extractor.input_shape is not None and tuple(extractor.input_shape) != (c, h, w):
        raise RobustgenError(
            f"{extractor.option} {extractor.checkpoint} takes {_shape(extractor.input_shape)} images but the samples are {_shape((c, h, w))}: "
            f"use a classifier trained on the samples' dataset{', or --features inception' if extractor.option == '--features' else ''}"
        )


def _sampling_checkpoint_sha(samples: ImageSet) -> str | None:
    """sha256 of the checkpoint that generated a sample run, if its meta.json says."""
    meta = samples.meta
    for key in ("checkpoint_sha256", "checkpoint_hash"):
        if isinstance(meta.get(key), str):
            return meta[key]
    ckpt = meta.get("checkpoint")
    if isinstance(ckpt, dict) and isinstance(ckpt.get("sha256"), str):
        return ckpt["sha256"]
    if isinstance(ckpt, str) and Path(ckpt).is_file():
        from robustgen.kernel.io import sha256_file

        return sha256_file(ckpt)
    return None


def _note_extractor_origin(extractor: Extractor, samples: ImageSet, reference: Reference | None, warnings: list[str], notes: list[str]) -> None:
    if extractor.kind != "classifier":
        return
    if extractor.checkpoint_sha256 and _sampling_checkpoint_sha(samples) == extractor.checkpoint_sha256:
        warnings.append(
            "the feature extractor is the classifier that generated the samples: its features reward its own adversarial patterns, "
            "so scores are optimistic; use an independent --features checkpoint"
        )
    if reference is not None and extractor.dataset and extractor.dataset != reference.spec:
        notes.append(f"the feature classifier was trained on {extractor.dataset}, the reference is {reference.spec}")
