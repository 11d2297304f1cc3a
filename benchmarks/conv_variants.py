"""Other ways to run the 64x64 discriminator's 4x4 stride-2 convolutions, timed against oneDNN's own.

    python benchmarks/conv_variants.py [--batch 128] [--image-size 64] [--precision bf16] [--rounds 5] [--json PATH]

The convolutions are 90% of the `dcgan` preset's bf16 step (`step_profile.py`), so a faster step
has to run them differently. For each of D's 4x4 stride-2 layers (width 64, the preset's shapes),
forward and backward (input and weight gradients, as in training) in three ways that compute the
same thing:

- `native`: `F.conv2d(x, w, stride=2, padding=1)`, what the networks run (oneDNN);
- `space_to_depth`: the padded input's 2x2 pixel blocks moved into channels
  (`pixel_unshuffle`), then a 2x2 stride-1 convolution with the weights rearranged to match;
- `unfold_matmul`: the 4x4 patches laid out as columns (`F.unfold`), then one batched matrix product.

Rounds alternate the variants (A B C A B C ...); each reports its best round, in ms and in GFLOP/s
(2 x multiply-adds of forward, input gradient and weight gradient). Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from machine import cpu_name


def native(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 convolution as the networks run it."""
    return F.conv2d(x, weight, stride=2, padding=1)


def space_to_depth(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same convolution as a 2x2 stride-1 one over the padded input's 2x2 pixel blocks."""
    out_channels, in_channels = weight.shape[:2]
    # kernel row 2a + dy, column 2b + dx -> channel c*4 + dy*2 + dx (pixel_unshuffle's order), offset (a, b)
    blocks = weight.view(out_channels, in_channels, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4)
    blocked = F.pixel_unshuffle(F.pad(x, (1, 1, 1, 1)), 2)  # (B, 4C, H/2 + 1, W/2 + 1)
    return F.conv2d(blocked, blocks.reshape(out_channels, in_channels * 4, 2, 2))  # (B, O, H/2, W/2)


def unfold_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same convolution as a matrix product over the input's 4x4 patches."""
    side = x.shape[-1] // 2
    columns = F.unfold(x, 4, padding=1, stride=2)  # (B, C*16, side*side)
    return (weight.view(weight.shape[0], -1) @ columns).view(x.shape[0], -1, side, side)  # (B, O, side, side)


VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "native": native, "space_to_depth": space_to_depth, "unfold_matmul": unfold_matmul}


def layer_shapes(image_size: int, width: int = 64) -> list[tuple[int, int, int]]:
    """(in channels, out channels, input side) of the dcgan discriminator's stride-2 layers."""
    shapes, channels, side = [], 3, image_size
    out = width
    while side > 4:
        shapes.append((channels, out, side))
        channels, out, side = out, min(out * 2, width * 16), side // 2
    return shapes


def time_variant(fn: Callable, x: torch.Tensor, weight: torch.Tensor, dtype: torch.dtype | None) -> float:
    """Seconds for one forward and backward pass of `fn` (input gradient only past the first layer)."""
    inputs = x.detach().clone().requires_grad_(x.shape[1] != 3)  # the first layer takes images
    weights = weight.detach().clone().requires_grad_(True)
    start = time.perf_counter()
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        out = fn(inputs, weights)
    out.float().sum().backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    torch.manual_seed(0)
    rows = []
    for in_channels, out_channels, side in layer_shapes(args.image_size):
        x = torch.randn(args.batch, in_channels, side, side)
        weight = torch.randn(out_channels, in_channels, 4, 4) * 0.02
        reference = native(x, weight)
        for name, fn in VARIANTS.items():  # the same numbers (fp32), else the timing means nothing
            torch.testing.assert_close(fn(x, weight), reference, rtol=1e-4, atol=1e-4)
        best = {name: float("inf") for name in VARIANTS}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, fn in VARIANTS.items():
                best[name] = min(best[name], time_variant(fn, x, weight, dtype))
        passes = 3 if in_channels != 3 else 2
        flops = passes * 2 * args.batch * out_channels * in_channels * 16 * (side // 2) ** 2
        row = {"layer": f"{in_channels}->{out_channels}, {side}x{side}",
               **{f"{name}_ms": best[name] * 1e3 for name in VARIANTS},
               **{f"{name}_gflops": flops / best[name] / 1e9 for name in VARIANTS}}
        rows.append(row)
        print(f"{row['layer']}: " + ", ".join(f"{name} {best[name] * 1e3:.1f} ms ({flops / best[name] / 1e9:.0f} "
                                               f"GFLOP/s)" for name in VARIANTS), flush=True)
    total = {name: sum(row[f"{name}_ms"] for row in rows) for name in VARIANTS}
    print("all layers: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in total.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "batch": args.batch, "image_size": args.image_size, "precision": args.precision,
            "rounds": args.rounds, "layers": rows, "total_ms": total}, indent=1) + "\n")


if __name__ == "__main__":
    main()
