"""The tutorial's DCGAN: a generator from latent noise to images, and a discriminator.

Shapes are written for the tutorial's MNIST setting (image_size 28, so base = 7); other sizes
scale the same way (base = image_size / 4). Both networks follow the package's one interface
(`networks/__init__.py`): `G(z, labels=None)`, `D.logits(x, labels=None)`; being unconditional,
they refuse labels.
"""

from __future__ import annotations

import torch
from torch import nn


class TutorialGenerator(nn.Module):
    """Noise (B, latent_dim) -> images (B, channels, image_size, image_size) in [-1, 1]."""

    conditioning = "none"
    num_classes = 0
    takes_labels = False
    label_classes: int | None = None

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

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        refuse_labels(labels)
        features = self.project(z).view(-1, 256, self.base, self.base)  # (B, 256, 7, 7)
        return self.upsample(features)

    def sample_labels(self, num: int, *, seed: int) -> None:
        """An unconditional generator takes no labels."""
        return None


class TutorialDiscriminator(nn.Module):
    """Images (B, channels, image_size, image_size) -> probability of being real, (B, 1).

    `logits` stops before the final Sigmoid: training uses it with the numerically stable
    `binary_cross_entropy_with_logits`, which is the same loss as BCE on the Sigmoid's output.
    `features` and `classify` are the two halves that a projection discriminator reuses.
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
        self.feature_dim = 128 * base**2
        self.classify = nn.Linear(self.feature_dim, 1)  # (B, 1)
        self.output = nn.Sigmoid()

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid scores, (B, 1)."""
        refuse_labels(labels)
        return self.classify(self.features(x))

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.output(self.logits(x, labels))


def refuse_labels(labels: torch.Tensor | None) -> None:
    """Raise ValueError when an unconditional network is given labels."""
    if labels is not None:
        raise ValueError("this network is unconditional: it takes no labels")
