"""Small tensor helpers that several layers share: pairwise distances, seeded noise, eval mode, batch-norm
statistics."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def squared_distances(a: torch.Tensor, b: torch.Tensor, *, a_squared_norms: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """|a_i - b_j|² for every row pair, (len(a), len(b)), as |a|² - 2 a·b + |b|² in one matrix product.

    Rounding can make the expansion slightly negative for (nearly) equal rows; it is clamped to 0.
    `a_squared_norms` (len(a), 1) saves recomputing |a|² when `a` is compared with many `b`.
    """
    if a_squared_norms is None:
        a_squared_norms = a.square().sum(1, keepdim=True)
    return torch.addmm(a_squared_norms + b.square().sum(1), a, b.T, alpha=-2).clamp_(min=0)


def seeded_noise(num: int, latent_dim: int, seed: int) -> torch.Tensor:
    """`num` noise vectors (num, latent_dim) from N(0, 1), a function of `seed` alone (global state untouched)."""
    return torch.randn(num, latent_dim, generator=torch.Generator().manual_seed(seed))


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put `modules` in inference mode (batch norm's running statistics, no dropout), then restore each one's mode."""
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, mode in zip(modules, modes):
            module.train(mode)


@torch.no_grad()
def recalibrate_batch_norm(module: nn.Module, *inputs: Any) -> None:
    """Set every batch-norm layer's running mean and variance to the statistics of its input when
    `module(*inputs)` runs, each layer normalising with its new statistics before the next is measured.

    Needed for a moving average of weights: the running statistics it inherits belong to other weights.
    One forward pass in eval mode (so SyncBatchNorm talks to no other process); `inputs` is one batch.
    """
    def measure(layer: nn.modules.batchnorm._BatchNorm, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0].double().transpose(0, 1).flatten(1)  # (C, N * H * W)
        layer.running_mean.copy_(x.mean(1))
        layer.running_var.copy_(x.var(1))  # unbiased, as batch norm keeps it

    layers = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    hooks = [layer.register_forward_pre_hook(measure) for layer in layers]
    try:
        with eval_mode(module):
            module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()
