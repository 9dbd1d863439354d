"""The on-disk array cache robustgen writes for itself (fitted initialisers, reference energies, score features).

Entries are `.npz` files written atomically and read with `allow_pickle=False`:
nothing in a cache can run code. An entry that cannot be read (truncated,
foreign, missing an array) is treated as absent: recomputed and replaced.
Under torchrun only rank 0 writes; the other ranks compute or wait for it.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from robustgen import distributed
from robustgen.errors import RobustgenError
from robustgen.io import atomic_path, ensure_writable_dir


def read_npz(path: Path, names: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray] | None, bool]:
    """(arrays, corrupt): the entry's arrays (only `names` if given), or (None, False) if there is none,
    or (None, True) if it exists but cannot be used. The one safe npz read: never unpickles, never raises
    for a damaged or foreign file."""
    if not path.is_file():
        return None, False
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):  # a bare .npy array where an .npz belongs
            return None, True
        with loaded as z:
            return {name: z[name] for name in (names if names is not None else z.files)}, False
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error):
        return None, True


def write_npz(path: Path, arrays: dict[str, np.ndarray], *, what: str = "cache entry") -> None:
    """Write an entry atomically (a reader never sees half of one); on rank 0 only."""
    if not distributed.is_main():
        return
    try:
        ensure_writable_dir(path.parent)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)
    except OSError as exc:
        raise RobustgenError(f"cannot write the {what} {path} ({exc.strerror}): free space or point ROBUSTGEN_CACHE elsewhere") from None


def cached_npz(path: Path | None, compute: Callable[[], dict[str, np.ndarray]], *, what: str = "cache entry") -> dict[str, np.ndarray]:
    """The entry at `path`, or `compute()` stored there (path None: no cache)."""
    if path is None:
        return compute()
    arrays, _ = read_npz(path)
    if arrays is not None:
        return arrays
    arrays = compute()
    write_npz(path, arrays, what=what)
    return arrays
