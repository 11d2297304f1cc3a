"""Metric arithmetic against known answers: closed forms, hand-computed cases, and limits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dcgan.evaluation.metrics import (GaussianFit, class_stats, frechet_distance, gaussian_fit, kernel_distance, knn_radii,
                           manifold_coverage, polynomial_mmd, precision_recall)


pytestmark = pytest.mark.usefixtures("one_thread")


def fit_of(mean: list[float] | torch.Tensor, cov: torch.Tensor) -> GaussianFit:
    return GaussianFit(torch.as_tensor(mean, dtype=torch.float64), cov.double(), 0)


def random_cov(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------------

def test_gaussian_fit_is_the_sample_mean_and_unbiased_covariance():
    x = torch.randn(300, 5, generator=torch.Generator().manual_seed(0))
    fit = gaussian_fit(x)
    np.testing.assert_allclose(fit.mean.numpy(), x.double().numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(fit.cov.numpy(), np.cov(x.double().numpy(), rowvar=False), atol=1e-12)
    assert fit.count == 300


def test_fid_of_a_set_against_itself_is_zero():
    x = torch.randn(400, 32, generator=torch.Generator().manual_seed(1)) * 3 + 1
    fit = gaussian_fit(x)
    assert frechet_distance(fit, fit) == pytest.approx(0.0, abs=1e-8)


def test_fid_of_diagonal_gaussians_is_mean_gap_plus_std_gaps():
    # Commuting covariances: (Σa Σb)^½ = diag(σa σb), so FID = ‖Δμ‖² + Σ (σa − σb)².
    sa, sb = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([3.0, 1.0, 0.5])
    a, b = fit_of([0.0, 1.0, 2.0], torch.diag(sa**2)), fit_of([1.0, -1.0, 2.0], torch.diag(sb**2))
    expected = (1 + 4 + 0) + ((sa - sb) ** 2).sum().item()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-10)


def test_fid_of_non_commuting_2d_gaussians_matches_the_2x2_closed_form():
    # For a 2x2 matrix M with eigenvalues λ1, λ2 >= 0: tr M^½ = √λ1 + √λ2 = sqrt(tr M + 2 sqrt(det M)).
    sa = torch.tensor([[2.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    sb = torch.tensor([[0.5, -0.3], [-0.3, 1.5]], dtype=torch.float64)
    product = sa @ sb
    trace_sqrt = math.sqrt(product.trace().item() + 2 * math.sqrt(torch.linalg.det(product).item()))
    expected = (0.3**2 + 0.4**2) + sa.trace().item() + sb.trace().item() - 2 * trace_sqrt
    assert frechet_distance(fit_of([0.0, 0.0], sa), fit_of([0.3, -0.4], sb)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_scaled_covariances_matches_the_closed_form():
    # Σb = c² Σa: tr (Σa Σb)^½ = c tr Σa, so FID = ‖Δμ‖² + (1 − c)² tr Σa.
    cov = random_cov(16, seed=2)
    shift = torch.linspace(-1, 1, 16, dtype=torch.float64)
    a, b = fit_of(torch.zeros(16), cov), fit_of(shift, 4 * cov)
    expected = shift.square().sum().item() + (1 - 2) ** 2 * cov.trace().item()
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)


def test_fid_estimated_from_samples_approaches_the_closed_form():
    dim, n = 3, 40_000
    generator = torch.Generator().manual_seed(3)
    cov_a, cov_b = torch.diag(torch.tensor([1.0, 4.0, 0.25])), torch.diag(torch.tensor([2.0, 1.0, 1.0]))
    mean_a, mean_b = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, -2.0])
    xa = torch.randn(n, dim, generator=generator) * cov_a.diagonal().sqrt() + mean_a
    xb = torch.randn(n, dim, generator=generator) * cov_b.diagonal().sqrt() + mean_b
    closed = frechet_distance(fit_of(mean_a, cov_a), fit_of(mean_b, cov_b))
    assert closed == pytest.approx(5 + (1 - 2**0.5) ** 2 + 1 + 0.25, rel=1e-9)
    assert frechet_distance(gaussian_fit(xa), gaussian_fit(xb)) == pytest.approx(closed, rel=0.03)


def test_fid_is_nan_for_non_finite_statistics():
    broken = fit_of([0.0, 0.0], torch.tensor([[math.nan, 0.0], [0.0, 1.0]]))
    assert math.isnan(frechet_distance(broken, fit_of([0.0, 0.0], torch.eye(2))))


# ---------------------------------------------------------------------------------------------
# KID
# ---------------------------------------------------------------------------------------------

def brute_force_mmd(x: torch.Tensor, y: torch.Tensor) -> float:
    """The unbiased MMD² estimator written out term by term, with k(a, b) = (a·b / D + 1)³."""
    m, dim = x.shape
    k = lambda a, b: (float(a @ b) / dim + 1) ** 3  # noqa: E731
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    return within - 2 * across


def test_polynomial_mmd_matches_the_estimator_written_out():
    generator = torch.Generator().manual_seed(4)
    x, y = torch.randn(6, 3, generator=generator).double(), torch.randn(6, 3, generator=generator).double() + 0.5
    assert polynomial_mmd(x, y).item() == pytest.approx(brute_force_mmd(x, y), rel=1e-12)


def cubic_kernel_mmd_of_unit_gaussians(mean_x: float, mean_y: float) -> float:
    """MMD² of N(mean_x, 1) and N(mean_y, 1) in 1-d for k(a, b) = (ab + 1)³, from their moments."""
    moments = lambda m: (m, 1 + m**2, m**3 + 3 * m)  # noqa: E731 - E[z], E[z²], E[z³]
    expect = lambda p, q: p[2] * q[2] + 3 * p[1] * q[1] + 3 * p[0] * q[0] + 1  # noqa: E731 - E (ab + 1)³
    px, py = moments(mean_x), moments(mean_y)
    return expect(px, px) + expect(py, py) - 2 * expect(px, py)


def test_kid_is_an_unbiased_estimate_of_the_population_mmd():
    generator = torch.Generator().manual_seed(5)
    x = torch.randn(20_000, 1, generator=generator)
    y = torch.randn(20_000, 1, generator=generator) + 1.0
    expected = cubic_kernel_mmd_of_unit_gaussians(0.0, 1.0)
    assert expected == pytest.approx(22.0)
    kid = kernel_distance(x, y, subsets=50, subset_size=1000, seed=0)
    assert kid.mean == pytest.approx(expected, rel=0.1)
    assert kid.std > 0 and kid.subsets == 50 and kid.subset_size == 1000


def test_kid_of_identical_sets_is_zero():
    # Subsets of one set overlap, which leaves a small negative O(1/m) term: tiny next to a real gap.
    x = torch.randn(1000, 16, generator=torch.Generator().manual_seed(6))
    same = kernel_distance(x, x, subsets=20, subset_size=500)
    shifted = kernel_distance(x, x + 0.5, subsets=20, subset_size=500)
    assert abs(same.mean) < 0.02 * shifted.mean


def test_kid_of_two_samples_of_one_distribution_is_zero_within_its_noise():
    generator = torch.Generator().manual_seed(6)
    x, y = torch.randn(2000, 8, generator=generator), torch.randn(2000, 8, generator=generator)
    kid = kernel_distance(x, y, subsets=30, subset_size=500)
    assert abs(kid.mean) < 3 * kid.std / math.sqrt(kid.subsets)


def test_kid_subsets_are_capped_by_the_smaller_set_and_seeded():
    generator = torch.Generator().manual_seed(7)
    x, y = torch.randn(80, 4, generator=generator), torch.randn(60, 4, generator=generator)
    first = kernel_distance(x, y, subsets=5, subset_size=1000, seed=1)
    assert first.subset_size == 60
    assert first == kernel_distance(x, y, subsets=5, subset_size=1000, seed=1)
    assert first != kernel_distance(x, y, subsets=5, subset_size=50, seed=2)


# ---------------------------------------------------------------------------------------------
# Precision and recall
# ---------------------------------------------------------------------------------------------

def test_knn_radii_exclude_the_point_itself():
    points = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    assert knn_radii(points, 1).tolist() == [1.0, 1.0, 2.0, 4.0]
    assert knn_radii(points, 2).tolist() == [3.0, 2.0, 3.0, 6.0]
    with pytest.raises(ValueError):
        knn_radii(points, 4)


def test_precision_and_recall_of_a_small_hand_worked_case():
    real = torch.arange(10.0).unsqueeze(1)  # k=1 radii: 1 everywhere
    fake = torch.tensor([[0.5], [20.0]])  # k=1 radii: 19.5 each
    result = precision_recall(real, fake, k=1)
    assert result.precision == 0.5  # 0.5 lies in a real ball, 20 in none
    assert result.recall == 1.0  # every real point is within 19.5 of 0.5
    assert manifold_coverage(torch.tensor([[12.0]]), real, knn_radii(real, 1)) == 0.0


def test_precision_and_recall_of_a_set_against_itself_are_one():
    x = torch.randn(500, 24, generator=torch.Generator().manual_seed(8))
    result = precision_recall(x, x.clone(), k=3)
    assert (result.precision, result.recall, result.k) == (1.0, 1.0, 3)


def test_disjoint_sets_have_no_precision_and_no_recall():
    generator = torch.Generator().manual_seed(9)
    real, fake = torch.randn(200, 8, generator=generator), torch.randn(200, 8, generator=generator) + 100
    result = precision_recall(real, fake)
    assert (result.precision, result.recall) == (0.0, 0.0)


def test_a_collapsed_set_keeps_precision_but_loses_recall():
    generator = torch.Generator().manual_seed(10)
    centres = torch.randn(10, 16, generator=generator) * 10
    labels = torch.arange(1000) % 10
    real = centres[labels] + torch.randn(1000, 16, generator=generator)
    collapsed = centres[0] + torch.randn(1000, 16, generator=generator)
    result = precision_recall(real, collapsed)
    assert result.precision > 0.5
    assert result.recall < 0.2


# ---------------------------------------------------------------------------------------------
# Class statistics
# ---------------------------------------------------------------------------------------------

def one_hot(classes: list[int], num_classes: int = 10) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(classes), num_classes).double()


def test_uniform_classes_cover_everything_with_full_entropy():
    stats = class_stats(one_hot(list(range(10)) * 30))
    assert stats.classes_covered == 10
    assert stats.entropy == pytest.approx(1.0)
    assert stats.histogram == (30,) * 10
    assert stats.confidence == 1.0
    assert stats.class_match is None


def test_a_single_class_covers_one_with_zero_entropy():
    stats = class_stats(one_hot([3] * 100))
    assert (stats.classes_covered, stats.entropy) == (1, 0.0)
    assert stats.histogram[3] == 100


def test_stray_predictions_do_not_count_as_covered_classes():
    # 1000 samples: 995 of class 0, 5 of class 1 (0.5% < the 1% that counts as covered with 10 classes)
    stats = class_stats(one_hot([0] * 995 + [1] * 5))
    assert stats.classes_covered == 1
    assert stats.entropy == pytest.approx(-(0.995 * math.log(0.995) + 0.005 * math.log(0.005)) / math.log(10))


def test_confidence_and_requested_class_match():
    probabilities = torch.tensor([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4], [0.2, 0.8]], dtype=torch.float64)
    stats = class_stats(probabilities, requested=torch.tensor([0, 1, 1, 1]))
    assert stats.confidence == pytest.approx((0.9 + 0.7 + 0.6 + 0.8) / 4)
    assert stats.class_match == 0.75
    assert stats.histogram == (2, 2)
