"""Training-step speed in one process: images/s against batch size, precision and memory format.

    python benchmarks/speed.py [--device cpu|cuda] [--batch-sizes 32,64,...] [--steps 60]
                               [--variants fp32,bf16,bf16+cl] [--json PATH]

Each measurement builds the tutorial networks, runs a `TrainingStep` (one D and one G step) on
batches indexed from the in-memory MNIST tensor (on the device), discards warm-up steps, and
reports images/s and peak memory (GPU: allocated by torch; CPU: the process's peak RSS).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from dcgan.config import TrainConfig
from dcgan.data import ShuffledBatches, load_data
from dcgan.device import select_device
from dcgan.host_memory import keep_freed_host_memory
from dcgan.training.step import TrainingStep, build_gan

CONTIGUOUS, CHANNELS_LAST = dict(memory_format="contiguous"), dict(memory_format="channels-last")
VARIANTS = {"fp32": dict(precision="fp32", **CONTIGUOUS), "bf16": dict(precision="bf16", **CONTIGUOUS),
            "fp32+cl": dict(precision="fp32", **CHANNELS_LAST), "bf16+cl": dict(precision="bf16", **CHANNELS_LAST),
            "bf16+cl+matmul": dict(precision="bf16", convolutions="matmul", **CHANNELS_LAST),
            "bf16+reuse": dict(precision="bf16", reuse_fake=True, **CONTIGUOUS)}


def measure(config: TrainConfig, device: torch.device, batches: ShuffledBatches, steps: int, warmup: int) -> float:
    """Images/s of `steps` training steps after `warmup` untimed ones."""
    torch.manual_seed(0)
    train_step = TrainingStep.from_config(build_gan(config, device), config, device)
    stream = iter(batches.epoch(0))
    timed_from = None
    for step in range(warmup + steps):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            timed_from = time.perf_counter()
        real, _ = next(stream)
        if config.memory_format == "channels-last":
            real = real.contiguous(memory_format=torch.channels_last)
        loss = train_step(real)[0]
    loss.item()  # one sync at the end
    return steps * batches.batch_size / (time.perf_counter() - timed_from)


def peak_memory_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-sizes", default="32,64,128,256,512,1024")
    parser.add_argument("--variants", default="fp32,bf16")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keep_freed_host_memory()  # as the dcgan command does
    device = select_device(args.device)
    data = load_data("mnist")
    results = []
    print(f"{'variant':>8} {'batch':>6} {'images/s':>10} {'peak MiB':>9}  ({device})")
    for variant in args.variants.split(","):
        for batch_size in map(int, args.batch_sizes.split(",")):
            config = TrainConfig(batch_size=batch_size, device=device.type, **VARIANTS[variant])
            batches = ShuffledBatches(data, batch_size=batch_size, seed=0, device=device)
            steps = min(args.steps, batches.batches_per_epoch - args.warmup - 1)
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            speed = measure(config, device, batches, steps, args.warmup)
            row = {"variant": variant, "batch_size": batch_size, "images_per_s": round(speed, 1),
                   "peak_mib": round(peak_memory_mib(device), 1)}
            results.append(row)
            print(f"{variant:>8} {batch_size:6d} {speed:10.1f} {row['peak_mib']:9.0f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
        args.json.write_text(json.dumps({"device": name, "torch": torch.__version__, "results": results},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
