"""Other ways to run the 64x64 networks' 4x4 stride-2 convolutions, timed against oneDNN's own.

    python benchmarks/conv_variants.py [--batch 128] [--image-size 64] [--precision bf16] [--channels-last]
        [--rounds 5] [--json PATH]

The convolutions are 90% of the `dcgan` preset's bf16 step (`step_profile.py`), so a faster step
has to run them differently. For each 4x4 stride-2 layer (width 64, the preset's shapes), forward
and backward (input and weight gradients, as in training), in ways that compute the same thing.
D's convolutions:

- `native`: `F.conv2d(x, w, stride=2, padding=1)`, what the networks run (oneDNN);
- `space_to_depth`: the padded input's 2x2 pixel blocks moved into channels
  (`pixel_unshuffle`), then a 2x2 stride-1 convolution with the weights rearranged to match;
- `unfold_matmul`: the 4x4 patches laid out as columns (`F.unfold`), then one batched matrix product;
- `matmul`: what the networks run on small maps with `--convolutions matmul` (networks/matmul_conv.py):
  the forward pass and weight gradient as the patches (rows of channels-last pixels) times the
  weights, the input gradient (a sum of overlapping patches) oneDNN's.

G's transposed convolutions:

- `native`: `F.conv_transpose2d(x, w, stride=2, padding=1)`;
- `sub_pixel`: one 3x3 stride-1 convolution to four times the channels (one set per output pixel
  parity, 4 of its 9 taps used), then `pixel_shuffle`: 2.25 times the multiply-adds, in the
  convolution kernel that runs fastest here;
- `matmul`: as `--convolutions matmul` runs it (networks/matmul_conv.py): the input and weight
  gradients as the output gradient's patches times the weights, the forward pass oneDNN's.

For the two layers with three channels (D's first, G's last), which run far below the others' rate,
also `fp32` (the layer alone outside bf16 autocast) and `padded` (the three channels padded with zeros
to 16, the width oneDNN's bf16 kernels block channels by: 5.3 times the multiply-adds).

Rounds alternate a layer's variants (A B C A B C ...); each reports its best round, in ms and in GFLOP/s
(2 x multiply-adds of forward, input gradient and weight gradient), and the best square matrix
product's rate in the same run (`roofline.py`'s ceiling) to read them against. Run it with nothing
else on the machine.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from dcgan.host_memory import keep_freed_host_memory
from dcgan.networks.matmul_conv import conv2d_as_matmul, conv_transpose2d_as_matmul
from machine import cpu_name
from roofline import matmul_peak


def native(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 convolution as the networks run it."""
    return F.conv2d(x, weight, stride=2, padding=1)


