"""Walks through latent space: spherical interpolation between random anchor points, as a looping
GIF (walks side by side) or one PNG grid (a walk per row)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import grid_image, to_uint8


def slerp(a: torch.Tensor, b: torch.Tensor, t: float) -> torch.Tensor:
    """Spherical interpolation from `a` (t = 0) to `b` (t = 1) along the last dimension.

    Gaussian noise lives near a sphere; a straight line between two points passes through its
    low-density inside, so the path follows the great circle instead (linear where a and b are
    parallel).
    """
    a_unit, b_unit = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    omega = torch.arccos((a_unit * b_unit).sum(-1, keepdim=True).clamp(-1, 1))
    sin = torch.sin(omega)
    straight = sin.abs() < 1e-6
    mixed = (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.where(straight, 1.0, sin)
    return torch.where(straight, (1 - t) * a + t * b, mixed)


def latent_walk(anchors: torch.Tensor, frames_per_segment: int) -> torch.Tensor:
    """Noise for a closed walk through `anchors` (A, N, D): (A * frames_per_segment, N, D), from anchor 0
    back towards it (the frame after the last is the first again, so a looping GIF has no jump)."""
    count = anchors.shape[0]
    frames = [slerp(anchors[i], anchors[(i + 1) % count], step / frames_per_segment)
              for i in range(count) for step in range(frames_per_segment)]
    return torch.stack(frames)


def class_morph(count: int, frames_per_segment: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(from-class index, to-class index, t) of each frame of a closed walk through `count` classes in turn."""
    starts = torch.arange(count).repeat_interleave(frames_per_segment)
    t = torch.arange(frames_per_segment).repeat(count).float() / frames_per_segment
    return starts, (starts + 1) % count, t


def save_walk(frames: list[np.ndarray], out: Path, *, fps: float) -> None:
    """uint8 frames (T, N, H, W, C) as a looping GIF of the N walks side by side, or (`.png`) a grid, a walk per row."""
    stacked = np.stack(frames)  # (T, N, H, W, C)
    if out.suffix.lower() == ".png":
        walks = stacked.transpose(1, 0, 2, 3, 4).reshape(-1, *stacked.shape[2:])  # walk-major: one row each
        grid_image(walks, columns=stacked.shape[0]).save(out)
        return
    pictures = [grid_image(frame, columns=frame.shape[0]) for frame in stacked]
    pictures = [p if p.mode == "L" else p.convert("RGB") for p in pictures]
    pictures = [p.resize((p.width * 2, p.height * 2), Image.Resampling.NEAREST) for p in pictures]
    pictures[0].save(out, save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)


@torch.no_grad()
def render(generator: torch.nn.Module, noise: torch.Tensor, labels: torch.Tensor | None,
           device: torch.device) -> np.ndarray:
    """uint8 images (N, H, W, C) of one frame's noise (N, D) and labels (N,) or None."""
    return to_uint8(generator(noise.to(device), None if labels is None else labels.to(device)))
