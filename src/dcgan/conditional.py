"""Class-conditional networks: a generator that takes a label, and a projection discriminator.

The generator joins a learned class embedding to the noise and then is the tutorial's generator;
the discriminator is the tutorial's, plus the inner product of a class embedding with its features
added to the logit (Miyato & Koyama, 2018). Shapes are for MNIST (image_size 28, base 7).
"""

from __future__ import annotations

import torch
from torch import nn

from .models import Discriminator, Generator


def check_labels(labels: torch.Tensor, num_classes: int) -> None:
    """Raise ValueError unless `labels` is a 1-d integer tensor of classes in [0, num_classes)."""
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"labels must be a 1-d integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes - 1}], got values from {int(labels.min())} "
                         f"to {int(labels.max())}")


class ConditionalGenerator(nn.Module):
    """(noise (B, latent_dim), labels (B,)) -> images (B, channels, image_size, image_size) in [-1, 1]."""

    def __init__(self, *, latent_dim: int = 16, num_classes: int = 10, embed_dim: int = 16, channels: int = 1,
                 image_size: int = 28) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)  # (B, E)
        # The tutorial's generator on the joined vector (B, latent_dim + E) -> (B, C, 28, 28).
        self.body = Generator(latent_dim=latent_dim + embed_dim, channels=channels, image_size=image_size)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_labels(labels, self.num_classes)
        if labels.shape[0] != z.shape[0]:
            raise ValueError(f"{z.shape[0]} noise vectors but {labels.shape[0]} labels")
        joined = torch.cat([z, self.embed(labels.long()).to(z.dtype)], dim=1)  # (B, latent_dim + E)
        return self.body(joined)  # (B, C, 28, 28)


class ClusterGenerator(ConditionalGenerator):
    """A conditional generator trained on k-means clusters (`--clusters`); samples clusters by their sizes."""

    def __init__(self, *, latent_dim: int = 16, num_clusters: int = 10, channels: int = 1, image_size: int = 28
                 ) -> None:
        super().__init__(latent_dim=latent_dim, num_classes=num_clusters, channels=channels, image_size=image_size)
        self.register_buffer("cluster_prior", torch.full((num_clusters,), 1 / num_clusters))  # set from the data

    def sample_clusters(self, num: int, *, seed: int) -> torch.Tensor:
        """`num` cluster indices (num,), drawn in proportion to the clusters' sizes, reproducibly from `seed`."""
        rng = torch.Generator().manual_seed(seed)
        return torch.multinomial(self.cluster_prior.float().cpu(), num, replacement=True, generator=rng)


class ProjectionDiscriminator(nn.Module):
    """(images (B, C, H, W), labels (B,)) -> logit (B, 1): ψ(φ(x)) + ⟨embed(y), φ(x)⟩."""

    def __init__(self, *, num_classes: int = 10, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.num_classes = num_classes
        tutorial = Discriminator(channels=channels, image_size=image_size)
        self.features = tutorial.features  # (B, 128*7*7): two strided convolutions, flattened
        self.classify = tutorial.classify  # (B, 1)
        self.embed = nn.Embedding(num_classes, tutorial.classify.in_features)  # (B, 128*7*7)
        # nn.Embedding's N(0, 1) start gives class weights ~140x the scale of the linear layer's over
        # 6,272 features, so the class term would dominate D from the first step; Xavier's keeps them comparable.
        nn.init.xavier_uniform_(self.embed.weight)

    def logits(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid scores, (B, 1)."""
        check_labels(labels, self.num_classes)
        features = self.features(x)  # (B, 128*7*7)
        projection = (self.embed(labels.long()) * features).sum(dim=1, keepdim=True)  # (B, 1)
        return self.classify(features) + projection  # (B, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(x, labels))  # (B, 1)
