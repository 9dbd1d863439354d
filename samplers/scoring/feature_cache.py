"""robustgen's own on-disk cache for scoring: keys, paths, and safe reads and writes.

Cached (per reference dataset, never per sample set):
- the features of one dataset split under one extractor, one `.npz` per layer;
- the training-set side of the memorisation measures (test -> train nearest
  neighbours, k-means cells), one `.npz` per space (pixels, or one extractor's
  features).

A key names the dataset by content (its sha256 fingerprint, not its path), the
split, the extractor's registry name (`inception-v3-compat` or
`robustgen-classifier-<checkpoint sha256>`) and any channel conversion done
before extraction. So the second score against the same reference skips the
reference pass, and a retrained checkpoint or a changed dataset can never hit a
stale entry.

Entries are plain arrays read with `np.load(allow_pickle=False)`: nothing in
the cache can run code. They are written atomically; an entry that cannot be
read (truncated, garbage, wrong arrays) is treated as missing, recomputed and
replaced. A small `<key>.json` next to the entries says what each key means.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from robustgen.kernel.errors import RobustgenError
from robustgen.kernel import distributed
from robustgen.kernel.cache import read_npz, write_npz
from robustgen.kernel.io import atomic_write_json, default_cache_dir, ensure_writable_dir, now_iso


def resolve_cache_dir(cache_dir: str | os.PathLike | None) -> Path:
    path = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "score"
    try:
        return ensure_writable_dir(path)
    except RobustgenError:
        raise RobustgenError(f"cannot write to the score cache {path}: pass --cache-dir DIR or set ROBUSTGEN_CACHE") from None


def reference_key(fingerprint: str, split: str, *, extractor_name: str, channels: int | None = None) -> str:
    """Cache key of one reference split's features under one extractor.

    `channels` records a conversion done before extraction (grayscale repeated
    to RGB for Inception), so converted and unconverted inputs never share a key.
    """
    key = f"rg-{fingerprint[:24]}-{split}"
    if channels is not None:
        key += f"-ch{channels}"
    return f"{key}-{extractor_name}"


def training_side_key(fingerprint: str, *, space: str, n_cells: int, seed: int) -> str:
    """Cache key of the memorisation measures' training-set side in one space ("pixels" or an extractor key)."""
    return f"rg-{fingerprint[:24]}-memorisation-{space}-k{n_cells}-s{seed}"


def feature_path(cache_dir: Path, key: str, layer: str) -> Path:
    return cache_dir / f"{key}-{layer}.npz"


def entry_path(cache_dir: Path, key: str) -> Path:
    return cache_dir / f"{key}.npz"


read_arrays = read_npz  # (arrays, corrupt) of an entry: robustgen.kernel.cache is the one home of the npz cache


def write_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write a cache entry atomically; under torchrun rank 0 alone writes."""
    write_npz(path, arrays, what="score cache entry")


def describe(cache_dir: Path, key: str, **what) -> None:
    """Write `<key>.json` saying what the entry holds (once)."""
    path = cache_dir / f"{key}.json"
    if not path.exists() and distributed.is_main():
        atomic_write_json(path, {"key": key, **what, "created": now_iso()})


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
