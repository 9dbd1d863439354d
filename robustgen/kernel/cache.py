"""The on-disk array cache robustgen writes for itself (fitted initialisers, reference energies, score features), and
`read_user_npz`, the one read of an .npz a user hands over (`npz:` datasets, samples to score, sample run dirs).

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

from robustgen.kernel import distributed
from robustgen.kernel.errors import RobustgenError
from robustgen.kernel.io import atomic_path, ensure_writable_dir


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


def read_user_npz(path: Path, *, what: str, fix: str, pickled_fix: str | None = None) -> dict[str, np.ndarray]:
    """Every array of the user's .npz at `path`, or ONE RobustgenError line "<what> <problem>: <fix>" for a single .npy
    array, a file that is not a zip archive, pickled objects (never unpickled) or a truncated/damaged archive."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(6)
    except OSError as exc:
        raise RobustgenError(f"{what}: cannot read {path} ({exc.strerror}): {fix}") from None
    if head.startswith(b"\x93NUMPY"):
        raise RobustgenError(f"{what}: {path} is a single .npy array, not an .npz: {fix}")
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        raise RobustgenError(f"{what}: {path} is not an .npz file (not a zip archive): {fix}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}
    except ValueError as exc:
        if "pickle" in str(exc) or "Object arrays" in str(exc):  # numpy's advice to allow pickles is not ours to give
            raise RobustgenError(f"{what}: {path} holds Python objects (dtype=object): {pickled_fix or fix}") from None
        raise RobustgenError(f"{what}: cannot read {path} ({_first_line(exc)}): the file is damaged; {fix}") from None
    except Exception as exc:  # BadZipFile, zlib.error, EOFError, OSError...: a truncated or damaged archive
        raise RobustgenError(f"{what}: cannot read {path} ({_first_line(exc)}): the file is truncated or damaged; {fix}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:80] if text else type(exc).__name__


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
