"""Convolutions on small maps partly as matrix products: faster than oneDNN's kernels where AMX multiplies.

On a CPU with AMX tiles a bf16 matrix product runs at about 2.9 TFLOP/s on two cores, while
oneDNN's convolutions at the dcgan networks' shapes reach 0.4-0.8 (docs/performance.md). Where
the maps are small and the channels wide (the layers next to the 4x4 maps) the patches are cheap
to copy, so laying them out as the rows of a matrix ("im2col", channels last) and multiplying by
the weights beats the convolution kernel (those layers 1.8-1.9 times as fast at batch 128, in bf16).
On larger maps the copies of the patches cost more than the product saves, so those layers keep
PyTorch's kernels: `Conv2d` and `ConvTranspose2d` below take the matrix-product path only when
`as_matmul` is set (`use_matmul`) and the smaller of their input and output maps is at most
`MATMUL_MAX_SIDE` pixels a side. Their weights and state-dict names are nn.Conv2d's and
nn.ConvTranspose2d's, so checkpoints, exports and spectral norm see no difference.

Only the products that have a single sum per output go through the matrix product: a convolution's
forward pass and weight gradient, a transposed convolution's input and weight gradients (and its
forward pass from a 1x1 map). The passes that add up overlapping patches (a convolution's input
gradient, a transposed convolution's forward pass) stay PyTorch's: in bf16 a product's output is
rounded before such a sum, which made those outputs' error 1.4 times oneDNN's, which accumulates in
float32 and rounds once. So every value has the rounding of PyTorch's own kernels. The backward
passes are written by hand (a second derivative, which R1 needs, is refused).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

MATMUL_MAX_SIDE = 4  # the layers measured faster as a product: those touching the 4x4 (or 1x1) maps


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in any memory order -> the same values as a contiguous (B, H, W, C) tensor."""
    return x.permute(0, 2, 3, 1).contiguous()


