"""A trained generator in a Python session: `dcgan.load(path)`.

    import dcgan
    g = dcgan.load("runs/x")             # a run directory or a checkpoint file
    images = g.sample(16, seed=0)        # uint8 numpy: N x H x W (greyscale) or N x H x W x C
    typical = g.sample(16, truncation=0.7)  # noise nearer the latent's centre: less variety, more fidelity
    x = g(torch.randn(4, g.latent_dim))  # float tensor in [-1, 1], N x C x H x W
    p = g.project("digit.png")           # the latent whose image is closest to a picture: p.latent, p.distance

Every argument is checked, and a bad one raises `dcgan.UserError` with a one-line message naming
it, worded as the command line words it:

- `load`: `path` a str or os.PathLike naming a run directory or a dcgan checkpoint file (not
  found, a device or pipe, or not a checkpoint: refused); `device` None (the CPU), `auto`, `cpu`,
  `cuda`, `cuda:N` or `mps` (or a torch.device) that this machine has;
- `sample`: `num` a positive integer whose images fit in memory (half of what is available);
  `seed` an integer from 0 to 2**64 - 1 (what torch.Generator takes); `labels` only for a
  class-conditional model, one class or one per image, integers within its classes; `truncation`
  a number greater than 0 and at most 1 (1, the default: none);
- calling it: `z` a finite (no NaN or inf) float tensor or array of shape (N, latent_dim), N >= 1,
  and `labels` as for `sample`;
- `project`: `image` a picture file (str or os.PathLike) or a uint8 array (H, W) or (H, W, C) with
  C 1, 3 or 4; `label` None or one class of a class-conditional model; `steps` an integer from 1
  to 100,000; `seed` as for `sample`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import PROJECTION_STEPS
from .device import select_device
from .errors import UserError
from .limits import require_fits
from .networks import channels_of
from .projection import (PerceptualNetwork, Projection, check_steps, classes_to_try, perceptual_network,
                         picture_from_array, project, read_picture)
from .sampling import (check_seed, check_truncation, generate, is_integer, load_generator, require_images_fit,
                       truncated, user_labels)

DEVICE_NAMES = "None, auto, cpu, cuda, cuda:N or mps"


class TrainedGenerator:
    """A checkpoint's sampling generator (its moving average when it has one), in inference mode."""

    def __init__(self, generator: torch.nn.Module, *, image_size: int, channels: int, device: torch.device,
                 checkpoint: str | os.PathLike | None = None) -> None:
        self.generator = generator
        self.checkpoint = checkpoint  # where it was loaded from: `project` measures distances with its D
        self.device = device
        self.latent_dim: int = generator.latent_dim
        self.num_classes: int | None = generator.label_classes
        self.image_size = image_size
        self.channels = channels

    @torch.no_grad()
    def __call__(self, z: Any, labels: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] for noise `z` (N, latent_dim) and, for a conditional model, labels (N,)."""
        z = self._noise(z)
        require_fits(f"z of {z.shape[0]:,} rows", z.shape[0], 4 * self.channels * self.image_size**2)
        chosen = user_labels(self.generator, labels, z.shape[0])
        if chosen is None:
            chosen = self.generator.sample_labels(z.shape[0], seed=0)  # clusters by their sizes; None otherwise
        return self.generator(z.to(self.device), None if chosen is None else chosen.to(self.device))

    def sample(self, num: int, *, seed: int = 0, labels: int | Sequence[int] | np.ndarray | None = None,
               truncation: float = 1.0) -> np.ndarray:
        """`num` images as uint8 numpy, N x H x W (greyscale) or N x H x W x C, from noise seeded by `seed`.

        A conditional model draws `labels` (one class for all, or one per image), every class
        in turn when none are given. `truncation` psi (0 < psi <= 1) draws the noise closer to the
        latent's centre, z = psi * z with z ~ N(0, I): more faithful, less varied images. These
        generators have no mapping network, so it is the noise itself that is scaled; at 1 (the
        default) the samples are those without truncation, and the same seed scales the same noise.
        """
        if not is_integer(num) or num < 1:
            raise UserError(f"num: must be a positive integer, got {num!r}")
        seed = check_seed(seed, option="seed")
        truncation = check_truncation(truncation, option="truncation")
        require_images_fit(f"num {num:,}", num, latent_dim=self.latent_dim, image_size=self.image_size,
                           channels=self.channels)
        images = generate(truncated(self.generator, truncation), int(num), seed=seed, device=self.device,
                          labels=user_labels(self.generator, labels, int(num)))
        return images[..., 0] if self.channels == 1 else images

    def project(self, image: str | os.PathLike | np.ndarray, *, label: int | None = None,
                steps: int = PROJECTION_STEPS, seed: int = 0) -> Projection:
        """The latent (and class) whose image is closest to `image`, as `dcgan project` finds it: a picture
        file or a uint8 array (H x W or H x W x C), read as training pictures are.

        A class-conditional model tries every class unless `label` names one; the random starts
        are drawn from `seed`.
        """
        steps = check_steps(steps, option="steps")
        seed = check_seed(seed, option="seed")
        if label is not None and not is_integer(label):
            raise UserError(f"label: must be one integer class, got {label!r}")
        classes = classes_to_try(self.generator, label, option="label", source=self.checkpoint or "this generator")
        read = read_picture if isinstance(image, (str, os.PathLike)) else picture_from_array
        picture = read(image, channels=self.channels, image_size=self.image_size, option="image")
        return project(self.generator, picture, classes=classes, steps=steps, seed=seed,
                       network=self._perceptual_network, device=self.device)

    @functools.cached_property
    def _perceptual_network(self) -> PerceptualNetwork | None:
        """The network `project` measures perceptual distances with, read from the checkpoint once."""
        return None if self.checkpoint is None else perceptual_network(self.checkpoint, self.device)

    def _noise(self, z: Any) -> torch.Tensor:
        """`z` as a float32 tensor (N, latent_dim), N >= 1, of finite values; a UserError otherwise."""
        shape = f"(N, {self.latent_dim})"
        try:
            z = torch.as_tensor(z, dtype=torch.float32)
        except (TypeError, ValueError, RuntimeError):
            raise UserError(f"z: must be a float tensor or array of shape {shape}, got {type(z).__name__}") from None
        if z.dim() != 2 or z.shape[1] != self.latent_dim or z.shape[0] < 1:
            raise UserError(f"z: must have shape {shape} with N >= 1, got {tuple(z.shape)}")
        if not torch.isfinite(z).all():
            raise UserError("z: must be finite noise, got NaN or inf")
        return z


def load(path: str | Path, *, device: str | torch.device | None = None) -> TrainedGenerator:
    """The generator of a run directory or checkpoint file, on `device` (default: the CPU)."""
    if not isinstance(path, (str, os.PathLike)):
        raise UserError(f"path: must be a run directory or a checkpoint file (str or Path), got {path!r}")
    chosen = _device(device)
    generator, config = load_generator(path, chosen)
    return TrainedGenerator(generator, image_size=config.image_size, channels=channels_of(config), device=chosen,
                            checkpoint=path)


def _device(device: Any) -> torch.device:
    """The torch.device that `device` names, if this machine has it; a UserError otherwise."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return select_device("auto")
    try:
        chosen = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"device: must be one of {DEVICE_NAMES}, got {device!r}")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device {device}: not available on this machine")
    if chosen.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (chosen.index or 0) >= count:
            have = f"{count} CUDA device{'s' if count > 1 else ''}, numbered from 0" if count else "no CUDA device"
            raise UserError(f"device {device}: not available on this machine (it has {have})")
    return chosen
