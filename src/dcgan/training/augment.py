"""Augmentation of D's inputs, real and generated alike, so D cannot memorise the training set
while G still gets gradients through the transformations: DiffAugment (Zhao et al., 2020), a
random translation and cutout at a fixed strength, and adaptive discriminator augmentation
(Karras et al., 2020), whose strength follows D's overfitting."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from .distributed import World, mean_over_ranks


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


def cutout(x: torch.Tensor, ratio: float = 0.5, fill: float = -1.0) -> torch.Tensor:
    """Set a random square of `ratio` times the image size to `fill` (by default background, -1) in each image."""
    b, _, h, w = x.shape
    size_h, size_w = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + (1 - size_h % 2), (b, 1, 1), device=x.device) - size_h // 2
    left = torch.randint(0, w + (1 - size_w % 2), (b, 1, 1), device=x.device) - size_w // 2
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= top) & (rows < top + size_h) & (cols >= left) & (cols < left + size_w)  # (B, H, W)
    return torch.where(inside.unsqueeze(1), torch.full_like(x, fill), x)


def diff_augment(x: torch.Tensor) -> torch.Tensor:
    """Translation, then cutout."""
    return cutout(translate(x))


# ---------------------------------------------------------------------------------------------
# Adaptive discriminator augmentation (Karras et al., 2020): each operation is applied to each
# image with probability p, which follows D's overfitting. Images are in [-1, 1], (B, C, H, W),
# of any channel count; every operation is differentiable, keeps the dtype and stays in [-1, 1].
# 90-degree rotations are left out: the pictures here have an up (a digit turned a quarter is
# another shape, or another digit), and D's capacity would go on orientations the data never has;
# zoom, rotation by any angle and stretch (Karras et al.'s geometric group) are an option, `geometric`.
# ---------------------------------------------------------------------------------------------

ADA_INTERVAL = 4  # steps between adjustments of p, as Karras et al.
# Below 1, so that part of D's input is always untransformed: that is what keeps the transformations
# from leaking into G's images; Karras et al. found leaks unlikely while p stays below about 0.8.
MAX_PROBABILITY = 0.8
BRIGHTNESS_STD = 0.2  # Karras et al.'s strengths: an offset N(0, 0.2), factors 2^N(0, 0.5) and 2^N(0, 1)
CONTRAST_LOG2_STD = 0.5
SATURATION_LOG2_STD = 1.0
SCALE_LOG2_STD = 0.2  # the geometric operations' strengths, also Karras et al.'s: zoom and stretch 2^N(0, 0.2)


def chosen(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Which images of the batch an operation applies to, each with probability `p`: (B, 1, 1, 1) bool."""
    return (torch.rand(x.shape[0], device=x.device) < p).view(-1, 1, 1, 1)


