"""One process per run: an exclusive lock on the run directory, held by the process that writes it.

The lock is a `flock` on `RUN/.lock`, whose text names the holder (pid, host, command) for the
message a second process gets. The kernel releases a flock when its holder dies, so a lock left
by a killed process blocks nothing; its text is only information, replaced by the next holder.
The holder removes the file when it lets go, and with it the folders it created for a run that
never started (so a bad input still leaves nothing behind).
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from pathlib import Path

from ..errors import UserError

try:
    import fcntl
except ImportError:  # Windows: no flock, so runs there are not locked
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLock:
    """The lock of one run directory: `acquire` takes it or refuses in one line, `release` lets it go."""

    def __init__(self) -> None:
        self.path: Path | None = None
        self._fd: int | None = None
        self._created: list[Path] = []  # the folders this process made for the run, outermost first

    def acquire(self, root: Path, option: str, *, create: bool = False) -> None:
        """Lock the run directory `root` (`create`: making it and its missing parents first).

        Refused, naming the holder, when another process holds it; `option` is the flag that
        named `root` (`--out` or `--resume`), for the message.
        """
        if create:
            self._make_folders(root, option)
        if fcntl is None:
            return
        self.path = root / LOCK_FILE
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise UserError(f"{option} {root}: cannot create the lock file {LOCK_FILE} ({exc.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                raise UserError(held_message(root, option, holder)) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # its holder removed this file as it let go: lock the one at the path now
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, holder_text().encode())

    def _make_folders(self, root: Path, option: str) -> None:
        missing = [folder for folder in (root, *root.parents) if not folder.exists()]
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:
                continue  # made by another process at the same moment: not ours to remove
            except OSError as exc:
                raise UserError(f"{option} {root}: cannot create the run directory ({exc.strerror})") from None
            self._created.append(folder)

    def release(self) -> None:
        """Let the lock go (removing its file), and remove the folders made for a run that wrote nothing."""
        if self._fd is not None and self.path is not None:
            self.path.unlink(missing_ok=True)  # while held: a process that opened it too finds it gone, and retries
            os.close(self._fd)
            self._fd = None
        for folder in reversed(self._created):
            try:
                folder.rmdir()
            except OSError:
                break  # not empty: the run started (or another process put something there)
        self._created = []


def refuse_if_held(root: Path, option: str) -> None:
    """Refuse, naming the holder, a run directory whose lock another process holds; takes and creates nothing."""
    if fcntl is None:
        return
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return  # no lock file: no process writes the run
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(held_message(root, option, _read(fd))) from None
    finally:
        os.close(fd)


def held_message(root: Path, option: str, holder: str) -> str:
    """The one line that refuses a second writer of the run in `root`, from the lock file's text."""
    return f"{option} {root}: run is being written by {describe_holder(holder)}; wait for it or stop it"


def holder_text() -> str:
    """What the lock file says about this process: pid, host and command, one a line."""
    command = " ".join(["dcgan", *map(shlex.quote, sys.argv[1:])]).replace("\n", " ")
    return f"{os.getpid()}\n{socket.gethostname()}\n{command}\n"


def describe_holder(text: str) -> str:
    """The holder named by a lock file's text, for a message (the text may be missing or cut short)."""
    pid, host, command = (text.splitlines() + ["", "", ""])[:3]
    if not pid.strip().isdigit():
        return "another process"
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return f"process {pid.strip()}{where}" + (f" ({command})" if command else "")


def _read(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode(errors="replace")
    except OSError:
        return ""


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False
