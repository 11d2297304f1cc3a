"""The one exception type that the command line turns into a one-line error and exit code 2."""


class UserError(Exception):
    """A problem with the user's input (a path, an option, a file): reported in one line, exit 2."""

    exit_code = 2

    def __str__(self) -> str:
        # Keep the message on one line whatever the cause's text looked like.
        return " ".join(super().__str__().split())
