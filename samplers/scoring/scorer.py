"""`score()`: choose inputs, extractor and cache keys, run torch-fidelity, add per-class results."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from robustgen.errors import RobustgenError
from samplers.scoring.extractors import INCEPTION, Extractor, resolve_extractor
from samplers.scoring.inputs import ImageSet, Reference, load_reference, load_samples
from samplers.scoring.per_class import ClassScore

from samplers.scoring.result import (
    _FIDELITY_KEYS,
    DEFAULT_KID_SUBSET_SIZE,
    DEFAULT_METRICS,
    IS_SPLITS,
    KEY_CLASS_FID_MEAN,
    KEY_JUDGE_ACCURACY,
    KEY_KID_MEAN,
    PRC_NEIGHBORHOOD,
    RNG_SEED,
    SCORE_FILE,
    ScoreResult,
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
    verbose: bool = False,
) -> ScoreResult:
    """Score `samples` (run dir, .npz, image folder or uint8 NHWC array) against `ref`.

    ref: dataset spec ("digits", "cifar10", "npz:PATH", "folder:PATH"); None = the
        dataset named in the sample run's meta.json / checkpoint.
    features: "inception" (torch-fidelity inception-v3-compat) or a robustgen checkpoint.
    judge: a robustgen checkpoint whose accuracy on the samples (w.r.t. their labels) is reported.
    kid_subset_size: None = torch-fidelity's 1000, lowered (with a warning) when fewer images exist.
    is_splits: IS is the mean (± std) over this many splits (10, as in papers).
    """
    from robustgen.device import resolve_device
    from robustgen.io import now_iso, versions
    from samplers.scoring import cache as score_cache
    from samplers.scoring.inputs import UInt8Images, reference_from_meta, relabel_by_class_names
    from samplers.scoring.per_class import check_judge, class_fids, class_fids_from_features, judge_accuracy

    wanted = parse_metrics(metrics)
    if batch_size < 1:
        raise RobustgenError(f"--batch-size {batch_size}: must be at least 1")
    sample_set = load_samples(samples, labels=labels)
    warnings: list[str] = []
    notes: list[str] = []

    extractor = resolve_extractor(features, inception_weights=inception_weights)  # fails fast (e.g. offline Inception)
    dev = resolve_device(device)

    binary = [m for m in wanted if m != "is"]
    need_reference = bool(binary)
    reference: Reference | None = None
    from_meta = False
    if ref is None:
        found = reference_from_meta(sample_set)
        if found is not None:
            ref, meta_root = found
            from_meta = True
            data_root = data_root if data_root is not None else meta_root
        elif need_reference:
            raise RobustgenError(f"no reference for {', '.join(m.upper() for m in binary)}: pass --ref DATASET (e.g. --ref digits, --ref npz:data.npz)")
    if ref is not None:
        try:
            reference = load_reference(ref, split=ref_split, data_root=data_root)
        except RobustgenError as exc:
            if need_reference or not from_meta:
                raise
            notes.append(f"IS needs no reference; the sample run's dataset could not be loaded for checks ({exc})")
        if reference is not None and from_meta:
            notes.append(f"reference {ref} taken from the sample run's metadata")
    if reference is not None:
        seen = sample_set.meta.get("dataset_sha256")
        if isinstance(seen, str) and sample_set.meta.get("dataset") == reference.spec and seen != reference.fingerprint:
            warnings.append(f"the reference {reference.spec} here differs (sha256) from the data the sampler used: check --data-root")

    _check_shapes(sample_set, reference, extractor)

    sample_labels = sample_set.labels
    if reference is not None:
        sample_set = relabel_by_class_names(sample_set, reference.classes)
        sample_labels = sample_set.labels
        if sample_labels is not None and int(sample_labels.max()) >= len(reference.classes):
            raise RobustgenError(
                f"{sample_set.source}: label {int(sample_labels.max())} but the reference {reference.spec} has classes 0..{len(reference.classes) - 1}: score against the dataset the samples were drawn for"
            )
    _note_extractor_origin(extractor, sample_set, reference, warnings, notes)

    n, n_ref = len(sample_set), (len(reference) if reference is not None else 0)
    settings = {
        "metrics": list(wanted),
        "batch_size": batch_size,
        "device": str(dev),
        "rng_seed": RNG_SEED,
        "is_splits": is_splits,
        "kid_subset_size": None,
        "prc_neighborhood": PRC_NEIGHBORHOOD,
    }
    settings["kid_subset_size"] = _check_counts(wanted, n=n, n_ref=n_ref, extractor=extractor, is_splits=is_splits,
                                                kid_subset_size=kid_subset_size, warnings=warnings)

    wants_class_fid = per_class and "fid" in wanted and reference is not None and sample_labels is not None
    # Class-conditional FID reuses the features of the overall call, which torch-fidelity writes to
    # its cache under names we choose; without a cache, a temporary one serves for this call only.
    scratch = tempfile.TemporaryDirectory(prefix="robustgen-score-") if (wants_class_fid and not cache) else None
    cache_root = score_cache.resolve_cache_dir(cache_dir) if cache else (Path(scratch.name) if scratch else None)
    fidelity_kwargs = {
        "feature_extractor": extractor.name,
        "feature_extractor_weights_path": extractor.weights_path,
        "batch_size": batch_size,
        "cuda": dev.type == "cuda",
        "verbose": verbose,
        "cache": cache_root is not None,
        "cache_root": str(cache_root) if cache_root else None,
        "save_cpu_ram": True,  # no DataLoader worker processes: the images are already in memory
        "rng_seed": RNG_SEED,
        "isc_splits": is_splits,
        "prc_neighborhood": PRC_NEIGHBORHOOD,
    }
    channels = extractor.channels

    def make_inputs(images):
        return UInt8Images(images, channels=channels)

    converted = channels if reference is not None and reference.image_shape[0] != channels else None

    def ref_key(class_index=None):
        return score_cache.reference_key(reference.fingerprint, reference.split, class_index, channels=converted)

    reference_cached = False
    values: dict[str, float] = {}
    call = {"isc": "is" in wanted, "fid": "fid" in wanted, "kid": "kid" in wanted, "prc": "prc" in wanted}
    if settings["kid_subset_size"] is not None:
        call["kid_subset_size"] = settings["kid_subset_size"]
    if binary:
        reference_cached = bool(cache) and score_cache.is_cached(cache_root, ref_key(), extractor.name, _layers(extractor, wanted))
        call.update(input2=make_inputs(reference.images), input2_cache_name=ref_key() if cache_root else None)
    sample_key = score_cache.samples_key(sample_set.images, channels=channels) if wants_class_fid else None
    if dev.type not in ("cpu", "cuda"):
        notes.append(f"torch-fidelity runs on CUDA or CPU: features were computed on the CPU, not {dev}")
    try:
        with _on_device(dev):
            raw = _calculate(input1=make_inputs(sample_set.images), input1_cache_name=sample_key, **call, **fidelity_kwargs)
        for key, value in raw.items():
            if key in _FIDELITY_KEYS:
                values[_FIDELITY_KEYS[key]] = float(value)
        if binary and cache:
            score_cache.describe(cache_root, ref_key(), extractor_name=extractor.name, dataset=reference.spec, split=reference.split, class_index=None, n=n_ref)
        if wants_class_fid:
            fid_layer = _layers(extractor, ("fid",))[0]
            sample_features = score_cache.load_features(cache_root, sample_key, extractor.name, fid_layer)
            ref_features = score_cache.load_features(cache_root, ref_key(), extractor.name, fid_layer)
    finally:
        if sample_key is not None:
            score_cache.forget(cache_root, sample_key)  # the cache holds references, not every sample set
        if scratch is not None:
            scratch.cleanup()
    if "kid" in wanted and values.get(KEY_KID_MEAN, 0.0) < 0:
        notes.append("KID slightly below 0 is valid (unbiased estimator): the two sets are very similar")

    # per class
    class_rows: dict[int, dict] = {}
    if sample_labels is None and ((per_class and "fid" in wanted and reference is not None) or judge is not None):
        notes.append("the samples carry no labels: per-class FID and judge accuracy need them (samples.npz `labels`, or one sub-folder per class)")
    if wants_class_fid:
        if sample_features is not None and ref_features is not None:
            fids = class_fids_from_features(
                sample_features=sample_features, sample_labels=sample_labels,
                ref_features=ref_features, ref_labels=reference.labels, classes=reference.classes,
            )
        else:  # torch-fidelity did not leave the features where expected: one call per class instead
            with _on_device(dev):
                fids = class_fids(
                    sample_images=sample_set.images,
                    sample_labels=sample_labels,
                    ref_images=reference.images,
                    ref_labels=reference.labels,
                    classes=reference.classes,
                    make_inputs=make_inputs,
                    fidelity_kwargs={**fidelity_kwargs, "cache": bool(cache), "cache_root": str(cache_root) if cache else None},
                    ref_key_for_class=(lambda k: ref_key(k) if cache else None),
                )
        computed = [fid for fid, _, _ in fids.values() if fid is not None]
        if computed:
            values[KEY_CLASS_FID_MEAN] = float(np.mean(computed))
        small = []
        for k, (fid, m, note) in fids.items():
            class_rows[k] = {"n_reference": m, "fid": fid, "note": note}
            if note:
                notes.append(f"class-conditional FID for class {reference.classes[k]} {note}")
            elif min(int((sample_labels == k).sum()), m) <= extractor.feature_dim:
                small.append(reference.classes[k])
        if small:
            warnings.append(
                f"class-conditional FID for {len(small)} class(es) has <= {extractor.feature_dim} images on one side (rank-deficient covariance): "
                "read it only relative to other sample sets of the same per-class size"
            )
    judge_result = None
    if judge is not None and sample_labels is not None:
        from samplers.scoring.extractors import load_judge

        model, judge_meta, judge_sha = load_judge(judge, device=dev)
        check_judge(judge_meta, image_shape=sample_set.image_shape, labels=sample_labels, path=str(judge))
        if _sampling_checkpoint_sha(sample_set) == judge_sha:
            warnings.append("the judge is the classifier that generated the samples: its accuracy measures how far the sampler pushed its logits, not whether the images look like their class to another model; use an independent --judge")
        judge_result = judge_accuracy(model, images=sample_set.images, labels=sample_labels, batch_size=batch_size, checkpoint=str(judge), sha256=judge_sha)
        values[KEY_JUDGE_ACCURACY] = judge_result.accuracy

    per_class_scores = ()
    if sample_labels is not None and (class_rows or judge_result):
        names = reference.classes if reference is not None else (judge_meta.get("classes") if judge_result else None)
        rows = []
        for k in np.unique(sample_labels).tolist():
            info = class_rows.get(k, {})
            rows.append(
                ClassScore(
                    class_index=k,
                    class_name=str(names[k]) if names and k < len(names) else str(k),
                    n_samples=int((sample_labels == k).sum()),
                    n_reference=info.get("n_reference"),
                    fid=info.get("fid"),
                    judge_accuracy=judge_result.per_class.get(k) if judge_result else None,
                    note=info.get("note"),
                )
            )
        per_class_scores = tuple(rows)

    return ScoreResult(
        metrics=values,
        extractor=extractor,
        samples=sample_set.source,
        n_samples=n,
        reference=reference.spec if reference is not None else None,
        reference_split=reference.split if reference is not None else None,
        n_reference=n_ref,
        reference_fingerprint=reference.fingerprint if reference is not None else None,
        reference_cached=reference_cached,
        per_class=per_class_scores,
        judge=judge_result,
        warnings=tuple(warnings),
        notes=tuple(notes),
        settings=settings,
        created=now_iso(),
        versions=versions(),
    )


def default_output(samples: str | os.PathLike) -> Path | None:
    """Where score.json goes by default: inside a sample run dir (None for other inputs)."""
    path = Path(samples).expanduser()
    return path / SCORE_FILE if path.is_dir() and (path / "samples.npz").is_file() else None


# --------------------------------------------------------------------------- helpers


def _on_device(dev):
    """torch-fidelity moves its extractor with .cuda(): make that mean `dev` (e.g. cuda:1)."""
    import contextlib

    import torch

    return torch.cuda.device(dev) if dev.type == "cuda" else contextlib.nullcontext()


def _calculate(**kwargs) -> dict:
    """torch-fidelity's calculate_metrics; its input validation errors become one line."""
    from torch_fidelity import calculate_metrics

    try:
        return calculate_metrics(**kwargs)
    except ValueError as exc:  # torch-fidelity's vassert
        raise RobustgenError(f"torch-fidelity rejected the input: {str(exc).splitlines()[0][:200]}") from None


def _layers(extractor: Extractor, wanted: tuple[str, ...]) -> list[str]:
    """The torch-fidelity feature layers a call with these metrics extracts."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    cls = FEATURE_EXTRACTORS_REGISTRY[extractor.name]
    return sorted({cls.get_default_feature_layer_for_metric({"is": "isc"}.get(m, m)) for m in wanted})


def _check_counts(wanted, *, n: int, n_ref: int, extractor: Extractor, is_splits: int, kid_subset_size: int | None, warnings: list[str]) -> int | None:
    """Refuse counts a metric cannot use; warn where a number needs reading with care. Returns the KID subset size."""
    kid = None
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
                warnings.append(
                    f"FID with {count} {who} <= {extractor.feature_dim} feature dims: the covariance is rank-deficient (rank <= {count - 1}), "
                    f"so FID is biased upward and only comparable between sets of the same size; use more than {extractor.feature_dim} (papers: 10k-50k)"
                )
    if "kid" in wanted:
        kid = _kid_subset(kid_subset_size, n, n_ref, warnings)
    if "prc" in wanted:
        for who, count in (("samples", n), ("reference images", n_ref)):
            if count <= PRC_NEIGHBORHOOD:
                raise RobustgenError(f"precision/recall on {count} {who}: it needs more than {PRC_NEIGHBORHOOD} (k-NN radius); generate more samples or drop prc")
    return kid


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
            f"--features {extractor.checkpoint} takes {_shape(extractor.input_shape)} images but the samples are {_shape((c, h, w))}: "
            "use a classifier trained on the samples' dataset, or --features inception"
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
        from robustgen.io import sha256_file

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
