"""The arithmetic ceiling of a training step: FLOPs per image against what this CPU's kernels reach.

    python benchmarks/roofline.py [--presets tutorial,dcgan] [--precisions fp32,bf16]
        [--json benchmarks/results/roofline_cpu.json]

For each preset (at its own batch size and image size) it counts the floating-point operations of
one `TrainingStep` with torch's FLOP counter, then measures the peak two ways:

- the step's own layers: every convolution, transposed convolution and linear layer that the
  step runs is timed alone at the step's shapes (forward, and backward where the step takes
  one), best of 5; their FLOPs over their time is the rate these kernels reach on this CPU;
- square matrix products (1024 to 3072), which on some CPUs (AMD Zen 5) run far below what the
  convolutions reach, so they alone would understate the ceiling.

The ceiling is the images/s a step could reach if every FLOP ran at the higher of the two rates.
No step can beat it; the only way past it is fewer FLOPs per image.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from dcgan.config import resolve_config
from dcgan.host_memory import keep_freed_host_memory
from dcgan.training.step import TrainingStep, build_gan
from machine import cpu_name

CPU = torch.device("cpu")
TIMED = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)




def preset_step(preset: str, precision: str, channels_last: bool = False, convolutions: str = "native"
                ) -> tuple[TrainingStep, torch.Tensor, int]:
    """The preset's training step in `precision` (memory format, way of running small maps' convolutions), a real
    batch for it, and the batch size."""
    torch.manual_seed(0)
    config = resolve_config({}, {"preset": preset, "precision": precision, "channels": 1 if preset != "dcgan" else 3,
                                 "clusters": 0, "mode_seeking": 0.0, "ema_decay": 0.0,
                                 "memory_format": "channels-last" if channels_last else "contiguous",
                                 "convolutions": convolutions})
    step = TrainingStep.from_config(build_gan(config, CPU), config, CPU)
    real = torch.rand(config.batch_size, config.channels, config.image_size, config.image_size) * 2 - 1
    if channels_last:
        real = real.contiguous(memory_format=torch.channels_last)
    step(real)  # warm-up: optimiser state exists
    return step, real, config.batch_size


def step_flops(step: TrainingStep, real: torch.Tensor) -> int:
    """FLOPs (2 per multiply-add) of one D step + one G step."""
    with FlopCounterMode(display=False) as counter:
        step(real)
    return counter.get_total_flops()


def layer_calls(step: TrainingStep, real: torch.Tensor) -> list[tuple[nn.Module, torch.Size, bool]]:
    """(layer, input shape, whether a backward pass follows) of every timed layer call in one step."""
    calls = []
    modules = {m for network in (step.gan.generator, step.gan.discriminator) for m in network.modules()
               if isinstance(m, TIMED)}
    hooks = [m.register_forward_hook(lambda m, inputs, _: calls.append((m, inputs[0].shape, torch.is_grad_enabled())))
             for m in modules]
    try:
        step(real)
    finally:
        for hook in hooks:
            hook.remove()
    return calls


def layer_rate(step: TrainingStep, calls: list[tuple[nn.Module, torch.Size, bool]], repeats: int = 5
               ) -> tuple[float, float]:
    """(FLOPs, seconds) of the step's layer calls, each timed alone (best of `repeats`) in the step's precision."""
    total_flops, total_seconds = 0, 0.0
    for module, shape, backward in calls:
        x = torch.randn(shape, requires_grad=backward)

        def run() -> None:
            with step.autocast():
                out = module(x)
            if backward:
                out.float().sum().backward()

        with FlopCounterMode(display=False) as counter:
            run()
        run()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        module.zero_grad(set_to_none=True)
        total_flops += counter.get_total_flops()
        total_seconds += best
    return total_flops, total_seconds


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
    parser.add_argument("--presets", default="tutorial,dcgan")
    parser.add_argument("--precisions", default="fp32,bf16",
                        help="comma-separated; bf16 takes minutes on a CPU without bf16 instructions")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keep_freed_host_memory()  # as the dcgan command does
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    rows = []
    for preset in args.presets.split(","):
        for precision in args.precisions.split(","):
            dtype = dtypes[precision]
            step, real, batch = preset_step(preset, precision)
            flops = step_flops(step, real)
            layer_flops, layer_seconds = layer_rate(step, layer_calls(step, real))
            layers, matmul = layer_flops / layer_seconds, matmul_peak(dtype)
            row = {"preset": preset, "precision": precision, "batch_size": batch,
                   "mflop_per_image": flops / batch / 1e6, "layer_share_of_flops": layer_flops / flops,
                   "layers_gflops": layers / 1e9, "matmul_gflops": matmul / 1e9,
                   "ceiling_images_per_s": max(layers, matmul) * batch / flops}
            rows.append(row)
            print(f"{preset:9s} {precision}: {row['mflop_per_image']:7.1f} MFLOP/image, step's layers "
                  f"{row['layers_gflops']:6.1f} GFLOP/s, matmul {row['matmul_gflops']:6.1f} GFLOP/s -> at most "
                  f"{row['ceiling_images_per_s']:6.0f} images/s", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_name(), "threads": torch.get_num_threads(),
                                         "torch": torch.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
