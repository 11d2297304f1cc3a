"""What a training step's time is made of: the step profiled op by op, grouped into kinds of work.

    python benchmarks/step_profile.py [--preset dcgan] [--precision bf16] [--channels-last] [--convolutions native]
        [--steps 10] [--json PATH]

The step is the preset's own `TrainingStep` (batch size and image size of the preset, the
`roofline.py` set-up: no clusters, no mode seeking, no moving average), on random images, after
warm-up steps. Each op's self time (its own, without the ops it calls) goes to one kind:
convolutions (forward and backward), other matrix products, batch norm, the precision's dtype
conversions, the optimiser (everything inside Adam's step), and the rest (activations, losses,
elementwise arithmetic). Next to it, the time the step's FLOPs would take at the best matrix-product
rate: the ceiling of `roofline.py`, so the gap to it can be read by kind.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from dcgan.host_memory import keep_freed_host_memory
from machine import cpu_name
from roofline import matmul_peak, preset_step, step_flops

KINDS = (  # (kind, substrings of op names), the first match wins
    ("convolution", ("conv", "mkldnn_convolution")),
    ("matrix product", ("addmm", "aten::mm", "bmm", "matmul", "linear")),
    ("batch norm", ("batch_norm",)),
    ("dtype conversion", ("aten::to", "_to_copy", "aten::copy_", "clone")),
)


def kind_of(event: torch.autograd.profiler_util.FunctionEvent) -> str:
    """The kind of work of a profiled op (the optimiser's when Adam's step called it)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith("Optimizer.step"):
            return "optimiser"
        parent = parent.cpu_parent
    name = event.name.lower()
    return next((kind for kind, parts in KINDS if any(part in name for part in parts)), "other")


def profile_step(preset: str, precision: str, steps: int, channels_last: bool = False, convolutions: str = "native"
                 ) -> dict:
    """Per kind of work: milliseconds of one step (the mean over `steps`), and the step's total."""
    step, real, batch = preset_step(preset, precision, channels_last, convolutions)
    flops = step_flops(step, real)
    for _ in range(3):
        step(real)
    start = time.perf_counter()
    for _ in range(steps):
        step(real)
    wall = (time.perf_counter() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step(real)
    by_kind: dict[str, float] = defaultdict(float)
    for event in prof.events():
        if event.name.startswith(("Optimizer.", "ProfilerStep", "autograd::engine")) or event.is_async:
            continue
        by_kind[kind_of(event)] += event.self_cpu_time_total / 1e3 / steps
    matmul = matmul_peak(torch.bfloat16 if precision == "bf16" else torch.float32)
    return {"preset": preset, "precision": precision, "channels_last": channels_last, "convolutions": convolutions,
            "batch_size": batch,
            "threads": torch.get_num_threads(),
            "step_ms": wall * 1e3, "images_per_s": batch / wall, "flops_per_step": flops,
            "ceiling_ms": flops / matmul * 1e3, "matmul_gflops": matmul / 1e9,
            "ms_by_kind": dict(sorted(by_kind.items(), key=lambda item: -item[1]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dcgan")
    parser.add_argument("--precision", default="bf16", choices=("fp32", "bf16"))
    parser.add_argument("--channels-last", action="store_true", help="both networks and the batch in channels-last")
    parser.add_argument("--convolutions", default="native", choices=("native", "matmul"),
                        help="small maps' convolutions as PyTorch's kernels or as matrix products")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keep_freed_host_memory()  # as the dcgan command does
    row = profile_step(args.preset, args.precision, args.steps, args.channels_last, args.convolutions)
    profiled = sum(row["ms_by_kind"].values())
    layout = (", channels-last" if args.channels_last else "") + (", matmul" if args.convolutions == "matmul" else "")
    print(f"{cpu_name()}, {row['threads']} threads: {args.preset} {args.precision}{layout}, batch {row['batch_size']}: "
          f"{row['step_ms']:.0f} ms a step ({row['images_per_s']:.1f} images/s); its FLOPs at the matrix-product "
          f"rate ({row['matmul_gflops']:.0f} GFLOP/s): {row['ceiling_ms']:.0f} ms "
          f"({100 * row['ceiling_ms'] / row['step_ms']:.0f}% of the step)")
    for kind, ms in row["ms_by_kind"].items():
        print(f"  {kind:17s} {ms:7.1f} ms  {100 * ms / profiled:5.1f}%")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpu": cpu_name(), "torch": torch.__version__, **row}, indent=2) + "\n")


if __name__ == "__main__":
    main()
