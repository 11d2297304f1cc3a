"""Walks through latent space as uint8 frames: closed walks through random anchor points of the noise,
morphs from class to class at fixed noise, walks from one seed's samples to another's and back, and
from one given latent (a projected picture's) to another and back; saved as a looping GIF (walks side
by side) or one PNG grid (a walk per row)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import UserError
from .files import atomic_write
from .images import grid_image, to_uint8
from .ops import seeded_noise
from .sampling import require_images_fit

# PIL writes a GIF frame's delay in whole centiseconds, 16 bits: 0.01 s to 655.35 s (0 would be "as fast as
# the viewer likes").
MIN_FPS, MAX_FPS = 1000 / 655350, 100.0
GIF_MAX_SIDE = 65535  # pixels: a GIF's width and height are 16-bit
GIF_SCALE = 2  # a GIF's frames are enlarged (nearest neighbour) so small images are visible
# uint8 copies of each image held while a walk is rendered and saved: the frames, their stack, the
# grids and the GIF's enlarged frames.
WALK_COPIES = 8


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


def check_fps(fps: float) -> None:
    """Refuse an --fps whose frame delay a GIF cannot hold (0.01 s to 655.35 s a frame)."""
    if not MIN_FPS <= fps <= MAX_FPS:
        raise UserError(f"--fps {fps:g}: a GIF frame shows for 0.01 s to 655.35 s, so --fps must be from "
                        f"{MIN_FPS:.3g} to {MAX_FPS:g}")


def require_walk_fits(what: str, frames: int, walks: int, *, out: Path, latent_dim: int, image_size: int,
                      channels: int) -> None:
    """Refuse a walk of `frames` frames of `walks` images that would not fit in memory or (a GIF) in a
    GIF's width; `what` names the options that set the number of images."""
    width = GIF_SCALE * (walks * (image_size + 2) + 2)
    if out.suffix.lower() == ".gif" and width > GIF_MAX_SIDE:
        raise UserError(f"--num {walks}: walks side by side would make a GIF {width:,} pixels wide, more than "
                        f"the {GIF_MAX_SIDE:,} it holds; draw fewer, or a .png grid")
    require_images_fit(what, frames * walks, latent_dim=latent_dim, image_size=image_size, channels=channels,
                       copies=WALK_COPIES)


@torch.no_grad()
def walk_through_anchors(generator: torch.nn.Module, *, walks: int, anchors: int, frames_per_segment: int,
                         seed: int, device: torch.device, label: int | None = None) -> np.ndarray:
    """uint8 frames (anchors * frames_per_segment, walks, H, W, C): `walks` closed walks through `anchors`
    random points of the noise (from `seed`), each at one label: `label` for all when given, else the
    generator's own (a class or cluster per walk, or none)."""
    rng = torch.Generator().manual_seed(seed)
    path = latent_walk(torch.randn(anchors, walks, generator.latent_dim, generator=rng), frames_per_segment)
    labels = torch.full((walks,), label) if label is not None else generator.sample_labels(walks, seed=seed)
    return np.stack([render(generator, noise, labels, device) for noise in path])


@torch.no_grad()
def morph_between_classes(generator: torch.nn.Module, classes: Sequence[int], *, walks: int,
                          frames_per_segment: int, seed: int, device: torch.device) -> np.ndarray:
    """uint8 frames (len(classes) * frames_per_segment, walks, H, W, C): `walks` noise vectors (from `seed`),
    each morphing through `classes` in turn and back to the first, the class embeddings mixed."""
    rng = torch.Generator().manual_seed(seed)
    noise = torch.randn(walks, generator.latent_dim, generator=rng).to(device)
    order = torch.tensor(list(classes))
    starts, ends, mix = class_morph(len(order), frames_per_segment)
    return np.stack([to_uint8(generator.morph(noise, order[a].repeat(walks).to(device),
                                              order[b].repeat(walks).to(device), float(t)))
                     for a, b, t in zip(starts, ends, mix)])


@torch.no_grad()
def walk_between_seeds(generator: torch.nn.Module, *, seed: int, to_seed: int, num: int, walks: int,
                       frames_per_segment: int, device: torch.device, label: int | None = None) -> np.ndarray:
    """uint8 frames (2 * frames_per_segment, walks, H, W, C): the first `walks` of the `num` samples of `seed`
    (the noise and labels sampling.generate draws) walking to those of `to_seed` and back, labels fixed:
    `label` for all when given, else the generator's own for `seed`."""
    def first_row(of: int) -> torch.Tensor:
        return seeded_noise(num, generator.latent_dim, of)[:walks]

    if label is not None:
        labels = torch.full((walks,), label)
    else:
        own = generator.sample_labels(num, seed=seed)
        labels = None if own is None else own[:walks]
    path = latent_walk(torch.stack([first_row(seed), first_row(to_seed)]), frames_per_segment)
    return np.stack([render(generator, noise, labels, device) for noise in path])


@torch.no_grad()
def walk_between_latents(generator: torch.nn.Module, start: torch.Tensor, end: torch.Tensor, *,
                         frames_per_segment: int, device: torch.device,
                         labels: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 frames (2 * frames_per_segment, 1, H, W, C): one walk from latent `start` (latent_dim,) to `end`
    and back; for a labelled generator, the class embedding is mixed from `labels[0]`'s to `labels[1]`'s
    along the way, in step with the noise."""
    path = latent_walk(torch.stack([start, end]).unsqueeze(1), frames_per_segment)  # (2F, 1, D)
    if labels is None:
        return np.stack([render(generator, noise, None, device) for noise in path])
    order = torch.tensor(labels)
    starts, ends, mix = class_morph(2, frames_per_segment)
    return np.stack([to_uint8(generator.morph(noise.to(device), order[a:a + 1].to(device),
                                              order[b:b + 1].to(device), float(t)))
                     for noise, a, b, t in zip(path, starts, ends, mix)])


def save_walk(frames: np.ndarray, out: Path, *, fps: float) -> None:
    """uint8 frames (T, N, H, W, C) as a looping GIF of the N walks side by side, or (`.png`) a grid, a walk per
    row; written atomically (whole or not at all)."""
    if out.suffix.lower() == ".png":
        walks = frames.transpose(1, 0, 2, 3, 4).reshape(-1, *frames.shape[2:])  # walk-major: one row each
        atomic_write(out, grid_image(walks, columns=frames.shape[0]).save)
        return
    pictures = [grid_image(frame, columns=frame.shape[0]) for frame in frames]
    pictures = [p if p.mode == "L" else p.convert("RGB") for p in pictures]
    pictures = [p.resize((p.width * GIF_SCALE, p.height * GIF_SCALE), Image.Resampling.NEAREST) for p in pictures]
    atomic_write(out, lambda tmp: pictures[0].save(tmp, save_all=True, append_images=pictures[1:],
                                                   duration=round(1000 / fps), loop=0))


@torch.no_grad()
def render(generator: torch.nn.Module, noise: torch.Tensor, labels: torch.Tensor | None,
           device: torch.device) -> np.ndarray:
    """uint8 images (N, H, W, C) of one frame's noise (N, D) and labels (N,) or None."""
    return to_uint8(generator(noise.to(device), None if labels is None else labels.to(device)))