def patches(x: torch.Tensor, *, kernel: int, stride: int, padding: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, H_out, W_out, kernel, kernel, C): every output position's patch, a strided view
    of the zero-padded input (a copy only when there is padding)."""
    if padding:
        batch, height, width, channels = x.shape
        padded = x.new_zeros(batch, height + 2 * padding, width + 2 * padding, channels)
        padded[:, padding:padding + height, padding:padding + width] = x
        x = padded
    batch, height, width, channels = x.shape
    out_height, out_width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
    b, h, w, c = x.stride()
    return x.as_strided((batch, out_height, out_width, kernel, kernel, channels), (b, h * stride, w * stride, h, w, c))


def refuse_second_derivative() -> None:
    """Raise in a backward pass asked to build a graph (create_graph=True): its result would be a constant."""
    if torch.is_grad_enabled():
        raise RuntimeError("a convolution run as a matrix product has no second derivative: "
                           "build the network without use_matmul (--convolutions native)")


class _Conv2dAsMatmul(torch.autograd.Function):
    """y = patches(x) @ W^T, with W (out, in, k, k) laid out as (out, k * k * in)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        in_channels = x.shape[1]
        out_channels, kernel = weight.shape[0], weight.shape[2]
        x_hwc = to_channels_last(x)  # (B, H, W, C_in)
        grid = patches(x_hwc, kernel=kernel, stride=stride, padding=padding)  # (B, H', W', k, k, C_in)
        batch, out_height, out_width = grid.shape[:3]
        matrix = weight.permute(0, 2, 3, 1).reshape(out_channels, kernel * kernel * in_channels)
        y = grid.reshape(-1, matrix.shape[1]) @ matrix.T  # (B * H' * W', C_out)
        ctx.save_for_backward(x_hwc, matrix)
        ctx.shape = (in_channels, kernel, stride, padding)
        return y.view(batch, out_height, out_width, out_channels).permute(0, 3, 1, 2)  # (B, C_out, H', W')

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        refuse_second_derivative()
        x_hwc, matrix = ctx.saved_tensors
        in_channels, kernel, stride, padding = ctx.shape
        grad_y = grad_y.to(matrix.dtype)
        grad_rows = to_channels_last(grad_y).view(-1, matrix.shape[0])  # (B * H' * W', C_out)
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:  # a sum over overlapping patches: PyTorch's kernel (see the module's docstring)
            weight = matrix.view(-1, kernel, kernel, in_channels).permute(0, 3, 1, 2)
            grad_x = torch.ops.aten.convolution_backward(
                grad_y, x_hwc.permute(0, 3, 1, 2), weight, None, [stride] * 2, [padding] * 2,
                [1, 1], False, [0, 0], 1, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            rows = patches(x_hwc, kernel=kernel, stride=stride, padding=padding).reshape(-1, matrix.shape[1])
            grad_weight = (grad_rows.T @ rows).view(-1, kernel, kernel, in_channels).permute(0, 3, 1, 2)
        return grad_x, grad_weight, None, None


class _ConvTranspose2dAsMatmul(torch.autograd.Function):
    """The adjoint of the above: x's gradient is patches(dy) @ W^T and W's x^T @ patches(dy), with W (in, out, k, k)
    laid out as (in, k * k * out); the forward pass, a sum over overlapping patches, is PyTorch's."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int) -> torch.Tensor:
        batch, in_channels, height, width = x.shape
        out_channels, kernel = weight.shape[1], weight.shape[2]
        x_rows = to_channels_last(x).view(-1, in_channels)  # (B * H * W, C_in)
        matrix = weight.permute(0, 2, 3, 1).reshape(in_channels, -1)  # (C_in, k * k * C_out)
        ctx.save_for_backward(x_rows, matrix)
        ctx.shape = (kernel, stride, padding, (batch, in_channels, height, width))
        if (height, width, padding) == (1, 1, 0):  # one pixel to a k x k map (G's first layer): nothing overlaps
            return (x_rows @ matrix).view(batch, kernel, kernel, out_channels).permute(0, 3, 1, 2)
        return torch.nn.functional.conv_transpose2d(x, weight, stride=stride, padding=padding)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None, None]:
        refuse_second_derivative()
        x_rows, matrix = ctx.saved_tensors
        kernel, stride, padding, (batch, in_channels, height, width) = ctx.shape
        grad_y_hwc = to_channels_last(grad_y.to(matrix.dtype))
        rows = patches(grad_y_hwc, kernel=kernel, stride=stride, padding=padding).reshape(-1, matrix.shape[1])
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = (rows @ matrix.T).view(batch, height, width, in_channels).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            grad_weight = (x_rows.T @ rows).view(in_channels, kernel, kernel, -1).permute(0, 3, 1, 2)
        return grad_x, grad_weight, None, None


def _compute_dtypes(x: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Input and weight in the dtype the convolution would run in: autocast's when it is on, else the input's."""
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    return x.to(dtype), weight.to(dtype)


def conv2d_as_matmul(x: torch.Tensor, weight: torch.Tensor, *, stride: int, padding: int) -> torch.Tensor:
    """F.conv2d(x, weight, stride=stride, padding=padding) (square kernel, no bias) as one matrix product."""
    x, weight = _compute_dtypes(x, weight)
    with torch.autocast(x.device.type, enabled=False):
        return _Conv2dAsMatmul.apply(x, weight, stride, padding)


def conv_transpose2d_as_matmul(x: torch.Tensor, weight: torch.Tensor, *, stride: int, padding: int) -> torch.Tensor:
    """F.conv_transpose2d(x, weight, stride=stride, padding=padding) (square kernel, no bias) as one product."""
    x, weight = _compute_dtypes(x, weight)
    with torch.autocast(x.device.type, enabled=False):
        return _ConvTranspose2dAsMatmul.apply(x, weight, stride, padding)


def _plain(layer: nn.Conv2d | nn.ConvTranspose2d) -> bool:
    """Whether the layer is one the product computes: square kernel, stride and padding, zero padding,
    no bias, dilation or groups (the dcgan networks' layers)."""
    (kh, kw), (sh, sw), padding = layer.kernel_size, layer.stride, layer.padding
    return (kh == kw and sh == sw and isinstance(padding, tuple) and padding[0] == padding[1]
            and layer.bias is None and layer.groups == 1 and layer.dilation == (1, 1)
            and layer.padding_mode == "zeros" and tuple(getattr(layer, "output_padding", (0, 0))) == (0, 0))


class Conv2d(nn.Conv2d):
    """nn.Conv2d that runs partly as matrix products when `as_matmul` is set and a map is small."""

    as_matmul = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.as_matmul:
            kernel, stride, padding = self.kernel_size[0], self.stride[0], self.padding[0]
            out_side = (min(x.shape[-2:]) + 2 * padding - kernel) // stride + 1
            if min(min(x.shape[-2:]), out_side) <= MATMUL_MAX_SIDE:
                return conv2d_as_matmul(x, self.weight, stride=stride, padding=padding)
        return super().forward(x)


class ConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d that runs partly as matrix products when `as_matmul` is set and a map is small."""

    as_matmul = False

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if self.as_matmul and output_size is None and min(x.shape[-2:]) <= MATMUL_MAX_SIDE:
            return conv_transpose2d_as_matmul(x, self.weight, stride=self.stride[0], padding=self.padding[0])
        return super().forward(x, output_size)


def use_matmul(network: nn.Module, enabled: bool = True) -> int:
    """Let the network's eligible convolutions run as matrix products on small maps (or stop them); returns
    how many layers may."""
    layers = [m for m in network.modules() if isinstance(m, (Conv2d, ConvTranspose2d)) and _plain(m)]
    for layer in layers:
        layer.as_matmul = enabled
    return len(layers) if enabled else 0
