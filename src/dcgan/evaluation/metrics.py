"""Sample-quality arithmetic on feature vectors and class probabilities; no images, no files.

All distances are computed in float64: FID and KID are small differences of large sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..ops import squared_distances


@dataclass(frozen=True)
class GaussianFit:
    """Mean (D,) and covariance (D, D) of a set of features, in float64."""

    mean: torch.Tensor
    cov: torch.Tensor
    count: int


@dataclass(frozen=True)
class KernelDistance:
    """KID: mean and standard deviation of the unbiased MMD² over random subsets."""

    mean: float
    std: float
    subsets: int
    subset_size: int


@dataclass(frozen=True)
class PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds."""

    precision: float
    recall: float
    k: int


@dataclass(frozen=True)
class ClassStats:
    """What a classifier says about a set of samples."""

    confidence: float
    histogram: tuple[int, ...]
    classes_covered: int
    entropy: float
    class_match: float | None


def gaussian_fit(features: torch.Tensor) -> GaussianFit:
    """Mean and unbiased covariance of features (N, D)."""
    x = features.double()
    if x.shape[0] < 2:
        raise ValueError("a Gaussian fit needs at least 2 feature vectors")
    mean = x.mean(0)
    centred = x - mean
    cov = centred.T @ centred / (x.shape[0] - 1)
    return GaussianFit(mean, cov, x.shape[0])


def frechet_distance(a: GaussianFit, b: GaussianFit) -> float:
    """‖μa − μb‖² + tr(Σa + Σb − 2 (Σa Σb)^½): the Fréchet distance of two Gaussians (FID).

    tr (Σa Σb)^½ is taken as the sum of square roots of the eigenvalues of Σa^½ Σb Σa^½, which has
    the same eigenvalues as Σa Σb but is symmetric, so `eigvalsh` gives them real and accurate.
    """
    if not (torch.isfinite(a.cov).all() and torch.isfinite(b.cov).all()):
        return math.nan
    root_a = _psd_sqrt(a.cov)
    middle = root_a @ b.cov.double() @ root_a
    eigenvalues = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0)
    trace_sqrt = eigenvalues.sqrt().sum()
    distance = (a.mean - b.mean).square().sum() + a.cov.trace() + b.cov.trace() - 2 * trace_sqrt
    return max(float(distance), 0.0)  # rounding can leave -1e-12 for identical sets


def _psd_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    eigenvalues, vectors = torch.linalg.eigh((matrix + matrix.T).double() / 2)
    return (vectors * eigenvalues.clamp(min=0).sqrt()) @ vectors.T


def kernel_distance(x: torch.Tensor, y: torch.Tensor, *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> KernelDistance:
    """KID: unbiased MMD² with the kernel (x·y / D + 1)³, averaged over random subsets of both sets.

    The subset size is capped by the smaller set; subsets are drawn without replacement, seeded.
    """
    size = min(subset_size, x.shape[0], y.shape[0])
    if size < 2:
        raise ValueError("KID needs at least 2 feature vectors in each set")
    generator = torch.Generator().manual_seed(seed)
    x, y = x.double(), y.double()
    values = torch.stack([
        polynomial_mmd(x[torch.randperm(x.shape[0], generator=generator)[:size]],
                       y[torch.randperm(y.shape[0], generator=generator)[:size]])
        for _ in range(subsets)
    ])
    std = float(values.std()) if subsets > 1 else 0.0
    return KernelDistance(float(values.mean()), std, subsets, size)


def polynomial_mmd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Unbiased MMD² of two equal-sized sets (m, D) with the cubic kernel k(a, b) = (a·b / D + 1)³."""
    m, dim = x.shape
    kernel = lambda a, b: (a @ b.T / dim + 1) ** 3  # noqa: E731
    k_xx, k_yy, k_xy = kernel(x, x), kernel(y, y), kernel(x, y)
    within = (k_xx.sum() - k_xx.diagonal().sum() + k_yy.sum() - k_yy.diagonal().sum()) / (m * (m - 1))
    return within - 2 * k_xy.sum() / m**2


def knn_radii(features: torch.Tensor, k: int, *, chunk: int = 1024) -> torch.Tensor:
    """Distance of each feature vector to its k-th nearest neighbour in the same set (itself excluded)."""
    x = features.double()
    if x.shape[0] <= k:
        raise ValueError(f"k-NN radii with k={k} need more than {k} feature vectors, got {x.shape[0]}")
    radii = [
        squared_distances(x[start:start + chunk], x).kthvalue(k + 1, dim=1).values  # +1: the point itself
        for start in range(0, x.shape[0], chunk)
    ]
    return torch.cat(radii).sqrt()


def manifold_coverage(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, *,
                      chunk: int = 1024) -> float:
    """Fraction of `points` inside at least one ball (centre, radius) of the other set."""
    points, centres = points.double(), centres.double()
    squared_radii = radii.double().square()
    inside = [
        (squared_distances(points[start:start + chunk], centres) <= squared_radii).any(1)
        for start in range(0, points.shape[0], chunk)
    ]
    return float(torch.cat(inside).double().mean())


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3) -> PrecisionRecall:
    """Precision: fakes on the real manifold; recall: reals on the fake manifold (k-NN balls)."""
    real_radii, fake_radii = knn_radii(real, k), knn_radii(fake, k)
    return PrecisionRecall(precision=manifold_coverage(fake, real, real_radii),
                           recall=manifold_coverage(real, fake, fake_radii), k=k)


def class_stats(probabilities: torch.Tensor, *, requested: torch.Tensor | None = None,
                min_share: float = 0.1) -> ClassStats:
    """Confidence, class histogram, classes covered and normalised entropy of predicted classes.

    A class is covered when it gets at least `min_share` of the samples a uniform generator would
    give it (with 10 classes: 1% of the samples), so a few stray predictions do not count as a mode.
    The entropy of the histogram is divided by log(K): 1 for uniform classes, 0 for one class.
    `requested` (N,) gives the class each sample was asked to be; `class_match` is the fraction
    classified as that class.
    """
    n, num_classes = probabilities.shape
    confidence, predicted = probabilities.max(1)
    histogram = torch.bincount(predicted, minlength=num_classes)
    shares = histogram.double() / n
    covered = int((shares >= min_share / num_classes).sum())
    nonzero = shares[shares > 0]
    entropy = max(0.0, float(-(nonzero * nonzero.log()).sum() / math.log(num_classes))) if num_classes > 1 else 1.0
    match = None
    if requested is not None:
        match = float((predicted == requested.to(predicted.device)).double().mean())
    return ClassStats(confidence=float(confidence.double().mean()), histogram=tuple(int(c) for c in histogram),
                      classes_covered=covered, entropy=entropy, class_match=match)
