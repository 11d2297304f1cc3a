"""Sizes that cannot fit are refused before anything is allocated, with the limit named."""

from __future__ import annotations

import os

import torch

from .errors import UserError

GIB = 1024**3


def available_memory(device: torch.device | None = None) -> int:
    """Bytes that may still be allocated: free GPU memory on CUDA, else the host's available memory."""
    if device is not None and device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:  # not Linux: all of the physical memory is the best bound at hand
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return 2**63 - 1


def describe_bytes(count: float) -> str:
    """A size for a message: `1.5 GiB`, `300 MiB`, `12,345 TiB`."""
    for unit, size in (("TiB", 1024 * GIB), ("GiB", GIB), ("MiB", 1024**2), ("KiB", 1024)):
        if count >= size:
            value = count / size
            return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"
    return f"{int(count)} bytes"


def require_fits(what: str, count: int, bytes_each: float, *, device: torch.device | None = None,
                 fraction: float = 0.5) -> None:
    """Refuse `count` items of `bytes_each` bytes when they would take more than `fraction` of the available memory.

    `what` names the option at fault (`--num 1000000000`); the message says how many would fit.
    """
    budget = available_memory(device) * fraction
    if count * bytes_each <= budget:
        return
    most = max(int(budget // max(bytes_each, 1)), 0)
    place = "GPU memory" if device is not None and device.type == "cuda" else "memory"
    raise UserError(f"{what}: needs about {describe_bytes(count * bytes_each)}, more than this machine can spare "
                    f"({describe_bytes(budget)}, {_share(fraction)} its available {place}); at most {most:,} fit")


def _share(fraction: float) -> str:
    """`half of`, `a quarter of`, or `12% of`: how much of the memory a request may take."""
    named = {0.5: "half of", 0.25: "a quarter of"}
    return named.get(fraction, f"{fraction:.0%} of")
