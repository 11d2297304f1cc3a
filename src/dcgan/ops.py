"""Small tensor helpers that several layers share: pairwise distances and eval mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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
