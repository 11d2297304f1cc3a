"""The feature network of pictures without classes: contrastive training, its file, and `dcgan evaluate`
and `--eval-every` with it.

The pictures are coloured shapes, 16x16: a disc, a square or a cross of one colour on a background of
another, so that two pictures differ in what and where the shape is, not only in their colours.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dcgan.data import ImageData
from dcgan.errors import UserError
from dcgan.evaluation.classifier import (ContrastiveSettings, DigitClassifier, bundled_path, load_classifier, nt_xent,
                                         to_input, train_contrastive)
from dcgan.plots import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 16
CLASS_ROWS = ("confidence", "classes covered", "class entropy", "class histogram", "requested class")
CLASS_KEYS = ("confidence", "classes_covered", "num_classes", "class_entropy", "class_histogram", "class_match")


def coloured_shapes(count: int, *, seed: int, shift: int = 0) -> np.ndarray:
    """`count` pictures (N, SIZE, SIZE, 3) uint8; with `shift`, the same pictures with the shape moved
    `shift` pixels right and down (every shape has room for it)."""
    generator = np.random.default_rng(seed)
    rows, cols = np.mgrid[:SIZE, :SIZE]
    pictures = np.zeros((count, SIZE, SIZE, 3), np.uint8)
    for picture in pictures:
        background, colour = generator.integers(0, 256, 3), generator.integers(0, 256, 3)
        radius = generator.integers(2, 5)
        row, col = generator.integers(radius, SIZE - radius - 4, 2) + shift
        kind = generator.integers(3)
        if kind == 0:
            shape = (rows - row) ** 2 + (cols - col) ** 2 <= radius ** 2
        elif kind == 1:
            shape = (abs(rows - row) <= radius) & (abs(cols - col) <= radius)
        else:
            shape = ((abs(rows - row) <= radius) & (abs(cols - col) <= 1)) | \
                    ((abs(cols - col) <= radius) & (abs(rows - row) <= 1))
        picture[:] = background
        picture[shape] = colour
    return pictures


def as_data(pictures: np.ndarray) -> ImageData:
    images = torch.from_numpy(pictures).permute(0, 3, 1, 2).contiguous()
    return ImageData(images, torch.zeros(len(images), dtype=torch.int64), ("flat",), "shapes", flat=True)


@pytest.fixture
def shapes_folder(tmp_path: Path) -> Path:
    """A flat folder of 60 coloured-shape PNGs (50 is the least a reference set may have)."""
    folder = tmp_path / "shapes"
    folder.mkdir()
    for index, picture in enumerate(coloured_shapes(60, seed=0)):
        Image.fromarray(picture).save(folder / f"{index:02d}.png")
    return folder


def train_network(run_cli, data: Path, out: Path, *args: str) -> str:
    """`dcgan classifier train` of 16x16 pictures for 2 epochs; returns its stdout."""
    code, stdout, stderr = run_cli("classifier", "train", "--data", data, "--image-size", str(SIZE), "--epochs", "2",
                                   "--batch-size", "16", "--quiet", "--out", out, *args)
    assert code == 0, stderr
    return stdout


@pytest.fixture
def contrastive_network(run_cli, shapes_folder: Path, tmp_path: Path) -> Path:
    out = tmp_path / "shapes.pt"
    train_network(run_cli, shapes_folder, out)
    return out


def test_a_flat_folder_trains_a_contrastive_network_without_classes(run_cli, shapes_folder: Path, tmp_path: Path):
    out = tmp_path / "shapes.pt"
    stdout = train_network(run_cli, shapes_folder, out)
    line = re.fullmatch(r"retrieval=(\d+\.\d\d)% \(6 images\) classifier=(.+)\n", stdout)
    assert line and line[2] == str(out), stdout
    payload = torch.load(out, weights_only=True)
    assert payload["features"] == "contrastive" and payload["settings"]["temperature"] == 0.1
    assert payload["classes"] == [] and payload["num_classes"] == 0
    assert not any(name.startswith("head.") for name in payload["state_dict"])
    assert float(line[1]) == pytest.approx(100 * payload["test_retrieval"], abs=0.005)
    info = load_classifier(out).info
    assert not info.has_classes and info.features == "contrastive" and info.classes == ()
    assert info.input_shape == (3, SIZE, SIZE)

    code, tested, _ = run_cli("classifier", "test", "--classifier", out, "--data", shapes_folder)
    assert code == 0
    assert tested == stdout  # the same held-out tenth and the same views: the same number


def test_contrastive_training_is_deterministic(run_cli, shapes_folder: Path, tmp_path: Path):
    for name, seed in (("a", "0"), ("b", "0"), ("c", "1")):
        train_network(run_cli, shapes_folder, tmp_path / f"{name}.pt", "--seed", seed)
    a, b, c = (torch.load(tmp_path / f"{name}.pt", weights_only=True)["state_dict"] for name in "abc")
    assert all(torch.equal(a[key], b[key]) for key in a)
    assert not all(torch.equal(a[key], c[key]) for key in a)


def test_features_picks_the_training_and_refuses_what_cannot_be(run_cli, shapes_folder: Path, idx_dir: Path,
                                                                 tmp_path: Path):
    train_network(run_cli, idx_dir, tmp_path / "digits.pt", "--features", "contrastive")
    assert not load_classifier(tmp_path / "digits.pt").info.has_classes  # labels there, but not used
    for args, message in (
            (["--features", "classes"], f"--features classes: --data {shapes_folder} has no classes to learn "
                                        f"(a flat folder of pictures); use --features contrastive"),
            (["--no-augment"], "--no-augment: a contrastive feature network learns from augmented views"),
    ):
        code, stdout, stderr = run_cli("classifier", "train", "--data", shapes_folder, "--out", tmp_path / "x.pt",
                                       *args)
        assert code == 2 and stdout == ""
        assert stderr.startswith(f"dcgan: error: {message}") and stderr.count("\n") == 1, stderr
        assert not (tmp_path / "x.pt").exists()


def test_a_network_without_classes_has_no_logits_and_its_file_is_checked(contrastive_network: Path, tmp_path: Path):
    model = DigitClassifier(channels=3, image_size=SIZE, num_classes=0)
    assert model.head is None and model.features(torch.rand(2, 3, SIZE, SIZE)).shape == (2, 128)
    with pytest.raises(ValueError, match="no class logits"):
        model(torch.rand(2, 3, SIZE, SIZE))
    payload = torch.load(contrastive_network, weights_only=True)
    for name, change in (("with classes", {"num_classes": 10}), ("unknown features", {"features": "other"})):
        broken = tmp_path / "broken.pt"
        torch.save({**payload, **change}, broken)
        with pytest.raises(UserError, match="damaged classifier file"):
            load_classifier(broken)
        broken.unlink()
    assert torch.load(bundled_path(), weights_only=True)["format_version"] == 1  # files of classes: readable before
    assert load_classifier().info.has_classes


def test_nt_xent_is_low_when_each_view_knows_its_partner():
    anchors = torch.eye(8)
    assert nt_xent(anchors, anchors, 0.1) < 0.01
    assert nt_xent(anchors, anchors.roll(1, dims=0), 0.1) > 5  # every partner is another picture's view


def nearest_is_own_shift(model: DigitClassifier, pictures: np.ndarray, shifted: np.ndarray) -> float:
    """The fraction of pictures whose shifted copy is nearer (cosine of features) than every other picture."""
    model.eval()
    with torch.no_grad():
        features = F.normalize(model.features(to_input(as_data(pictures).images)), dim=1)
        copies = F.normalize(model.features(to_input(as_data(shifted).images)), dim=1)
    own = (features * copies).sum(1)
    others = (features @ features.T).fill_diagonal_(-math.inf)
    return float((own > others.max(1).values).double().mean())


def test_trained_features_find_a_shifted_copy_where_untrained_ones_do_not():
    train = as_data(coloured_shapes(40, seed=10))
    pictures, shifted = coloured_shapes(40, seed=100), coloured_shapes(40, seed=100, shift=3)
    torch.manual_seed(0)
    untrained = DigitClassifier(channels=3, image_size=SIZE, num_classes=0)
    trained, _ = train_contrastive(train, as_data(pictures[:4]), ContrastiveSettings(epochs=10, batch_size=8))
    # An untrained network's features change with where the shape is, so a picture of like colours
    # is mostly nearer than the shape moved 3 pixels (measured: 30% to 40% found over 3 seeds);
    # trained on cropped views, they follow what the picture shows (90% to 98% over 2 sets, 2 seeds).
    assert nearest_is_own_shift(untrained, pictures, shifted) < 0.5
    assert nearest_is_own_shift(trained, pictures, shifted) > 0.75


def test_evaluate_with_it_reports_no_class_statistics(run_cli, shapes_folder: Path, contrastive_network: Path,
                                                       tmp_path: Path):
    samples = tmp_path / "samples.npy"
    np.save(samples, coloured_shapes(60, seed=5))
    code, stdout, stderr = run_cli("evaluate", "--samples", samples, "--classifier", contrastive_network,
                                   "--reference", shapes_folder, "--json", tmp_path / "r.json")
    assert code == 0, stderr
    table, last = stdout.splitlines()[:-1], stdout.splitlines()[-1]
    for label in ("FID", "KID", "precision (k=3)", "recall (k=3)"):
        assert any(row.startswith(label) for row in table), label
    assert not any(row.startswith(CLASS_ROWS) for row in table), table
    assert any("contrastive, no classes; top-1 retrieval" in row for row in table)
    result = json.loads(last)
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert all(result[key] is None for key in CLASS_KEYS)
    assert all(math.isfinite(result[key]) for key in ("fid", "kid", "precision", "recall"))
    assert result["classifier_features"] == "contrastive" and result["classifier_test_accuracy"] is None
    assert 0 <= result["classifier_test_retrieval"] <= 1

    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(60, np.int64))
    code, stdout, stderr = run_cli("evaluate", "--samples", samples, "--classifier", contrastive_network,
                                   "--reference", shapes_folder, "--labels", labels)
    assert code == 2 and stdout == ""
    assert stderr == (f"dcgan: error: --labels {labels}: the feature network {contrastive_network} has no classes "
                      f"(trained by contrast, without labels), so there is no class to check; leave out --labels\n")


def test_eval_every_with_it_leaves_the_class_columns_empty(run_cli, shapes_folder: Path, contrastive_network: Path,
                                                          tmp_path: Path):
    run = tmp_path / "run"
    code, _, stderr = run_cli("train", "--data", shapes_folder, "--preset", "tutorial", "--image-size", str(SIZE),
                              "--latent-dim", "4", "--quiet", "--sample-every", "0", "--steps", "4", "--batch-size",
                              "16", "--eval-every", "2", "--eval-samples", "50", "--eval-classifier",
                              contrastive_network, "--out", run)
    assert code == 0, stderr
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"fid", "kid", "precision", "recall", "classes_covered", "class_entropy", "confidence",
            "class_match"} <= set(header)
    rows = {int(row["step"]): row for row in read_metrics(run / "metrics.csv")}
    assert sorted(rows) == [2, 4]
    for row in rows.values():
        assert all(math.isfinite(row[key]) for key in ("fid", "kid", "precision", "recall"))
        assert all(math.isnan(row[key]) for key in ("classes_covered", "class_entropy", "confidence", "class_match"))
    assert (run / "checkpoints" / "best.pt").is_file()
