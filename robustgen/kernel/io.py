"""Small file-system helpers: atomic writes, locks, hashes, run records, JSON, names (eps parsing lives in robustgen.kernel.threat).

Every file robustgen writes goes through `atomic_write_*` or `atomic_path`:
the data lands under a temporary name `.<name>.<random>.tmp` in the same
folder and is renamed into place (flushed to disk first for checkpoints and
run records), so an interrupted run never leaves a half-written file behind. A kill at the wrong moment can leave the
temporary file itself; `clean_stale_temps` removes those (call it while holding
`run_dir_lock`, so no live writer's temp file is touched). Write errors (a full
disk, a read-only folder) become one-line `RobustgenError`s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import enum
import errno
import hashlib
import json
import os
import platform
import re
import secrets
from pathlib import Path
from typing import Any, Iterator

from robustgen.kernel.errors import RobustgenError

# --------------------------------------------------------------------------- write errors


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop (Python < 3.13)
        return False


def symlink_loop(path: str | os.PathLike) -> bool:
    """Does resolving `path` run into a symbolic-link loop (ELOOP)? exists() says False there, mkdir says "File exists"."""
    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ELOOP
    return False


def refuse_symlink_loop(path: str | os.PathLike, *, what: str = "output path") -> None:
    """One line, before anything is computed or written, for a path that runs into a loop of symbolic links."""
    if symlink_loop(path):
        raise RobustgenError(f"{what} {str(path)!r} runs into a loop of symbolic links: fix the link or choose another path (--out)")


def _where_fix(path: Path) -> str:
    """What the user changes to write elsewhere: the cache location or the output dir."""
    if _inside(path, default_cache_dir()):
        return "set ROBUSTGEN_CACHE to a writable directory with free space (score also takes --cache-dir or --no-cache)"
    return "choose another --out"


def write_error(exc: OSError, path: str | os.PathLike) -> RobustgenError:
    """One line for an OSError raised while writing `path` (full disk, read-only folder, ...)."""
    path = Path(path)
    fix = _where_fix(path)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left on device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return RobustgenError(f"{what} while writing {path}: free space or {fix}")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return RobustgenError(f"cannot write {path} ({exc.strerror}): fix the permissions or {fix}")
    return RobustgenError(f"cannot write {path} ({exc.strerror or type(exc).__name__}): {fix}")


# --------------------------------------------------------------------------- atomic writes


def _create_temp(path: Path) -> Path:
    """Create `.<name>.<random>.tmp` next to `path`, with the usual mode (0666 minus the umask).

    os.open applies the process umask itself, so robustgen never reads or changes it.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            return tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(path))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` on success.

    fsync: flush the data to disk before the rename, so even a power cut leaves the old
    or the new file (checkpoints and run records; not worth it for thousands of PNGs).
    An OSError while writing (ENOSPC, EACCES, ...) removes the temporary file and
    becomes one RobustgenError naming `path`; `path` itself is untouched.
    """
    path = Path(path)
    refuse_symlink_loop(path)  # os.replace would put the file where the link was; mkdir calls it "File exists"
    tmp: Path | None = None
    try:
        tmp = _create_temp(path)
        yield tmp
        if tmp.exists():
            if fsync:
                _fsync(tmp)
            os.replace(tmp, path)
    except OSError as exc:
        raise write_error(exc, path) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    with atomic_path(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON run records (config.json, run.json, meta.json...): few and small, so always fsynced."""
    atomic_write_text(path, dumps_json(obj) + "\n", fsync=True)


_TEMP_NAME = re.compile(r"^\..+\.[0-9A-Za-z_]+\.tmp$")  # .<name>.<random>.tmp (also tempfile.mkstemp's names)


def clean_stale_temps(directory: str | os.PathLike, *, recursive: bool = False) -> list[Path]:
    """Remove `.<name>.*.tmp` files a killed atomic write left in `directory`; returns what was removed.

    Call it on start and on resume while holding `run_dir_lock(directory)`:
    then no other robustgen process is writing there and every temp file is stale.
    """
    directory = Path(directory)
    if not directory.is_dir():
        return []
    candidates = directory.rglob(".*.tmp") if recursive else directory.glob(".*.tmp")
    removed = []
    for path in candidates:
        if _TEMP_NAME.match(path.name) and path.is_file() and not path.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed.append(path)
    return removed


# --------------------------------------------------------------------------- run-dir lock

LOCK_NAME = ".lock"


@contextlib.contextmanager
def run_dir_lock(directory: str | os.PathLike) -> Iterator[Path]:
    """Exclusive, non-blocking lock on a run dir (flock on DIR/.lock; the OS drops it when the process dies).

        with run_dir_lock(out):
            clean_stale_temps(out)
            ...write into out...

    A second writer gets one RobustgenError naming the holder's pid. Creates the
    directory if needed; on exit removes the lock file (and the directory, if
    this call created it and nothing else was written there).
    """
    directory = Path(directory)
    created = not directory.exists()
    ensure_writable_dir(directory)
    lock_path = directory / LOCK_NAME
    try:
        import fcntl
    except ImportError:  # no flock (Windows): run unlocked rather than not at all
        yield directory
        return
    fd = _acquire(lock_path, fcntl)
    try:
        yield directory
    finally:
        # Unlink while still holding the lock; a waiter that opened the old file notices (inode check in _acquire).
        with contextlib.suppress(OSError):
            lock_path.unlink()
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only succeeds if empty


def _acquire(lock_path: Path, fcntl) -> int:
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(exc, lock_path) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RobustgenError(
                    f"another robustgen process is writing {lock_path.parent}{f' (pid {holder})' if holder else ''}: "
                    "wait for it or choose another --out"
                ) from None
            raise write_error(exc, lock_path) from None
        try:
            same_file = os.fstat(fd).st_ino == os.stat(lock_path).st_ino
        except FileNotFoundError:
            same_file = False
        if not same_file:  # the previous holder removed the file between our open and our flock: retry
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text.isdigit() else None
    except OSError:
        return None


# --------------------------------------------------------------------------- JSON


def json_default(obj: Any) -> Any:
    """The one JSON encoder hook: paths, numpy/torch scalars and arrays, sets, tuples, dataclasses, enums, devices."""
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy / torch scalars and arrays
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):  # sorted, so files do not change from run to run
        try:
            return sorted(obj)
        except TypeError:
            return sorted(obj, key=repr)
    if isinstance(obj, tuple):
        return list(obj)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if type(obj).__module__.split(".")[0] in ("torch", "numpy"):  # torch.device, torch.dtype, numpy.dtype
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any, *, indent: int | None = 2) -> str:
    """json.dumps with sorted keys and `json_default`: how robustgen writes and prints JSON."""
    return json.dumps(obj, indent=indent, sort_keys=True, default=json_default)


def to_jsonable(obj: Any) -> Any:
    """`obj` as plain JSON types (what reading it back from a JSON file gives)."""
    return json.loads(dumps_json(obj, indent=None))


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line and fsync it; on a write error the file is cut back to its previous end."""
    data = (dumps_json(record, indent=None) + "\n").encode("utf-8")
    try:
        with open(path, "ab", buffering=0) as fh:
            start = os.fstat(fh.fileno()).st_size
            try:
                written = 0
                while written < len(data):
                    written += fh.write(data[written:])
                os.fsync(fh.fileno())
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fh.fileno(), start)
                raise
    except OSError as exc:
        raise write_error(exc, path) from None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSON-lines file robustgen wrote, ignoring a torn last line left by a crash.

    Anything else that does not parse (a bad line before the last, bytes that are not
    UTF-8, a line that is not a JSON object) is a damaged or foreign file: one error line.
    """
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise RobustgenError(f"{path} is not a JSON-lines file (not UTF-8 text): restore it or start the run again") from None
    lines = [line for line in lines if line]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines) and records:  # torn last line: the crash happened while it was written
                break
            raise RobustgenError(f"{path} line {number} is not JSON: the file is damaged; restore it or start the run again") from None
        if not isinstance(record, dict):
            raise RobustgenError(f"{path} line {number} is not a JSON object: the file is damaged; restore it or start the run again")
        records.append(record)
    return records


# --------------------------------------------------------------------------- hashes and records


def sha256_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    return _hash_file(path, hashlib.sha256(), chunk_bytes)


def md5_file(path: str | os.PathLike, *, chunk_bytes: int = 1 << 20) -> str:
    """MD5 of a file: only to compare downloads with their published checksums."""
    return _hash_file(path, hashlib.md5(usedforsecurity=False), chunk_bytes)


def _hash_file(path, digest, chunk_bytes: int) -> str:
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


def settings_hash(parts: dict, *, length: int = 24) -> str:
    """Stable hash of JSON-able settings (key order does not matter): names caches and resume files."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:length]


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


# --------------------------------------------------------------------------- names and folders

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(name: str, *, fallback: str = "_") -> str:
    """A file or folder name made of [A-Za-z0-9_.-] only ("cat food" -> "cat_food").

    Leading/trailing dots and underscores are dropped (no hidden files, no "..");
    `fallback` is returned when nothing is left.
    """
    safe = _UNSAFE.sub("_", str(name)).strip("._")
    return safe or fallback


def default_cache_dir() -> Path:
    """Where fitted initialisers, reference energies and score features are cached ($ROBUSTGEN_CACHE)."""
    return Path(os.environ.get("ROBUSTGEN_CACHE", "~/.cache/robustgen")).expanduser()


@contextlib.contextmanager
def download_dir(path: str | os.PathLike) -> Iterator[Path]:
    """`ensure_writable_dir(path)` for a download: if the block fails, the folders it created are removed again.

    Only folders that did not exist before are removed (with whatever the failed download put in
    them), so a failed download never leaves an empty --data-root or model dir behind.
    """
    path = Path(path)
    created = path
    while not created.parent.exists() and created.parent != created:
        created = created.parent
    fresh = not created.exists() and not created.is_symlink()
    ensure_writable_dir(path)
    try:
        yield path
    except BaseException:
        if fresh:
            import shutil

            shutil.rmtree(created, ignore_errors=True)
        raise


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` (and parents) and check we can write into it.

    The message names the fix that applies: another --out, or another
    ROBUSTGEN_CACHE when `path` lies in the cache.
    """
    path = Path(path)
    probe = path / f".write-probe-{os.getpid()}"
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        with contextlib.suppress(OSError):
            probe.unlink()
        if symlink_loop(path):
            reason = "its path runs into a loop of symbolic links"
        elif path.exists() and not path.is_dir():
            reason = "it is a file"
        elif isinstance(exc, (FileExistsError, NotADirectoryError)):
            reason = "a parent is a file"
        else:
            reason = exc.strerror or type(exc).__name__
        if _inside(path, default_cache_dir()):
            raise RobustgenError(
                f"cannot write to the robustgen cache {str(path)!r} ({reason}): set ROBUSTGEN_CACHE to a writable directory "
                "(score also takes --cache-dir or --no-cache)"
            ) from None
        raise RobustgenError(f"cannot write to output directory {str(path)!r} ({reason}): choose another --out") from None
    return path
