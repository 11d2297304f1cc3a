"""Where the networks run and in what precision: device choice, bf16 support, autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import ContextManager

import torch

from .errors import UserError


def select_device(name: str) -> torch.device:
    """`auto` picks cuda, then mps, then cpu; an explicit device must be available."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    available = {"cpu": True, "cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available()}
    if not available[name]:
        raise UserError(f"--device {name}: not available on this machine")
    return torch.device(name)


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast is fast on `device`: CUDA with bf16, or a CPU whose oneDNN has bf16 kernels."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` is bf16 where the hardware runs it natively, else fp32."""
    if precision == "auto":
        return "bf16" if bf16_supported(device) else "fp32"
    return precision


def resolve_memory_format(memory_format: str, precision: str, device: torch.device) -> torch.memory_format:
    """`auto` is channels-last for bf16 on a CPU with AMX tiles, where it was measured 4-20% faster
    (docs/performance.md); elsewhere, where it was no faster or is unmeasured, the contiguous order."""
    if memory_format == "auto":
        amx = device.type == "cpu" and torch.cpu.get_capabilities().get("amx_bf16", False)
        memory_format = "channels-last" if amx and resolve_precision(precision, device) == "bf16" else "contiguous"
    return torch.channels_last if memory_format == "channels-last" else torch.contiguous_format


def resolve_convolutions(convolutions: str, precision: str, device: torch.device, *, r1: float = 0.0) -> str:
    """`auto` is matmul for fp32 training on a CPU without bf16 kernels, where it was measured 3-13% faster at
    the same FID (docs/performance.md); native elsewhere (unmeasured, or in bf16 not shown equal in quality)
    and with R1, which differentiates D twice."""
    if convolutions == "auto":
        cpu_without_bf16 = device.type == "cpu" and not bf16_supported(device)
        return "matmul" if cpu_without_bf16 and resolve_precision(precision, device) == "fp32" and not r1 else "native"
    return convolutions


def describe_execution(device: torch.device, *, precision: str, memory_format: str, convolutions: str | None,
                       r1: float = 0.0) -> str:
    """One line for the log: where training runs and how, each `auto` setting resolved and marked (convolutions
    None: networks that have no other way of running them)."""
    def auto(setting: str) -> str:
        return " (auto)" if setting == "auto" else ""

    threads = torch.get_num_threads()
    where = f"cpu, {threads} thread{'s' * (threads != 1)}" if device.type == "cpu" else str(device)
    chosen = resolve_precision(precision, device)
    if precision == "auto":  # the setting that changes speed most, so the log says why
        chosen += f" (auto: {'fast' if chosen == 'bf16' else 'no fast'} bf16 on this {device.type})"
    channels_last = resolve_memory_format(memory_format, precision, device) == torch.channels_last
    line = (f"execution: {where}, precision {chosen}, memory {'channels-last' if channels_last else 'contiguous'}"
            f"{auto(memory_format)}")
    if convolutions is not None:
        line += f", convolutions {resolve_convolutions(convolutions, precision, device, r1=r1)}{auto(convolutions)}"
    return line


def autocast_for(precision: str, device: torch.device) -> Callable[[], ContextManager[object]]:
    """A factory of the context that runs forward passes in `precision` (`auto` resolved) on `device`."""
    if resolve_precision(precision, device) == "bf16":
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


def synchronized_time(device: torch.device) -> float:
    """time.perf_counter() once the device has finished its queued work (CUDA runs asynchronously)."""
    import time

    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
