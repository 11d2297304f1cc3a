"""The arithmetic ceiling of a training step: FLOPs per image against this machine's matmul peak.

    python benchmarks/roofline.py [--batch-size 32] [--json benchmarks/results/roofline_cpu.json]

Counts the floating-point operations of one `TrainingStep` of the `tutorial` preset (and of the
`--reuse-fake` step) with torch's FLOP counter, measures the best matrix-multiply throughput of
this CPU in fp32 and bf16 (square products, the kind of work a convolution becomes), and prints
the images/s a step could reach if every FLOP ran at that peak. No step can beat that ceiling;
the only way past it is fewer FLOPs per image.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from dcgan.config import TrainConfig
from dcgan.training.step import TrainingStep, build_gan


def step_flops(*, batch_size: int, reuse_fake: bool) -> int:
    """FLOPs (2 per multiply-add) of one D step + one G step of the tutorial networks."""
    torch.manual_seed(0)
    config = TrainConfig(precision="fp32", batch_size=batch_size, reuse_fake=reuse_fake)
    device = torch.device("cpu")
    step = TrainingStep.from_config(build_gan(config, device), config, device)
    real = torch.rand(batch_size, 1, 28, 28) * 2 - 1
    step(real)  # warm-up: optimiser state exists
    with FlopCounterMode(display=False) as counter:
        step(real)
    return counter.get_total_flops()


def matmul_peak(dtype: torch.dtype, sizes: tuple[int, ...] = (1024, 2048, 3072), repeats: int = 5) -> float:
    """Best FLOP/s of square matrix products in `dtype` (best of `repeats` timings per size)."""
    best = 0.0
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            best = max(best, 2 * n**3 / (time.perf_counter() - start))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    flops = {"tutorial": step_flops(batch_size=args.batch_size, reuse_fake=False),
             "reuse_fake": step_flops(batch_size=args.batch_size, reuse_fake=True)}
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    rows = []
    for step, total in flops.items():
        per_image = total / args.batch_size
        for precision, peak in peaks.items():
            rows.append({"step": step, "precision": precision, "mflop_per_image": per_image / 1e6,
                         "peak_gflops": peak / 1e9, "ceiling_images_per_s": peak / per_image})
            print(f"{step:10s} {precision}: {per_image / 1e6:6.1f} MFLOP/image, matmul peak "
                  f"{peak / 1e9:6.1f} GFLOP/s -> at most {peak / per_image:6.0f} images/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                         "threads": torch.get_num_threads(), "torch": torch.__version__,
                                         "batch_size": args.batch_size, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
