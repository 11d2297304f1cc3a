"""UserError, the one exception the command line turns into a one-line error and exit code 2; its messages' helpers."""

import os
import stat

# What a path is when it is not a regular file: reading a device or a pipe may never end.
FILE_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
              (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"))


class UserError(Exception):
    """A problem with the user's input (a path, an option, a file): reported in one line, exit 2."""

    exit_code = 2

    def __str__(self) -> str:
        # Keep the message on one line whatever the cause's text looked like.
        return " ".join(super().__str__().split())


def reason(exc: BaseException) -> str:
    """The informative line of an exception's message (PyTorch puts a heading line before the detail)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    return lines[1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]


def file_kind(mode: int) -> str:
    """What a file of this `st_mode` is, for a message: `a regular file`, `a character device`, `a named pipe`, ..."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in FILE_KINDS if test(mode)), "a special file")


def path_mode(path: str | os.PathLike, what: str, *, missing: str = "no such file or directory") -> int:
    """The `st_mode` of `path` (following links); a one-line UserError starting with `what` when nothing is there
    (`missing`) or it cannot be looked at (no permission, a NUL byte in the name)."""
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{what}: {missing}") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{what}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


class PeerFailed(Exception):
    """Another training process failed and reported it: this one leaves quietly with the same exit code."""

    exit_code = 2
