"""`--conditional --clusters K`: k-means clusters within each class, drawn from the first noise coordinate."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import dcgan
from conftest import TINY, write_idx
from dcgan.checkpoint import load_checkpoint
from dcgan.config import TrainConfig
from dcgan.data import ImageData
from dcgan.demo import describe
from dcgan.networks.labelled import SubclassGenerator
from dcgan.networks.tutorial import TutorialGenerator
from dcgan.sampling import generate, load_generator
from dcgan.training.labels import with_clusters
from dcgan.training.step import TrainingStep, build_gan

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


def subclass_generator(shares: list[float], *, num_classes: int = 2) -> SubclassGenerator:
    """A tiny generator with 3 clusters per class; `shares` (num_classes * 3) are the clusters' sizes."""
    generator = SubclassGenerator(TutorialGenerator, latent_dim=4, num_classes=num_classes, clusters_per_class=3,
                                  image_size=8)
    generator.cluster_prior.copy_(torch.tensor(shares))
    return generator.eval()


def noise_with_first(values: list[float]) -> torch.Tensor:
    """Noise (B, 4) whose first coordinates are `values`."""
    z = torch.zeros(len(values), 4)
    z[:, 0] = torch.tensor(values)
    return z


def test_the_first_noise_coordinate_picks_the_cluster_by_the_class_shares() -> None:
    # class 0: shares 0.1 / 0.3 / 0.6 of the class (cumulative 0.1, 0.4, 1); class 1: 0 / 1 / 0
    generator = subclass_generator([0.05, 0.15, 0.3, 0.0, 0.5, 0.0])
    z = noise_with_first([-3.0, -1.0, 0.0, 3.0])  # u = Φ(z₀) ≈ 0.001, 0.159, 0.5, 0.999
    assert generator.discriminator_labels(z, torch.zeros(4, dtype=torch.int64)).tolist() == [0, 1, 2, 2]
    assert generator.discriminator_labels(z, torch.ones(4, dtype=torch.int64)).tolist() == [4, 4, 4, 4]
    assert generator.classes_of(torch.tensor([0, 2, 3, 5])).tolist() == [0, 0, 1, 1]


def test_clusters_are_drawn_as_often_as_they_hold_images() -> None:
    generator = subclass_generator([0.1, 0.3, 0.6, 0.2, 0.2, 0.6])  # class 1's shares are relative: 1/5, 1/5, 3/5
    z = torch.randn(30_000, 4, generator=torch.Generator().manual_seed(0))
    for label, expected in ((0, [0.1, 0.3, 0.6]), (1, [0.2, 0.2, 0.6])):
        drawn = generator.discriminator_labels(z, torch.full((30_000,), label)) - 3 * label
        assert torch.bincount(drawn, minlength=3).div(30_000).tolist() == pytest.approx(expected, abs=0.015)


def test_a_class_is_asked_for_by_its_number_and_the_noise_fixes_the_image() -> None:
    torch.manual_seed(0)
    generator = subclass_generator([0.1, 0.3, 0.6, 0.2, 0.2, 0.6])
    assert generator.conditioning == "classes" and generator.num_classes == 2
    images = generate(generator, 6, seed=0, device=CPU, labels=torch.tensor([0, 1, 0, 1, 0, 1]))
    assert images.shape == (6, 8, 8, 1)
    assert np.array_equal(images, generate(generator, 6, seed=0, device=CPU, labels=torch.tensor([0, 1] * 3)))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        generator(torch.randn(1, 4), torch.tensor([2]))  # a cluster's number is not a class


def test_the_embedding_follows_the_picked_cluster() -> None:
    torch.manual_seed(0)
    generator = subclass_generator([0.25, 0.25, 0.5, 0.25, 0.25, 0.5])
    z = noise_with_first([-3.0, 3.0])  # clusters 0 and 2 of class 0
    with torch.no_grad():
        generator.embed.weight[1].fill_(7.0)  # cluster 1 is never drawn by this noise: changing it changes nothing
        before = generator(z, torch.zeros(2, dtype=torch.int64))
        generator.embed.weight[1].fill_(-7.0)
        assert torch.equal(before, generator(z, torch.zeros(2, dtype=torch.int64)))
        generator.embed.weight[2].fill_(7.0)  # cluster 2 is: only the second image changes
        after = generator(z, torch.zeros(2, dtype=torch.int64))
    assert torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])


def two_class_data(mnist_subset: dict[str, np.ndarray]) -> ImageData:
    """512 MNIST images in two classes, digits 0-4 and 5-9 (275 and 237 images)."""
    labels = torch.from_numpy((mnist_subset["train_labels"] >= 5).astype(np.int64))
    return ImageData(images=torch.from_numpy(mnist_subset["train_images"].copy()).unsqueeze(1), labels=labels,
                     classes=("low", "high"), source="two-class")