def space_to_depth(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same convolution as a 2x2 stride-1 one over the padded input's 2x2 pixel blocks."""
    out_channels, in_channels = weight.shape[:2]
    # kernel row 2a + dy, column 2b + dx -> channel c*4 + dy*2 + dx (pixel_unshuffle's order), offset (a, b)
    blocks = weight.reshape(out_channels, in_channels, 2, 2, 2, 2).permute(0, 1, 3, 5, 2, 4)
    blocked = F.pixel_unshuffle(F.pad(x, (1, 1, 1, 1)), 2)  # (B, 4C, H/2 + 1, W/2 + 1)
    return F.conv2d(blocked, blocks.reshape(out_channels, in_channels * 4, 2, 2))  # (B, O, H/2, W/2)


def unfold_matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same convolution as a matrix product over the input's 4x4 patches."""
    side = x.shape[-1] // 2
    columns = F.unfold(x, 4, padding=1, stride=2)  # (B, C*16, side*side)
    return (weight.reshape(weight.shape[0], -1) @ columns).view(x.shape[0], -1, side, side)  # (B, O, side, side)


def native_transposed(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 stride-2 transposed convolution as the generator runs it."""
    return F.conv_transpose2d(x, weight, stride=2, padding=1)


# Output row 2i + parity takes input rows i - 1, i, i + 1 through these kernel rows (4: none).
SUB_PIXEL_TAPS = torch.tensor([[3, 1, 4], [4, 2, 0]])


def sub_pixel(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The same transposed convolution as a 3x3 convolution to each output pixel parity, then a pixel shuffle."""
    in_channels, out_channels = weight.shape[:2]
    padded = F.pad(weight, (0, 1, 0, 1))  # (C, O, 5, 5), row and column 4 zero
    rows = padded[:, :, SUB_PIXEL_TAPS]  # (C, O, 2, 3, 5): [row parity, row tap]
    kernel = rows[..., SUB_PIXEL_TAPS]  # (C, O, 2, 3, 2, 3): [..., column parity, column tap]
    kernel = kernel.permute(1, 2, 4, 0, 3, 5).reshape(out_channels * 4, in_channels, 3, 3)
    return F.pixel_shuffle(F.conv2d(x, kernel, padding=1), 2)  # (B, O, 2H, 2W)


def in_fp32(fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Callable:
    """`fn` run in fp32 whatever autocast is on outside it."""
    def run(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", enabled=False):
            return fn(x.float(), weight.float())
    return run


PADDED_CHANNELS = 16


def padded(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """D's first convolution with its three input channels padded with zeros to 16."""
    extra = PADDED_CHANNELS - x.shape[1]
    return native(F.pad(x, (0, 0, 0, 0, 0, extra)), F.pad(weight, (0, 0, 0, 0, 0, extra)))


def padded_transposed(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """G's last transposed convolution to 16 output channels, all but its three dropped."""
    out_channels = weight.shape[1]
    weight = F.pad(weight, (0, 0, 0, 0, 0, PADDED_CHANNELS - out_channels))
    return native_transposed(x, weight)[:, :out_channels]


def matmul(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The convolution as the networks run it on small maps with `--convolutions matmul`."""
    return conv2d_as_matmul(x, weight, stride=2, padding=1)


def matmul_transposed(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The transposed convolution as the networks run it on small maps with `--convolutions matmul`."""
    return conv_transpose2d_as_matmul(x, weight, stride=2, padding=1)


VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "native": native, "space_to_depth": space_to_depth, "unfold_matmul": unfold_matmul, "matmul": matmul}
TRANSPOSED_VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "native": native_transposed, "sub_pixel": sub_pixel, "matmul": matmul_transposed}
NARROW_VARIANTS = {"fp32": in_fp32(native), "padded": padded}
NARROW_TRANSPOSED_VARIANTS = {"fp32": in_fp32(native_transposed), "padded": padded_transposed}


def layer_shapes(image_size: int, width: int = 64) -> list[tuple[int, int, int]]:
    """(in channels, out channels, input side) of the dcgan discriminator's stride-2 layers."""
    shapes, channels, side = [], 3, image_size
    out = width
    while side > 4:
        shapes.append((channels, out, side))
        channels, out, side = out, min(out * 2, width * 16), side // 2
    return shapes


def transposed_shapes(image_size: int, width: int = 64) -> list[tuple[int, int, int]]:
    """(in channels, out channels, input side) of the dcgan generator's stride-2 layers: D's, mirrored."""
    return [(c_out, c_in, side // 2) for c_in, c_out, side in reversed(layer_shapes(image_size, width))]


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
    parser.add_argument("--channels-last", action="store_true", help="inputs and weights in channels-last order")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    keep_freed_host_memory()  # as the dcgan command does
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    torch.manual_seed(0)
    rows = []
    layers = [("D", VARIANTS, shape) for shape in layer_shapes(args.image_size)]
    layers += [("G", TRANSPOSED_VARIANTS, shape) for shape in transposed_shapes(args.image_size)]
    for network, variants, (in_channels, out_channels, side) in layers:
        if 3 in (in_channels, out_channels):
            variants = {**variants, **(NARROW_VARIANTS if network == "D" else NARROW_TRANSPOSED_VARIANTS)}
        layout = torch.channels_last if args.channels_last else torch.contiguous_format
        x = torch.randn(args.batch, in_channels, side, side).contiguous(memory_format=layout)
        shape = (out_channels, in_channels) if network == "D" else (in_channels, out_channels)
        weight = (torch.randn(*shape, 4, 4) * 0.02).contiguous(memory_format=layout)
        reference = variants["native"](x, weight)
        for fn in variants.values():  # the same numbers (fp32), else the timing means nothing
            torch.testing.assert_close(fn(x, weight), reference, rtol=1e-4, atol=1e-4)
        best = {name: float("inf") for name in variants}
        for _ in range(args.rounds + 1):  # the first round warms up
            for name, fn in variants.items():
                best[name] = min(best[name], time_variant(fn, x, weight, dtype))
        passes = 3 if in_channels != 3 else 2
        output_side = side // 2 if network == "D" else side  # the side the 4x4 taps are summed over
        flops = passes * 2 * args.batch * out_channels * in_channels * 16 * output_side ** 2
        row = {"network": network, "layer": f"{in_channels}->{out_channels}, {side}x{side}",
               **{f"{name}_ms": best[name] * 1e3 for name in variants},
               **{f"{name}_gflops": flops / best[name] / 1e9 for name in variants}}
        rows.append(row)
        print(f"{network} {row['layer']}: " + ", ".join(
            f"{name} {best[name] * 1e3:.1f} ms ({flops / best[name] / 1e9:.0f} GFLOP/s)" for name in variants),
            flush=True)
    total = {f"{network} {name}": sum(row[f"{name}_ms"] for row in rows if row["network"] == network)
             for network, variants in (("D", VARIANTS), ("G", TRANSPOSED_VARIANTS)) for name in variants}
    print("all layers: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in total.items()))
    peak = matmul_peak(dtype or torch.float32) / 1e9
    print(f"best square matrix product: {peak:.0f} GFLOP/s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "batch": args.batch, "image_size": args.image_size, "precision": args.precision,
            "channels_last": args.channels_last,
            "rounds": args.rounds, "matmul_gflops": peak, "layers": rows, "total_ms": total}, indent=1) + "\n")


if __name__ == "__main__":
    main()
