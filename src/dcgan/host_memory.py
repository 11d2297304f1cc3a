"""Host memory kept for reuse: glibc's malloc told not to hand freed blocks back to the kernel."""

from __future__ import annotations

import ctypes
import os
import platform

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
OPT_OUT = "DCGAN_KEEP_FREED_MEMORY"


def keep_freed_host_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse rather than return it to the kernel; whether it now does.

    By default glibc maps a block of more than a few MiB (a training step's activations) afresh and
    unmaps it when it is freed, so every step faults its pages in again; kept, a step reuses them, for
    a somewhat higher peak (docs/performance.md, "Freed memory kept for reuse"). Left alone where
    `DCGAN_KEEP_FREED_MEMORY=0`, where the user tunes malloc (`MALLOC_*`, `GLIBC_TUNABLES`) and where
    the C library is not glibc.
    """
    user_tuned = "GLIBC_TUNABLES" in os.environ or any(name.startswith("MALLOC_") for name in os.environ)
    if os.environ.get(OPT_OUT, "1") == "0" or user_tuned:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    mallopt = ctypes.CDLL(None).mallopt
    largest = 2**31 - 1  # mallopt takes an int
    # where this glibc refuses so large a threshold, no block is mapped on its own at all
    kept = mallopt(M_MMAP_THRESHOLD, largest) or mallopt(M_MMAP_MAX, 0)
    return bool(kept) and bool(mallopt(M_TRIM_THRESHOLD, largest))
