"""On-disk cache of reference features and FID statistics.

torch-fidelity does the caching itself (its `cache_root`/`input2_cache_name`
options, files written atomically); this module decides the keys. A key names
the dataset by content (its sha256 fingerprint, not its path), the split, and
optionally one class; torch-fidelity appends the extractor's registry name,
which is `inception-v3-compat` or `robustgen-classifier-<checkpoint sha256>`.
So the second score against the same reference skips the reference pass, and
a retrained checkpoint or a changed dataset can never hit a stale entry.

A small `<key>.json` next to the entries records what each key means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from robustgen.errors import RobustgenError
from robustgen.io import atomic_write_json, default_cache_dir, ensure_writable_dir, now_iso

def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "score"
    try:
        return ensure_writable_dir(path)
    except RobustgenError:
        raise RobustgenError(f"cannot write to the score cache {path}: pass --cache-dir DIR or set ROBUSTGEN_CACHE") from None


def reference_key(fingerprint: str, split: str, class_index: int | None = None, *, channels: int | None = None) -> str:
    """torch-fidelity cache name for one reference split (or one class of it).

    `channels` records a conversion done before extraction (grayscale repeated
    to RGB for Inception), so converted and unconverted inputs never share a key.
    """
    key = f"rg-{fingerprint[:24]}-{split}"
    if channels is not None:
        key += f"-ch{channels}"
    if class_index is not None:
        key += f"-c{class_index}"
    return key


def samples_key(images, *, channels: int | None = None) -> str:
    """torch-fidelity cache name for one sample set (by content); removed again after use (`forget`)."""
    from robustgen.io import sha256_arrays

    return f"rg-samples-{sha256_arrays(images)[:24]}" + (f"-ch{channels}" if channels is not None else "")


def load_features(cache_dir: Path, key: str, extractor_name: str, layer: str):
    """Features torch-fidelity cached for `key` (a float tensor (N, D)), or None if it left none."""
    import torch

    path = feature_files(cache_dir, key, extractor_name, [layer])[0]
    if not path.is_file():
        return None
    try:
        features = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable entry: the caller falls back to recomputing
        return None
    return features if isinstance(features, torch.Tensor) and features.dim() == 2 else None


def forget(cache_dir: Path, key: str) -> None:
    """Remove every cache file of `key` (sample sets are cached only for the duration of one score)."""
    for path in cache_dir.glob(f"{key}-*.pt"):
        path.unlink(missing_ok=True)


def feature_files(cache_dir: Path, key: str, extractor_name: str, layers: list[str]) -> list[Path]:
    """The files torch-fidelity 0.4 writes for `key` (see torch_fidelity.utils.extract_featuresdict_from_input_id_cached)."""
    return [cache_dir / f"{key}-{extractor_name}-features-{layer}.pt" for layer in layers]


def is_cached(cache_dir: Path, key: str, extractor_name: str, layers: list[str]) -> bool:
    return all(p.is_file() for p in feature_files(cache_dir, key, extractor_name, layers))


def describe(cache_dir: Path, key: str, *, extractor_name: str, dataset: str, split: str, class_index: int | None, n: int) -> None:
    """Write `<key>-<extractor>.json` saying what the entry holds (once)."""
    path = cache_dir / f"{key}-{extractor_name}.json"
    if path.exists():
        return
    atomic_write_json(
        path,
        {"key": key, "extractor": extractor_name, "dataset": dataset, "split": split, "class_index": class_index, "n_images": n, "created": now_iso()},
    )


def entries(cache_dir: str | os.PathLike | None = None) -> list[dict]:
    """What the cache holds (from the descriptions), for humans and tests."""
    path = resolve_cache_dir(cache_dir)
    out = []
    for desc in sorted(path.glob("rg-*.json")):
        try:
            out.append(json.loads(desc.read_text()))
        except (OSError, json.JSONDecodeError):
            continue
    return out