def random_flip(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Mirror images left to right."""
    return torch.where(chosen(x, p), x.flip(3), x)


def random_translate(x: torch.Tensor, p: float | torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift images by whole pixels, up to `ratio` of their size each way, and never by nothing.

    The edges are filled by reflection (as Karras et al.), so the picture runs on past its border
    instead of ending in a band of background that only shifted images have; on MNIST's black
    borders the two are the same.
    """
    b, _, h, w = x.shape
    reach_h, reach_w = max(1, int(h * ratio)), max(1, int(w * ratio))
    side_h, side_w = 2 * reach_h + 1, 2 * reach_w + 1
    centre = reach_h * side_w + reach_w  # the offset (0, 0), skipped: an applied shift moves the image
    offset = torch.randint(0, side_h * side_w - 1, (b,), device=x.device)
    offset = offset + (offset >= centre).long()
    moved = chosen(x, p).view(b, 1, 1)
    shift_y = (offset // side_w - reach_h).view(b, 1, 1) * moved
    shift_x = (offset % side_w - reach_w).view(b, 1, 1) * moved
    rows = torch.arange(h, device=x.device).view(1, h, 1) + shift_y + reach_h  # (B, H, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w) + shift_x + reach_w  # (B, 1, W)
    padded = F.pad(x, (reach_w, reach_w, reach_h, reach_h), mode="reflect")  # (B, C, H + 2r, W + 2r)
    batch = torch.arange(b, device=x.device).view(b, 1, 1)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def random_brightness(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Add an offset N(0, 0.2) to every pixel of an image."""
    offset = (torch.randn(x.shape[0], 1, 1, 1, device=x.device) * BRIGHTNESS_STD).to(x.dtype)
    return torch.where(chosen(x, p), (x + offset).clamp(-1, 1), x)


def random_contrast(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Scale an image's values about mid-grey (0) by 2^N(0, 0.5)."""
    factor = torch.exp2(torch.randn(x.shape[0], 1, 1, 1, device=x.device) * CONTRAST_LOG2_STD).to(x.dtype)
    return torch.where(chosen(x, p), (x * factor).clamp(-1, 1), x)


def random_saturation(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Scale a colour image's distance from its grey (the mean of its channels) by 2^N(0, 1)."""
    factor = torch.exp2(torch.randn(x.shape[0], 1, 1, 1, device=x.device) * SATURATION_LOG2_STD).to(x.dtype)
    grey = x.mean(dim=1, keepdim=True)
    return torch.where(chosen(x, p), (grey + (x - grey) * factor).clamp(-1, 1), x)


def warp(x: torch.Tensor, zoom: torch.Tensor, angle: torch.Tensor, stretch: torch.Tensor) -> torch.Tensor:
    """Each image zoomed by `zoom`, rotated by `angle` (radians) and stretched by `stretch` (wider by it, shorter by
    its inverse) about its centre, each (B,); resampled bilinearly, the edges filled by reflection."""
    # affine_grid maps each output pixel to where it samples the input: the inverse transformation
    cos, sin, zero = torch.cos(angle), torch.sin(angle), torch.zeros_like(angle)
    scale_x, scale_y = 1 / (zoom * stretch), stretch / zoom
    theta = torch.stack((torch.stack((cos * scale_x, -sin * scale_y, zero), dim=1),
                         torch.stack((sin * scale_x, cos * scale_y, zero), dim=1)), dim=1)  # (B, 2, 3)
    grid = F.affine_grid(theta.float(), list(x.shape), align_corners=False)  # (B, H, W, 2)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False).to(x.dtype)


def random_zoom_rotate(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Zoom an image by 2^N(0, 0.2), rotate it by an angle uniform in [-180, 180) degrees and stretch it by
    2^N(0, 0.2), each with probability p: the geometric operations Karras et al. found to help most."""
    b = x.shape[0]
    zoom = torch.where(chosen(x, p).view(b), torch.exp2(torch.randn(b, device=x.device) * SCALE_LOG2_STD), 1.0)
    angle = torch.where(chosen(x, p).view(b), (torch.rand(b, device=x.device) * 2 - 1) * math.pi, 0.0)
    stretch = torch.where(chosen(x, p).view(b), torch.exp2(torch.randn(b, device=x.device) * SCALE_LOG2_STD), 1.0)
    moved = (zoom != 1) | (angle != 0) | (stretch != 1)  # the others keep their exact pixels
    return torch.where(moved.view(b, 1, 1, 1), warp(x, zoom, angle, stretch), x)


def random_cutout(x: torch.Tensor, p: float | torch.Tensor) -> torch.Tensor:
    """Set a square of half the image's size, centred anywhere in it, to mid-grey (0), as Karras et al."""
    return torch.where(chosen(x, p), cutout(x, fill=0.0), x)


def adaptive_augment(x: torch.Tensor, p: float | torch.Tensor, *, geometric: bool = False,
                     cutout: bool = False) -> torch.Tensor:
    """Flip, translation, (with `geometric`) zoom, rotation and stretch, brightness, contrast, (with more than
    one channel) saturation and (with `cutout`) cutout, each with probability p."""
    x = random_translate(random_flip(x, p), p)
    if geometric:
        x = random_zoom_rotate(x, p)
    x = random_contrast(random_brightness(x, p), p)
    if x.shape[1] > 1:
        x = random_saturation(x, p)
    return random_cutout(x, p) if cutout else x


class AdaptiveAugment:
    """Adaptive augmentation of D's inputs: the probability p, and its adjustment from D's overfitting.

    The signal is r = E[sign(D(x))] over the real images of the last `interval` steps (of every
    process): near 1 when D is sure of every training image, the sign of overfitting. Every
    `interval` steps p moves by ±(batch · interval) / `speed` towards the level where r is the
    `target`, so p can go from 0 to 1 in `speed` images; it stays in [0, MAX_PROBABILITY].
    With `geometric`, the operations include zoom, rotation and stretch; with `cutout`, cutout.
    """

    def __init__(self, *, target: float, speed: int, batch_size: int, device: torch.device,
                 world: World = World(), interval: int = ADA_INTERVAL, geometric: bool = False,
                 cutout: bool = False) -> None:
        self.target = target
        self.geometric = geometric
        self.cutout = cutout
        self.adjustment = batch_size * interval / speed
        self.interval = interval
        self.world = world
        self.device = device
        self.reset()

    def reset(self) -> None:
        """The state of a new run: p = 0, no signal yet."""
        self.probability = torch.zeros((), device=self.device)
        self.signal = torch.full((), math.nan, device=self.device)  # r of the last adjustment
        self.signs = torch.zeros(2, device=self.device)  # the sum of sign(D(x)) since it, and the images counted
        self.steps = 0

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """The images (B, C, H, W), each operation applied to each with probability p."""
        return adaptive_augment(images, self.probability, geometric=self.geometric, cutout=self.cutout)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Count D's logits (B, 1) of (augmented) real images into the signal."""
        self.signs[0] += real_logits.detach().sign().sum()
        self.signs[1] += real_logits.numel()

    def end_step(self) -> None:
        """After each training step: adjust p every `interval` steps."""
        self.steps += 1
        if self.steps % self.interval == 0:
            self.adjust()

    def adjust(self) -> None:
        """Move p one adjustment towards the target signal (on the device: no host sync)."""
        totals = mean_over_ranks(self.world, self.signs)
        self.signal = totals[0] / totals[1]
        step = torch.sign(self.signal - self.target) * self.adjustment
        self.probability = (self.probability + step).clamp(0.0, MAX_PROBABILITY)
        self.signs = torch.zeros_like(self.signs)

    def readings(self) -> torch.Tensor:
        """(p, the last signal) on the device; the signal is NaN before the first adjustment."""
        return torch.stack((self.probability, self.signal))

    def state_dict(self) -> dict[str, Any]:
        """p, the last signal, the signal's running sums and the step count, as a checkpoint stores them."""
        return {"probability": self.probability.clone(), "signal": self.signal.clone(), "signs": self.signs.clone(),
                "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Undo `state_dict`; None (a checkpoint written without it) starts from p = 0."""
        self.reset()
        if state is not None:
            self.probability = state["probability"].to(self.device, torch.float32).reshape(())
            self.signal = state["signal"].to(self.device, torch.float32).reshape(())
            self.signs = state["signs"].to(self.device, torch.float32).reshape(2)
            self.steps = int(state["steps"])
