"""Small file-system helpers: atomic writes, hashes, run records, eps parsing.

Every file robustgen writes goes through `atomic_write_*` or `atomic_path`:
the data lands under a temporary name in the same folder and is renamed into
place, so an interrupted run never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

from robustgen.errors import RobustgenError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync it (a crash loses at most the line being written)."""
    line = json.dumps(record, sort_keys=True, default=_json_default) + "\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file, ignoring a torn last line left by a crash."""
    records = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(*arrays) -> str:
    """Hash of numpy arrays' shapes, dtypes and bytes: a dataset's fingerprint."""
    digest = hashlib.sha256()
    for arr in arrays:
        digest.update(f"{arr.shape}{arr.dtype}".encode())
        digest.update(memoryview(arr).cast("B") if arr.flags.c_contiguous else arr.tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """Versions of Python and of the libraries that change numbers."""
    import importlib.metadata as md

    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("robustgen", "torch", "torchvision", "numpy", "scikit-learn", "torch-fidelity"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


_FRACTION = re.compile(r"^\s*(\d+(\.\d*)?|\.\d+)\s*(/\s*(\d+(\.\d*)?|\.\d+)\s*)?$")


def parse_eps(text: str | float) -> float:
    """Parse an eps given as `0.031` or `8/255`: a float in pixel space [0, 1].

    >>> parse_eps("8/255") == 8 / 255
    True
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        match = _FRACTION.match(text)
        if not match:
            raise RobustgenError(
                f"cannot read eps {text!r}: give a number in pixel space [0, 1] such as 0.031 or a fraction such as 8/255"
            )
        num = float(match.group(1))
        den = float(match.group(4)) if match.group(4) else 1.0
        if den == 0:
            raise RobustgenError(f"eps {text!r} divides by zero: write it like 8/255")
        value = num / den
    if not 0 <= value <= 1:
        raise RobustgenError(f"eps {text!r} = {value:.4g} is outside pixel space [0, 1]: pixel values are in [0, 1], so 8/255 not 8")
    return value


def default_cache_dir() -> Path:
    """Where fitted initialisers, reference energies and score features are cached ($ROBUSTGEN_CACHE)."""
    return Path(os.environ.get("ROBUSTGEN_CACHE", "~/.cache/robustgen")).expanduser()


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) and check we can write into it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise RobustgenError(f"cannot write to output directory {str(path)!r} ({exc.strerror}): choose another --out") from None
    return path
