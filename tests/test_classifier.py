"""The feature network: shapes, reproducible training, its file format, and the bundled MNIST weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dcgan.evaluation.classifier import (DigitClassifier, TrainSettings, accuracy, augment, bundled_path, embed, load_classifier,
                              train_classifier, train_test_data)
from dcgan.data import ImageData
from dcgan.errors import UserError

QUICK = TrainSettings(epochs=1, batch_size=64, seed=0)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_feature_and_logit_shapes(channels: int, size: int):
    model = DigitClassifier(channels=channels, image_size=size).eval()
    x = torch.rand(5, channels, size, size)
    assert model.features(x).shape == (5, 128)
    assert model(x).shape == (5, 10)


def test_augment_keeps_shape_and_is_seeded():
    x = torch.rand(8, 1, 28, 28)
    first = augment(x, torch.Generator().manual_seed(1))
    assert first.shape == x.shape
    assert torch.equal(first, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(first, augment(x, torch.Generator().manual_seed(2)))


def test_training_is_reproducible_with_a_fixed_seed(idx_dir: Path):
    train, test = train_test_data(str(idx_dir), channels=1, image_size=28)
    assert (len(train), len(test)) == (512, 256)  # the IDX directory's own test split
    train = ImageData(train.images[:128], train.labels[:128], train.classes, train.source)
    test = ImageData(test.images[:64], test.labels[:64], test.classes, test.source)
    first, acc_first = train_classifier(train, test, QUICK)
    second, acc_second = train_classifier(train, test, QUICK)
    third, _ = train_classifier(train, test, TrainSettings(epochs=1, batch_size=64, seed=1))
    state_first, state_second, state_third = first.state_dict(), second.state_dict(), third.state_dict()
    assert all(torch.equal(state_first[k], state_second[k]) for k in state_first)
    assert acc_first == acc_second
    assert not all(torch.equal(state_first[k], state_third[k]) for k in state_first)


def test_image_folder_without_test_split_gets_a_seeded_hold_out(image_folder: Path):
    train, test = train_test_data(str(image_folder), channels=3, image_size=32, seed=0)
    assert (len(train), len(test)) == (90, 10)
    assert train.images.shape[1:] == (3, 32, 32)
    again, _ = train_test_data(str(image_folder), channels=3, image_size=32, seed=0)
    assert torch.equal(again.images, train.images)


@pytest.mark.slow
def test_training_learns_separable_data():
    # Class c is a bright square at a position of its own: trivially separable.
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(256) % 4
    images = torch.randint(0, 30, (256, 1, 28, 28), generator=generator, dtype=torch.uint8)
    for c in range(4):
        images[labels == c, :, 4 + 5 * c:9 + 5 * c, 4 + 5 * c:9 + 5 * c] = 255
    data = ImageData(images, labels, ("a", "b", "c", "d"), "squares")
    model, test_accuracy = train_classifier(data, data, TrainSettings(epochs=3, batch_size=16, augment=False))
    assert test_accuracy > 0.95
    assert model.num_classes == 4


def test_cli_trains_saves_and_tests_a_classifier(run_cli, idx_dir: Path, tmp_path: Path):
    out = tmp_path / "clf.pt"
    code, stdout, _ = run_cli("classifier", "train", "--data", idx_dir, "--out", out, "--epochs", "1",
                              "--batch-size", "64", "--quiet")
    assert code == 0
    assert "test_accuracy=" in stdout and str(out) in stdout
    payload = torch.load(out, weights_only=True)
    assert payload["kind"] == "dcgan-classifier" and payload["data"] == str(idx_dir)
    loaded = load_classifier(out)
    assert loaded.info.input_shape == (1, 28, 28)
    assert loaded.info.classes == tuple(str(c) for c in range(10))
    assert loaded.info.test_accuracy == pytest.approx(payload["test_accuracy"])
    assert not loaded.model.training

    code, stdout, _ = run_cli("classifier", "test", "--classifier", out, "--data", idx_dir)
    assert code == 0
    assert f"test_accuracy={100 * payload['test_accuracy']:.2f}%" in stdout

    code, _, stderr = run_cli("classifier", "train", "--data", idx_dir, "--out", out, "--epochs", "1")
    assert code == 2
    assert stderr.strip() == f"dcgan: error: --out {out}: already exists; choose another path"


def test_loading_refuses_what_is_not_a_classifier(tmp_path: Path):
    with pytest.raises(UserError, match="no such file"):
        load_classifier(tmp_path / "missing.pt")
    other = tmp_path / "other.pt"
    torch.save({"generator": {}}, other)
    with pytest.raises(UserError, match="not a dcgan classifier file"):
        load_classifier(other)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable classifier file"):
        load_classifier(garbage)
    broken = tmp_path / "broken.pt"
    payload = torch.load(bundled_path(), weights_only=True)
    payload["image_size"] = 32
    torch.save(payload, broken)
    with pytest.raises(UserError, match="damaged classifier file"):
        load_classifier(broken)


def test_bundled_weights_are_small_and_accurate(mnist_subset: dict[str, np.ndarray]):
    assert bundled_path().stat().st_size < 5 * 2**20
    bundled = load_classifier()
    assert bundled.info.input_shape == (1, 28, 28)
    assert bundled.info.test_accuracy >= 0.993  # measured on the 10,000 MNIST test images at training time
    test = ImageData(torch.tensor(mnist_subset["test_images"]).unsqueeze(1),
                     torch.tensor(mnist_subset["test_labels"], dtype=torch.int64), bundled.info.classes, "subset")
    assert accuracy(bundled, test) >= 0.98
    embedding = embed(bundled, test.images[:10])
    assert embedding.features.shape == (10, 128)
    assert torch.allclose(embedding.probabilities.sum(1), torch.ones(10))
