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

# --clusters: fewer clusters for small data sets. 50 rather than 100 gives a folder of 1,200-1,400 pictures
# 24-27 clusters instead of 12-13: higher recall and lower FID on both colour sets (docs/quality.md)
MIN_IMAGES_PER_CLUSTER = 50
# A run started from another (--init-from) keeps its clusters, the label embeddings it starts from, down to this
MIN_IMAGES_PER_TAKEN_CLUSTER = 2


def with_classes(config: TrainConfig, num_classes: int, source: str, *, flat: bool = False) -> TrainConfig:
    """A conditional config with `num_classes` from the data (refused if it was trained on other classes)."""
    if not config.conditional:
        return config
    if flat:
        raise UserError(f"--conditional: {source} has no class subfolders (its pictures are one set); put each "
                        f"class's pictures in a subfolder of its own, {source}/<class>/<picture>")
    if num_classes < 2:
        raise UserError(f"--conditional: {source} has {num_classes} class; a conditional GAN needs at least 2")
    if config.num_classes not in (0, num_classes):
        raise UserError(f"--conditional: the run was trained with {config.num_classes} classes but "
                        f"{source} has {num_classes}")
    return config.replace(num_classes=num_classes)


def to_stderr(message: str) -> None:
    """Print a line above the progress bar, on stderr."""
    tqdm.write(message, file=sys.stderr)


def with_clusters(config: TrainConfig, data: ImageData, taken: TrainConfig | None = None, *,
                  log: Callable[[str], None] = to_stderr) -> tuple[TrainConfig, ImageData, torch.Tensor | None]:
    """With `--clusters K`: the data relabelled by k-means clusters, and the clusters' sizes as fractions.

    A run that starts from another's networks (`taken`, the `--init-from` run's config) takes its number
    of clusters, which its label embeddings fix. Small data sets get fewer clusters (at least
    MIN_IMAGES_PER_CLUSTER images each on average, or MIN_IMAGES_PER_TAKEN_CLUSTER for a started run),
    and none below two; the config records the number used. `log` prints the decisions.
    """
    if not config.clusters:
        return config, data, None
    if taken is not None and taken.clusters != config.clusters:
        log(f"--clusters {taken.clusters}: the number of {config.init_from}'s clusters")
        config = config.replace(clusters=taken.clusters,
                                mismatched_labels=config.mismatched_labels and taken.clusters >= 2)
        if not config.clusters:
            return config, data, None
    per_cluster = MIN_IMAGES_PER_TAKEN_CLUSTER if config.init_from else MIN_IMAGES_PER_CLUSTER
    clusters = min(config.clusters, len(data) // per_cluster)
    if clusters != config.clusters:
        log(f"--clusters {config.clusters}: {data.source} has {len(data)} images, enough for "
            + (f"{clusters} clusters" if clusters >= 2 else "no clusters: training unconditionally")
            + f" (at least {per_cluster} images per cluster)")
        config = config.replace(clusters=clusters if clusters >= 2 else 0,
                                mismatched_labels=config.mismatched_labels and clusters >= 2)
        if not config.clusters:
            return config, data, None
    log(f"clustering {len(data)} images into {config.clusters} groups")
    labels, prior = cluster_images(data.images, config.clusters, seed=config.seed)
    classes = tuple(f"cluster {i}" for i in range(config.clusters))
    return config, dataclasses.replace(data, labels=labels, classes=classes), prior


def set_cluster_prior(gan: GAN, prior: torch.Tensor) -> None:
    """Store the clusters' sizes in the generator (and its moving average), which samples by them."""
    for generator in (gan.generator, gan.sampler()):
        generator.cluster_prior.copy_(prior)
