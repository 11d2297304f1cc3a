"""Differentiable augmentation (Zhao et al., 2020): the same random translation and cutout for
real and generated images before D, so D cannot memorise the training set and G still gets
gradients through the transformation."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def translate(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to `ratio` of its size in each direction, filling with background (-1)."""
    b, _, h, w = x.shape
    pad_h, pad_w = max(1, int(h * ratio)), max(1, int(w * ratio))
    shift_y = torch.randint(-pad_h, pad_h + 1, (b, 1, 1), device=x.device)
    shift_x = torch.randint(-pad_w, pad_w + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + shift_y + pad_h  # (B, H, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + shift_x + pad_w  # (B, 1, W)
    padded = F.pad(x, (pad_w, pad_w, pad_h, pad_h), value=-1.0)  # (B, C, H + 2p, W + 2p)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Set a random square of `ratio` times the image size to background (-1) in each image."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=x.device) - size_h // 2
    left = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=x.device) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, -1.0), x)


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """Translation, then cutout."""
    return cutout(translate(x))
