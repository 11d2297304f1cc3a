"""Networks that take a label: a class-conditional generator, its k-means-cluster variant, and a
projection discriminator, each built around any architecture's unconditional networks.

The generator joins a learned class embedding to the noise and feeds the joined vector to the
architecture's generator; the discriminator adds the inner product of a class embedding with the
architecture's features to its logit (Miyato & Koyama, 2018). Shapes are for the tutorial's
MNIST networks (image_size 28, 128*7*7 features).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def check_labels(labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """`labels` if it is a 1-d integer tensor of classes in [0, num_classes); ValueError otherwise."""
    if labels is None:
        raise ValueError(f"this network is conditional: it needs a label (0-{num_classes - 1}) for each sample")
    if labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8):
        raise ValueError(f"labels must be a 1-d integer tensor, got {labels.dtype} of shape {tuple(labels.shape)}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must be in [0, {num_classes - 1}], got values from {int(labels.min())} "
                         f"to {int(labels.max())}")
    return labels


class ConditionalGenerator(nn.Module):
    """(noise (B, latent_dim), labels (B,)) -> images (B, channels, image_size, image_size) in [-1, 1]."""

    conditioning = "classes"
    takes_labels = True

    def __init__(self, body: Callable[..., nn.Module], *, latent_dim: int = 16, num_classes: int = 10,
                 embed_dim: int = 16, channels: int = 1, image_size: int = 28) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.num_classes = num_classes
        self.embed = nn.Embedding(num_classes, embed_dim)  # (B, E)
        # The architecture's generator on the joined vector (B, latent_dim + E) -> (B, C, 28, 28).
        self.body = body(latent_dim=latent_dim + embed_dim, channels=channels, image_size=image_size)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        labels = check_labels(labels, self.num_classes)
        if labels.shape[0] != z.shape[0]:
            raise ValueError(f"{z.shape[0]} noise vectors but {labels.shape[0]} labels")
        return self.from_embedding(z, self.embed(labels.long()))

    def from_embedding(self, z: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """Images of noise `z` (B, latent_dim) and label embeddings (B, E): the two joined, through the body."""
        joined = torch.cat([z, embedding.to(z.dtype)], dim=1)  # (B, latent_dim + E)
        return self.body(joined)  # (B, C, 28, 28)

    def morph(self, z: torch.Tensor, start: torch.Tensor, end: torch.Tensor, t: float) -> torch.Tensor:
        """Images between classes `start` and `end` (B,): their embeddings mixed (1 - t) : t, at fixed noise."""
        start, end = check_labels(start, self.num_classes), check_labels(end, self.num_classes)
        return self.from_embedding(z, torch.lerp(self.embed(start.long()), self.embed(end.long()), t))

    @property
    def label_classes(self) -> int | None:
        """The classes a user may ask for: every class of the model."""
        return self.num_classes

    def sample_labels(self, num: int, *, seed: int) -> torch.Tensor:
        """Every class in turn, 0, 1, ..., K-1, 0, ...: each equally often (to within one)."""
        return torch.arange(num) % self.num_classes


class ClusterGenerator(ConditionalGenerator):
    """A conditional generator trained on k-means clusters (`--clusters`); samples clusters by their sizes."""

    conditioning = "clusters"

    def __init__(self, body: Callable[..., nn.Module], *, latent_dim: int = 16, num_clusters: int = 10,
                 channels: int = 1, image_size: int = 28) -> None:
        super().__init__(body, latent_dim=latent_dim, num_classes=num_clusters, channels=channels,
                         image_size=image_size)
        self.register_buffer("cluster_prior", torch.full((num_clusters,), 1 / num_clusters))  # set from the data

    @property
    def label_classes(self) -> int | None:
        """None: the model draws its clusters itself; a user asks for no class."""
        return None

    def sample_labels(self, num: int, *, seed: int) -> torch.Tensor:
        """`num` cluster indices (num,), drawn in proportion to the clusters' sizes, reproducibly from `seed`."""
        rng = torch.Generator().manual_seed(seed)
        return torch.multinomial(self.cluster_prior.float().cpu(), num, replacement=True, generator=rng)


class ProjectionDiscriminator(nn.Module):
    """(images (B, C, H, W), labels (B,)) -> logit (B, 1): ψ(φ(x)) + ⟨embed(y), φ(x)⟩.

    `base` is an architecture's unconditional discriminator; its `features` (φ, to (B, F)) and
    `classify` (ψ, from (B, F) to one logit) become this one's.
    """

    def __init__(self, base: nn.Module, *, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.features = base.features  # (B, 128*7*7): two strided convolutions, flattened
        self.classify = base.classify  # (B, 1)
        self.feature_dim = base.feature_dim
        self.embed = nn.Embedding(num_classes, base.feature_dim)  # (B, 128*7*7)
        # nn.Embedding's N(0, 1) start gives class weights ~140x the scale of the linear layer's over
        # 6,272 features, so the class term would dominate D from the first step; Xavier's keeps them comparable.
        nn.init.xavier_uniform_(self.embed.weight)

    def logits(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """Pre-sigmoid scores, (B, 1)."""
        labels = check_labels(labels, self.num_classes)
        features = self.features(x)  # (B, 128*7*7)
        projection = (self.embed(labels.long()) * features).sum(dim=1, keepdim=True)  # (B, 1)
        return self.classify(features) + projection  # (B, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return torch.sigmoid(self.logits(x, labels))  # (B, 1)
