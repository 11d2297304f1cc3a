"""A trained generator in a Python session: `dcgan.load(path)`.

    import dcgan
    g = dcgan.load("runs/x")             # a run directory or a checkpoint file
    images = g.sample(16, seed=0)        # uint8 numpy: N x H x W (greyscale) or N x H x W x C
    x = g(torch.randn(4, g.latent_dim))  # float tensor in [-1, 1], N x C x H x W

Errors (a bad path, bad labels) raise `dcgan.UserError`, whose message is the one the command
line prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .device import select_device
from .errors import UserError
from .networks import channels_of
from .sampling import NOT_CLASSES, generate, load_generator


class TrainedGenerator:
    """A checkpoint's sampling generator (its moving average when it has one), in inference mode."""

    def __init__(self, generator: torch.nn.Module, *, image_size: int, channels: int, device: torch.device) -> None:
        self.generator = generator
        self.device = device
        self.latent_dim: int = generator.latent_dim
        self.num_classes: int | None = generator.num_classes if generator.conditioning == "classes" else None
        self.image_size = image_size
        self.channels = channels

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, labels: torch.Tensor | Sequence[int] | None = None) -> torch.Tensor:
        """Images (N, C, H, W) in [-1, 1] for noise `z` (N, latent_dim) and, for a conditional model, labels (N,)."""
        z = torch.as_tensor(z, dtype=torch.float32)
        if z.dim() != 2 or z.shape[1] != self.latent_dim:
            raise UserError(f"z must have shape (N, {self.latent_dim}), got {tuple(z.shape)}")
        chosen = self._labels(labels, z.shape[0])
        if chosen is None:
            chosen = self.generator.sample_labels(z.shape[0], seed=0)  # clusters by their sizes; None otherwise
        return self.generator(z.to(self.device), None if chosen is None else chosen.to(self.device))

    def sample(self, num: int, *, seed: int = 0, labels: int | Sequence[int] | np.ndarray | None = None) -> np.ndarray:
        """`num` images as uint8 numpy, N x H x W (greyscale) or N x H x W x C, from noise seeded by `seed`.

        A conditional model draws `labels` (one class for all, or one per image), every class
        in turn when none are given.
        """
        if num < 1:
            raise UserError(f"num must be a positive number of images, got {num}")
        images = generate(self.generator, num, seed=seed, device=self.device, labels=self._labels(labels, num))
        return images[..., 0] if self.channels == 1 else images

    def _labels(self, labels: int | Sequence[int] | np.ndarray | torch.Tensor | None, num: int) -> torch.Tensor | None:
        """`labels` as an int64 tensor of `num` classes, checked; None when none are given."""
        if labels is None:
            return None
        if self.num_classes is None:
            raise UserError(f"labels need a conditional model; this one is {NOT_CLASSES[self.generator.conditioning]}")
        values = torch.as_tensor(np.asarray(labels))
        if values.dim() == 0:
            values = values.expand(num)
        if values.dim() != 1 or len(values) != num or values.is_floating_point() or values.dtype == torch.bool:
            raise UserError(f"labels must be one class or {num} integer classes, got {np.asarray(labels)!r}")
        if len(values) and (int(values.min()) < 0 or int(values.max()) >= self.num_classes):
            raise UserError(f"labels must be classes 0-{self.num_classes - 1} of this model, got values from "
                            f"{int(values.min())} to {int(values.max())}")
        return values.long()


def load(path: str | Path, *, device: str | torch.device | None = None) -> TrainedGenerator:
    """The generator of a run directory or checkpoint file, on `device` (default: the CPU)."""
    chosen = select_device(str(device)) if isinstance(device, str) else device or torch.device("cpu")
    generator, config = load_generator(path, chosen)
    return TrainedGenerator(generator, image_size=config.image_size, channels=channels_of(config), device=chosen)
