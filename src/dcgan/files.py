"""Writing files so that a crash never leaves half of one: the one atomic-write helper of the package."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import UserError


def fsync_directory(directory: Path) -> None:
    """Make a rename inside `directory` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def temporary_path(path: Path) -> Path:
    """Where `atomic_write` stages `path`: `.NAME.tmpPID.SUFFIX` beside it (hidden, one per process, and
    with the same suffix, from which image writers choose the format)."""
    return path.with_name(f".{path.name}.tmp{os.getpid()}{path.suffix}")


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a temporary file, fsync it, rename it over `path`, then fsync the folder.

    A crash at any moment leaves either the old file or the new one, never a partial one; on any
    failure the temporary file is removed and the exception propagates (OSError for a full disk or
    a read-only folder). A `write` that creates no file (nothing to write yet) leaves `path` as it was.
    """
    path = Path(path)
    tmp = temporary_path(path)
    try:
        write(tmp)
        if not tmp.exists():
            return
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """`atomic_write`, with a failed write turned into a one-line UserError naming `path`."""
    with writing(path):
        atomic_write(path, write)


def remove_temporaries(directory: Path) -> None:
    """Delete the staged files of writers that were killed mid-write (they are never read)."""
    for stale in directory.glob(".*.tmp*"):
        stale.unlink(missing_ok=True)


def is_temporary(path: Path) -> bool:
    """Whether `path` is a file staged by `atomic_write`."""
    return path.name.startswith(".") and ".tmp" in path.name


@contextlib.contextmanager
def writing(path: Path, *, option: str = "") -> Iterator[None]:
    """Turn a failed write (full disk, read-only folder) into a one-line UserError naming `path`
    (and the command-line `option` that named it, when given)."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserError(f"{option} {path}: cannot write ({reason})" if option else
                        f"cannot write {path}: {reason}") from None
