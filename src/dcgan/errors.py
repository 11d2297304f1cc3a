"""The one exception type that the command line turns into a one-line error and exit code 2."""


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


class PeerFailed(Exception):
    """Another training process failed and reported it: this one leaves quietly with the same exit code."""

    exit_code = 2
