"""SIGINT and SIGTERM during training: the first asks the loop to stop after its step, the second leaves at once."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any

from tqdm import tqdm


class StopRequest:
    """Turns the first SIGINT/SIGTERM into a request to stop after the current step.

    A second signal raises `Interrupted` at once; files are written atomically, so nothing on
    disk is corrupted either way.
    """

    def __init__(self, *, quiet: bool = False) -> None:
        self.signum: int | None = None
        self.quiet = quiet  # say nothing (the other ranks of a distributed run: rank 0 speaks for them)
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Interrupted(signum)
        self.signum = signum
        if not self.quiet:
            tqdm.write(f"{signal.Signals(signum).name}: stopping after this step "
                       "(send it again to exit at once)", file=sys.stderr)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


class Interrupted(KeyboardInterrupt):
    """A second SIGINT/SIGTERM: leave at once (every file is written atomically, so none is damaged)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum
