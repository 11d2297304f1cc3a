"""`--clusters` (k-means pseudo-classes) and `--mode-seeking`: known answers, training and sampling."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from conftest import TINY
from dcgan.checkpoint import load_checkpoint
from dcgan.training.clusters import cluster_images, kmeans
from dcgan.networks.labelled import ClusterGenerator
from dcgan.networks.tutorial import TutorialGenerator
from dcgan.config import TrainConfig
from dcgan.errors import UserError
from dcgan.sampling import generate
from dcgan.training.step import TrainingStep, build_gan, mode_seeking_loss

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(sizes: tuple[int, ...], *, spread: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Points around far-apart centres in 2-d, and which centre each came from."""
    torch.manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])[: len(sizes)]
    truth = torch.cat([torch.full((n,), i) for i, n in enumerate(sizes)])
    return centres[truth] + spread * torch.randn(len(truth), 2), truth


def same_partition(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether two labellings group the points identically (cluster numbers may differ)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_finds_well_separated_groups_of_unequal_size() -> None:
    points, truth = blobs((50, 20, 5))
    labels = kmeans(points, 3, seed=0)
    assert same_partition(labels, truth)
    assert torch.equal(labels, kmeans(points, 3, seed=0))  # reproducible from the seed


def test_kmeans_survives_identical_points_and_more_clusters_than_groups() -> None:
    labels = kmeans(torch.ones(10, 3), 3, seed=0)
    assert labels.shape == (10,) and labels.min() >= 0 and labels.max() < 3
    points, _ = blobs((10, 10))
    assert kmeans(points, 4, seed=1).unique().numel() == 4  # empty clusters are restarted, not lost


def test_kmeans_refuses_more_clusters_than_points() -> None:
    with pytest.raises(ValueError, match="cannot make 5 clusters of 3 points"):
        kmeans(torch.rand(3, 2), 5, seed=0)


def test_cluster_images_gives_the_cluster_sizes_as_the_prior() -> None:
    images = torch.zeros(30, 3, 64, 64, dtype=torch.uint8)
    images[:20] = 255  # two groups: 20 white and 10 black images (64x64 RGB is pooled to 32x32 first)
    labels, prior = cluster_images(images, 2, seed=0)
    assert same_partition(labels, torch.tensor([0] * 20 + [1] * 10))
    assert sorted(prior.tolist()) == pytest.approx([1 / 3, 2 / 3])
    assert prior[labels[0]] == pytest.approx(2 / 3)


def test_a_cluster_generator_draws_clusters_by_their_sizes() -> None:
    generator = ClusterGenerator(TutorialGenerator, latent_dim=4, num_clusters=3, image_size=8)
    generator.cluster_prior.copy_(torch.tensor([0.0, 1.0, 0.0]))
    assert generator.sample_labels(50, seed=0).tolist() == [1] * 50
    generator.cluster_prior.copy_(torch.tensor([0.2, 0.3, 0.5]))
    draws = generator.sample_labels(20_000, seed=1)
    assert torch.bincount(draws, minlength=3).div(20_000).tolist() == pytest.approx([0.2, 0.3, 0.5], abs=0.02)
    assert torch.equal(draws, generator.sample_labels(20_000, seed=1))


def test_generate_draws_clusters_itself_and_refuses_labels() -> None:
    generator = ClusterGenerator(TutorialGenerator, latent_dim=4, num_clusters=3, image_size=8).eval()
    images = generate(generator, 6, seed=0, device=CPU)
    assert images.shape == (6, 8, 8, 1) and images.dtype == np.uint8
    assert np.array_equal(images, generate(generator, 6, seed=0, device=CPU))
    with pytest.raises(UserError, match="trained on k-means clusters, not classes"):
        generate(generator, 6, seed=0, device=CPU, labels=torch.zeros(6, dtype=torch.int64))


def test_mode_seeking_loss_known_answer() -> None:
    anchor = torch.zeros(4, 1, 8, 8)
    fake = anchor + 0.5  # mean |G(z) - G(z')| = 0.5
    noise, anchor_noise = torch.full((4, 16), 1.0), torch.full((4, 16), -1.0)  # mean |z - z'| = 2
    assert mode_seeking_loss(fake, anchor, noise, anchor_noise).item() == pytest.approx(1 / (0.25 + 1e-5))


def test_mode_seeking_per_pair_pushes_hardest_on_the_most_alike_pair() -> None:
    anchor = torch.zeros(2, 1, 4, 4)
    fake = torch.stack([anchor[0] + 0.5, anchor[1] + 0.25]).requires_grad_(True)  # pair gaps 0.5 and 0.25
    noise, anchor_noise = torch.full((2, 16), 1.0), torch.full((2, 16), -1.0)  # |z - z'| = 2 for both
    per_pair = mode_seeking_loss(fake, anchor, noise, anchor_noise, per_pair=True)
    assert per_pair.item() == pytest.approx((1 / 0.25 + 1 / 0.125) / 2, rel=1e-3)  # ratios 0.25 and 0.125
    (grad,) = torch.autograd.grad(per_pair, fake)
    assert grad[1].abs().sum().item() == pytest.approx(4 * grad[0].abs().sum().item(), rel=1e-3)  # 1 / ratio²
    batch = mode_seeking_loss(fake, anchor, noise, anchor_noise)
    assert batch.item() == pytest.approx(1 / (0.375 / 2), rel=1e-3)
    (grad,) = torch.autograd.grad(batch, fake)
    assert grad[1].abs().sum().item() == pytest.approx(grad[0].abs().sum().item())  # one ratio: every pair alike


def test_mode_seeking_changes_only_the_generator_update() -> None:
    """The term is in G's loss only: with it (per batch or per pair), D's step is unchanged and G's differs."""
    real = torch.rand(8, 1, 8, 8) * 2 - 1
    states = []
    for weight, per_pair in ((0.0, False), (1.0, False), (1.0, True)):
        torch.manual_seed(0)
        config = TrainConfig(image_size=8, latent_dim=4, precision="fp32", mode_seeking=weight,
                             mode_seeking_pairs=per_pair)
        gan = build_gan(config, CPU)
        TrainingStep.from_config(gan, config, CPU)(real)
        states.append((gan.generator.state_dict(), gan.discriminator.state_dict()))
    (g0, d0), (g1, d1), (g2, d2) = states
    assert all(torch.equal(d0[k], d1[k]) and torch.equal(d0[k], d2[k]) for k in d0)
    assert not all(torch.equal(g0[k], g1[k]) for k in g0)
    assert not all(torch.equal(g1[k], g2[k]) for k in g1)


@pytest.mark.parametrize(("flags", "message"), [
    (("--clusters", "1"), "--clusters must be 0 (off) or at least 2"),
    (("--clusters", "3", "--conditional"), "--clusters and --conditional exclude each other"),
    (("--mode-seeking", "1", "--reuse-fake"), "cannot be used with --reuse-fake"),
    (("--mode-seeking", "-1"), "--mode-seeking"),
    (("--mismatched-labels",), "--mismatched-labels needs labels to mismatch"),
])
def test_bad_cluster_and_mode_seeking_options_are_one_line_errors(run_cli, idx_dir, tmp_path, flags, message):
    code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / "run", "--steps", "2", *TINY, *flags)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("asked", "used"), [(50, 10), (3, 3)])  # 512 images
def test_small_data_sets_get_fewer_clusters(run_cli, idx_dir, tmp_path, asked, used):
    code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / "run", "--steps", "1",
                           "--clusters", str(asked), *TINY)
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run")["config"]["clusters"] == used
    assert ("enough for 10 clusters (at least 50 images per cluster)" in err) == (asked != used)


@pytest.fixture
def forty_images(image_folder):
    """The image folder with four of its ten digits: fewer images than two clusters need."""
    for digit in range(6):
        shutil.rmtree(image_folder / str(digit))
    return image_folder


def test_too_small_a_data_set_for_clusters_trains_unconditionally(run_cli, forty_images, tmp_path):
    code, _, err = run_cli("train", "--data", forty_images, "--out", tmp_path / "run", "--steps", "1",
                           "--clusters", "50", *TINY)
    assert code == 0, err
    assert "enough for no clusters: training unconditionally" in err
    payload = load_checkpoint(tmp_path / "run")
    assert payload["config"]["clusters"] == 0 and "cluster_prior" not in payload["generator"]


def test_mismatched_labels_are_dropped_with_the_clusters_on_too_small_a_data_set(run_cli, forty_images, tmp_path):
    code, _, err = run_cli("train", "--data", forty_images, "--out", tmp_path / "run", "--steps", "1",
                           "--clusters", "50", "--mismatched-labels", *TINY)
    assert code == 0, err
    config = load_checkpoint(tmp_path / "run")["config"]
    assert config["clusters"] == 0 and config["mismatched_labels"] is False


def test_train_generate_and_evaluate_a_cluster_model(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, "--steps", "4", "--clusters", "3",
                           "--mode-seeking", "0.5", "--ema-decay", "0.9", *TINY)
    assert code == 0, err
    payload = load_checkpoint(run / "checkpoints" / "last.pt")
    assert payload["config"]["clusters"] == 3 and payload["config"]["num_classes"] == 0
    prior = payload["generator"]["cluster_prior"]
    assert prior.shape == (3,) and math.isclose(prior.sum().item(), 1.0, rel_tol=1e-6) and prior.min() > 0
    assert torch.equal(payload["ema"]["module"]["cluster_prior"], prior)

    code, out, err = run_cli("generate", "--checkpoint", run, "--num", "5", "--out", tmp_path / "pngs")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir()) == [f"{i:06d}.png" for i in range(5)]

    code, _, err = run_cli("generate", "--checkpoint", run, "--label", "1", "--out", tmp_path / "seven")
    assert code == 2 and "trained on k-means clusters, not classes" in err
    assert not (tmp_path / "seven").exists()
