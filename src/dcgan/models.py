"""The tutorial's DCGAN: a generator from latent noise to images, and a discriminator.

Shapes are written for the tutorial's MNIST setting (image_size 28, so base = 7); other sizes
scale the same way (base = image_size / 4).
"""

from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """Noise (B, latent_dim) -> images (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, *, latent_dim: int = 16, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.base = image_size // 4
        self.project = nn.Sequential(
            nn.Linear(latent_dim, 256 * self.base**2, bias=False),  # (B, 256*7*7)
            nn.BatchNorm1d(256 * self.base**2),
            nn.LeakyReLU(),
        )
        self.upsample = nn.Sequential(
            nn.Conv2d(256, 128, 5, padding=2, bias=False),  # (B, 128, 7, 7)
            nn.BatchNorm2d(128),
            nn.LeakyReLU(),
            nn.ConvTranspose2d(128, 64, 4, stride=2, padding=1, bias=False),  # (B, 64, 14, 14)
            nn.BatchNorm2d(64),
            nn.LeakyReLU(),
            nn.ConvTranspose2d(64, channels, 4, stride=2, padding=1, bias=False),  # (B, C, 28, 28)
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        features = self.project(z).view(-1, 256, self.base, self.base)  # (B, 256, 7, 7)
        return self.upsample(features)


class Discriminator(nn.Module):
    """Images (B, channels, image_size, image_size) -> probability of being real, (B, 1).

    `logits` stops before the final Sigmoid: training uses it with the numerically stable
    `binary_cross_entropy_with_logits`, which is the same loss as BCE on the Sigmoid's output.
    """

    def __init__(self, *, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        base = image_size // 4
        self.features = nn.Sequential(
            nn.Conv2d(channels, 64, 5, stride=2, padding=2),  # (B, 64, 14, 14)
            nn.LeakyReLU(),
            nn.Dropout2d(0.3),
            nn.Conv2d(64, 128, 5, stride=2, padding=2),  # (B, 128, 7, 7)
            nn.LeakyReLU(),
            nn.Dropout2d(0.3),
            nn.Flatten(),  # (B, 128*7*7)
        )
        self.classify = nn.Linear(128 * base**2, 1)  # (B, 1)
        self.output = nn.Sigmoid()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, (B, 1)."""
        return self.classify(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.logits(x))


def with_spectral_norm(module: nn.Module) -> nn.Module:
    """Wrap every convolution, linear layer and embedding of `module` in spectral normalisation.

    Each weight is divided by its largest singular value (one power iteration per training
    forward pass), which bounds the network's Lipschitz constant (Miyato et al., 2018).
    """
    from torch.nn.utils.parametrizations import spectral_norm

    layers = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    for layer in layers:
        spectral_norm(layer)
    return module