def test_each_class_is_split_into_its_own_clusters(mnist_subset) -> None:
    data = two_class_data(mnist_subset)
    config = TrainConfig(conditional=True, num_classes=2, clusters=2)
    config, clustered, prior = with_clusters(config, data, log=lambda _: None)
    assert config.clusters == 2 and clustered.classes == data.classes
    assert torch.equal(clustered.labels // 2, data.labels)  # each image's cluster lies in its own class
    assert set(clustered.labels.tolist()) == {0, 1, 2, 3}
    assert prior.shape == (4,) and math.isclose(prior.sum().item(), 1.0, rel_tol=1e-6)
    assert prior.tolist() == pytest.approx(torch.bincount(clustered.labels).div(512).tolist())


def test_a_small_class_means_fewer_clusters_and_none_keeps_the_classes(mnist_subset) -> None:
    data = two_class_data(mnist_subset)  # smallest class: 237 images, enough for 2 clusters of 100
    said = []
    config, clustered, _ = with_clusters(TrainConfig(conditional=True, num_classes=2, clusters=5), data,
                                         log=said.append)
    assert config.clusters == 2 and "smallest class in two-class has 237 images, enough for 2 clusters" in said[0]
    ten_classes = ImageData(images=data.images, labels=torch.from_numpy(mnist_subset["train_labels"].astype(np.int64)),
                            classes=tuple("0123456789"), source="ten")  # about 50 images a class
    config, plain, prior = with_clusters(TrainConfig(conditional=True, num_classes=10, clusters=5,
                                                     mismatched_labels=True), ten_classes, log=lambda _: None)
    assert (config.clusters, config.conditional, config.mismatched_labels) == (0, True, True)
    assert prior is None and torch.equal(plain.labels, ten_classes.labels)


def test_d_sees_the_clusters_and_g_the_classes_in_a_training_step(mnist_subset) -> None:
    config = TrainConfig(image_size=28, latent_dim=4, precision="fp32", conditional=True, num_classes=2, clusters=3,
                         mismatched_labels=True)
    torch.manual_seed(0)
    gan = build_gan(config, CPU)
    gan.generator.cluster_prior.copy_(torch.tensor([0.1, 0.2, 0.2, 0.1, 0.2, 0.2]))
    seen = {"g": [], "d": []}
    g_forward, d_logits = gan.generator.forward, gan.discriminator.logits
    gan.generator.forward = lambda z, labels: seen["g"].append(labels) or g_forward(z, labels)
    gan.discriminator.logits = lambda x, labels: seen["d"].append(labels) or d_logits(x, labels)
    real = torch.rand(6, 1, 28, 28) * 2 - 1
    data_labels = torch.tensor([0, 1, 2, 3, 4, 5])  # clusters c*3 + j
    TrainingStep.from_config(gan, config, CPU)(real, data_labels)
    assert all(torch.equal(g, torch.tensor([0, 0, 0, 1, 1, 1])) for g in seen["g"])  # G is asked for classes
    d_step, g_step = seen["d"]
    real_labels, fake_labels, wrong = d_step.split(6)
    assert torch.equal(real_labels, data_labels)
    assert torch.equal(fake_labels // 3, data_labels // 3)  # the generated image's cluster, in the asked class
    assert not torch.equal(wrong, data_labels) and int(d_step.max()) < 6
    assert torch.equal(g_step // 3, data_labels // 3)


@pytest.fixture
def class_cluster_run(run_cli, mnist_subset, tmp_path: Path) -> Path:
    """A tiny run with 2 clusters in each of 2 classes (digits 0-4 and 5-9), and its training's stderr."""
    data = tmp_path / "two"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte", mnist_subset["train_images"])
    write_idx(data / "train-labels-idx1-ubyte", (mnist_subset["train_labels"] >= 5).astype(np.uint8))
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", data, "--out", run, "--steps", "3", "--batch-size", "16",
                           "--conditional", "--clusters", "2", "--ema-decay", "0.9", *TINY)
    assert code == 0, err
    assert "clustering each class of" in err
    return run


def test_train_and_generate_with_clusters_in_each_class(run_cli, class_cluster_run: Path, tmp_path: Path) -> None:
    payload = load_checkpoint(class_cluster_run)
    assert (payload["config"]["num_classes"], payload["config"]["clusters"]) == (2, 2)
    prior = payload["generator"]["cluster_prior"]
    assert prior.shape == (4,) and torch.equal(payload["ema"]["module"]["cluster_prior"], prior)
    assert payload["discriminator"]["embed.weight"].shape[0] == 4  # D tells the four clusters apart
    assert describe(dcgan.load(class_cluster_run)) == ("8x8 greyscale images, conditional on 2 classes "
                                                      "(2 k-means clusters each), latent size 4")

    code, _, err = run_cli("generate", "--checkpoint", class_cluster_run, "--label", "1", "--num", "3",
                           "--out", tmp_path / "ones")
    assert code == 0, err
    assert [p.name for p in (tmp_path / "ones").iterdir()] == ["1"]
    code, _, err = run_cli("generate", "--checkpoint", class_cluster_run, "--label", "2", "--num", "1",
                           "--out", tmp_path / "bad")
    assert code != 0 and "--label" in err


def test_onnx_export_draws_the_cluster_from_the_noise_as_pytorch_does(run_cli, class_cluster_run: Path,
                                                                      tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime", reason="the export extra is not installed")
    out = tmp_path / "g.onnx"
    code, _, err = run_cli("export", "--checkpoint", class_cluster_run, "--format", "onnx", "--out", out)
    assert code == 0, err
    z = np.random.default_rng(0).standard_normal((64, 4)).astype(np.float32)
    labels = (np.arange(64) % 2).astype(np.int64)
    (images,) = ort.InferenceSession(str(out)).run(["images"], {"z": z, "labels": labels})
    generator, _ = load_generator(class_cluster_run, CPU)
    with torch.no_grad():
        expected = generator(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    assert np.abs(images - expected).max() <= 1e-4
