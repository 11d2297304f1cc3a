"""Pseudo-labels without labels: k-means clusters of the training images (`--clusters K`).

A GAN trained on the clusters as if they were classes (conditional G, projection D) has an easier
job than one unconditional model: each cluster is a narrower set of images, so the generator need
not stretch one continuous noise space across digits that look nothing alike, and sampling a
cluster in proportion to its size keeps every part of the data represented. No label of the data
is used; any image set works. (Cluster-conditioned GANs: Grinblat et al. 2017, Liu et al. 2020.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import squared_distances

MAX_SIDE = 32  # larger images are averaged down to 32x32 first: clusters need shapes, not detail


def kmeans(points: torch.Tensor, k: int, *, seed: int, iterations: int = 20) -> torch.Tensor:
    """Cluster the rows of `points` (N, D) into `k` groups (k-means++ start, Lloyd steps); returns (N,) int64."""
    if not 1 <= k <= points.shape[0]:
        raise ValueError(f"cannot make {k} clusters of {points.shape[0]} points")
    rng = torch.Generator().manual_seed(seed)
    squared_norms = points.pow(2).sum(dim=1, keepdim=True)  # (N, 1)
    centres = _kmeans_plus_plus(points, squared_norms, k, rng)
    assignment = torch.full((points.shape[0],), -1, dtype=torch.int64)
    for _ in range(iterations):
        distances = squared_distances(points, centres, a_squared_norms=squared_norms)  # (N, k)
        new_assignment = distances.argmin(dim=1)
        if torch.equal(new_assignment, assignment):
            break
        assignment = new_assignment
        centres = _centres(points, assignment, k, distances)
    return assignment


def _kmeans_plus_plus(points: torch.Tensor, squared_norms: torch.Tensor, k: int, rng: torch.Generator
                      ) -> torch.Tensor:
    """k starting centres, each drawn with probability proportional to its squared distance from the others."""
    centres = points[torch.randint(points.shape[0], (1,), generator=rng)]
    nearest = squared_distances(points, centres, a_squared_norms=squared_norms).squeeze(1)  # (N,) to the nearest centre
    for _ in range(k - 1):
        weights = nearest if nearest.sum() > 0 else torch.ones_like(nearest)  # all points equal: any will do
        chosen = points[torch.multinomial(weights, 1, generator=rng)]
        centres = torch.cat([centres, chosen])
        nearest = torch.minimum(nearest, squared_distances(points, chosen, a_squared_norms=squared_norms).squeeze(1))
    return centres


def _centres(points: torch.Tensor, assignment: torch.Tensor, k: int, distances: torch.Tensor) -> torch.Tensor:
    """The mean of each cluster; an empty cluster restarts at the point farthest from its own centre."""
    sums = torch.zeros(k, points.shape[1], dtype=points.dtype).index_add_(0, assignment, points)
    counts = torch.bincount(assignment, minlength=k)
    centres = sums / counts.clamp(min=1).unsqueeze(1).to(points.dtype)
    empty = (counts == 0).nonzero().flatten()
    if empty.numel():
        own = distances.gather(1, assignment.unsqueeze(1)).squeeze(1)
        centres[empty] = points[own.topk(empty.numel()).indices]
    return centres


def cluster_images(images: torch.Tensor, k: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster uint8 images (N, C, H, W) by their pixels; returns (labels (N,), cluster sizes / N (k,))."""
    points = torch.cat([_small(chunk).flatten(1) for chunk in images.split(4096)])
    labels = kmeans(points, k, seed=seed)
    prior = torch.bincount(labels, minlength=k).float() / labels.numel()
    return labels, prior


def _small(images: torch.Tensor) -> torch.Tensor:
    """uint8 images as floats in [0, 1], averaged down to at most MAX_SIDE pixels a side."""
    images = images.float() / 255.0
    if max(images.shape[-2:]) > MAX_SIDE:
        images = F.adaptive_avg_pool2d(images, MAX_SIDE)
    return images
