"""Where a labelled GAN's labels come from: the data's classes (`--conditional`) or k-means clusters (`--clusters`)."""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable

import torch
from tqdm import tqdm

from ..config import TrainConfig
from ..data import ImageData
from ..errors import UserError
from .clusters import cluster_images
from .step import GAN

MIN_IMAGES_PER_CLUSTER = 100  # --clusters: fewer clusters for small data sets


def with_classes(config: TrainConfig, num_classes: int, source: str) -> TrainConfig:
    """A conditional config with `num_classes` from the data (refused if it was trained on other classes)."""
    if not config.conditional:
        return config
    if num_classes < 2:
        raise UserError(f"--conditional: {source} has {num_classes} class; a conditional GAN needs at least 2")
    if config.num_classes not in (0, num_classes):
        raise UserError(f"--conditional: the run was trained with {config.num_classes} classes but "
                        f"{source} has {num_classes}")
    return config.replace(num_classes=num_classes)


def to_stderr(message: str) -> None:
    """Print a line above the progress bar, on stderr."""
    tqdm.write(message, file=sys.stderr)


def with_clusters(config: TrainConfig, data: ImageData, *, log: Callable[[str], None] = to_stderr
                  ) -> tuple[TrainConfig, ImageData, torch.Tensor | None]:
    """With `--clusters K`: the data relabelled by k-means clusters, and the clusters' sizes as fractions.

    With `--conditional` too, each class c is split into K clusters, labelled c*K + j. Small data
    sets get fewer clusters (at least MIN_IMAGES_PER_CLUSTER images each on average, in the
    smallest class when conditional), and none below two; the config records the number used.
    `log` prints the decisions.
    """
    if not config.clusters:
        return config, data, None
    if config.conditional:
        return _with_class_clusters(config, data, log)
    clusters = _fewer_clusters(config, len(data), f"{data.source} has {len(data)} images", log)
    if not clusters:
        return config.replace(clusters=0, mismatched_labels=False), data, None
    config = config.replace(clusters=clusters)
    log(f"clustering {len(data)} images into {config.clusters} groups")
    labels, prior = cluster_images(data.images, config.clusters, seed=config.seed)
    classes = tuple(f"cluster {i}" for i in range(config.clusters))
    return config, dataclasses.replace(data, labels=labels, classes=classes), prior


def _with_class_clusters(config: TrainConfig, data: ImageData, log: Callable[[str], None]
                         ) -> tuple[TrainConfig, ImageData, torch.Tensor | None]:
    """`--conditional --clusters K`: each class's images in K k-means clusters, labelled c*K + j (the
    classes stay the data's); the prior holds each cluster's share of all the images."""
    sizes = torch.bincount(data.labels, minlength=config.num_classes)
    smallest = int(sizes.min())
    clusters = _fewer_clusters(config, smallest, f"its smallest class in {data.source} has {smallest} images", log)
    if not clusters:  # plain conditional training; mismatched labels still have the classes
        return config.replace(clusters=0), data, None
    config = config.replace(clusters=clusters)
    log(f"clustering each class of {data.source} into {clusters} groups")
    labels = torch.empty_like(data.labels)
    for c in range(config.num_classes):
        members = (data.labels == c).nonzero().flatten()
        within, _ = cluster_images(data.images[members], clusters, seed=config.seed + c)
        labels[members] = c * clusters + within
    prior = torch.bincount(labels, minlength=config.num_classes * clusters).float() / labels.numel()
    return config, dataclasses.replace(data, labels=labels), prior


def _fewer_clusters(config: TrainConfig, images: int, why: str, log: Callable[[str], None]) -> int:
    """The clusters that `images` images allow (at most --clusters; 0 below two), said when fewer."""
    clusters = min(config.clusters, images // MIN_IMAGES_PER_CLUSTER)
    if clusters == config.clusters:
        return clusters
    log(f"--clusters {config.clusters}: {why}, enough for "
        + (f"{clusters} clusters" if clusters >= 2 else "no clusters" + ("" if config.conditional else
                                                                         ": training unconditionally"))
        + f" (at least {MIN_IMAGES_PER_CLUSTER} images per cluster)")
    return clusters if clusters >= 2 else 0


def set_cluster_prior(gan: GAN, prior: torch.Tensor) -> None:
    """Store the clusters' sizes in the generator (and its moving average), which samples by them."""
    for generator in (gan.generator, gan.sampler()):
        generator.cluster_prior.copy_(prior)
