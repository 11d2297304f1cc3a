"""`dcgan evaluate` on .npy files, PNG folders and checkpoints; its errors; and `train --eval-every`.

The reference set is the small IDX test split of the `idx_dir` fixture (256 images), so every
evaluation here takes a fraction of a second.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import assert_same_training_state
from dcgan.evaluation import during_training, scoring
from dcgan.plots import read_metrics
from dcgan.checkpoint import load_checkpoint
from dcgan.evaluation.classifier import TrainSettings, load_classifier, save_classifier, train_classifier, train_test_data
from dcgan.data import bundled_mnist_dir, load_idx_dir
from dcgan.errors import UserError
from dcgan.evaluation.scoring import reference_data, reference_features


pytestmark = pytest.mark.usefixtures("one_thread")


def save_npy(path: Path, images: np.ndarray) -> Path:
    np.save(path, images)
    return path


def save_pngs(folder: Path, images: np.ndarray) -> Path:
    folder.mkdir(parents=True)
    for index, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{index:04d}.png")
    return folder


def scores(run_cli, *args) -> tuple[dict, str]:
    """Run `dcgan evaluate ARGS`; returns the JSON of its last stdout line, and the whole stdout."""
    code, out, err = run_cli("evaluate", *args)
    assert code == 0, err
    return json.loads(out.strip().splitlines()[-1]), out


@pytest.fixture
def real(mnist_subset: dict[str, np.ndarray]) -> np.ndarray:
    """200 MNIST training digits, N x 28 x 28 uint8."""
    return mnist_subset["train_images"][:200]


def test_npy_samples_give_a_table_and_the_same_numbers_as_json(run_cli, idx_dir: Path, tmp_path: Path,
                                                               real: np.ndarray):
    samples = save_npy(tmp_path / "real.npy", real)
    result, out = scores(run_cli, "--samples", samples, "--reference", idx_dir, "--json", tmp_path / "r.json")
    for label in ("FID", "KID", "precision (k=3)", "recall (k=3)", "confidence", "classes covered",
                  "class entropy", "class histogram"):
        assert any(line.startswith(label) for line in out.splitlines()), label
    assert json.loads((tmp_path / "r.json").read_text()) == result
    assert (result["num_samples"], result["num_reference"], result["k"]) == (200, 256, 3)
    assert result["classes_covered"] == 10 and result["num_classes"] == 10
    assert sum(result["class_histogram"]) == 200
    assert result["precision"] > 0.6 and result["recall"] > 0.6 and result["confidence"] > 0.9
    assert result["class_match"] is None
    assert result["classifier_features"] == "classes" and result["classifier_test_retrieval"] is None
    assert f"{result['fid']:.3f}" in out


def test_a_png_folder_scores_exactly_like_the_npy_of_the_same_images(run_cli, idx_dir: Path, tmp_path: Path,
                                                                      real: np.ndarray):
    from_npy, _ = scores(run_cli, "--samples", save_npy(tmp_path / "real.npy", real), "--reference", idx_dir)
    from_png, _ = scores(run_cli, "--samples", save_pngs(tmp_path / "png", real), "--reference", idx_dir)
    for key in ("fid", "kid", "kid_std", "precision", "recall", "confidence", "class_histogram"):
        assert from_png[key] == pytest.approx(from_npy[key], rel=1e-9), key


def test_uniform_noise_scores_far_worse_than_real_digits(run_cli, idx_dir: Path, tmp_path: Path, real: np.ndarray):
    noise = np.random.default_rng(0).integers(0, 256, size=real.shape, dtype=np.uint8)
    digits, _ = scores(run_cli, "--samples", save_npy(tmp_path / "real.npy", real), "--reference", idx_dir)
    junk, _ = scores(run_cli, "--samples", save_npy(tmp_path / "noise.npy", noise), "--reference", idx_dir)
    assert junk["fid"] > 10 * digits["fid"]
    assert junk["kid"] > 10 * digits["kid"]
    assert junk["precision"] < 0.1 < digits["precision"]
    assert junk["recall"] < digits["recall"]


def test_a_single_digit_class_covers_one_class_with_low_recall(run_cli, idx_dir: Path, tmp_path: Path,
                                                               real: np.ndarray):
    train = load_idx_dir(bundled_mnist_dir(), "train")
    ones = train.images[train.labels == 1][:200, 0].numpy()
    collapsed, _ = scores(run_cli, "--samples", save_npy(tmp_path / "ones.npy", ones), "--reference", idx_dir)
    digits, _ = scores(run_cli, "--samples", save_npy(tmp_path / "real.npy", real), "--reference", idx_dir)
    assert collapsed["classes_covered"] == 1
    assert collapsed["class_histogram"][1] >= 198
    assert collapsed["class_entropy"] < 0.1 < digits["class_entropy"]
    assert collapsed["recall"] < 0.3 < digits["recall"]
    assert collapsed["fid"] > 5 * digits["fid"]


def test_requested_classes_are_checked_against_the_predicted_ones(run_cli, idx_dir: Path, tmp_path: Path,
                                                                  mnist_subset: dict[str, np.ndarray]):
    samples = save_npy(tmp_path / "real.npy", mnist_subset["train_images"][:200])
    labels = mnist_subset["train_labels"][:200].astype(np.int64)
    right, out = scores(run_cli, "--samples", samples, "--reference", idx_dir,
                        "--labels", save_npy(tmp_path / "labels.npy", labels))
    wrong, _ = scores(run_cli, "--samples", samples, "--reference", idx_dir,
                      "--labels", save_npy(tmp_path / "shifted.npy", (labels + 1) % 10))
    assert right["class_match"] > 0.95 and wrong["class_match"] < 0.05
    assert "requested class" in out


@pytest.mark.slow
def test_a_checkpoint_is_sampled_and_scored(run_cli, idx_dir: Path, tmp_path: Path):
    code, _, err = run_cli("train", "--data", idx_dir, "--steps", "2", "--batch-size", "16", "--quiet",
                           "--sample-every", "0", "--out", tmp_path / "run")
    assert code == 0, err
    result, out = scores(run_cli, "--checkpoint", tmp_path / "run", "--num", "60", "--reference", idx_dir,
                         "--seed", "3")
    assert result["num_samples"] == 60
    assert str(tmp_path / "run") in result["samples"] and "seed 3" in result["samples"]
    assert all(math.isfinite(result[key]) for key in ("fid", "kid", "precision", "recall", "confidence"))
    again, _ = scores(run_cli, "--checkpoint", tmp_path / "run" / "checkpoints" / "last.pt", "--num", "60",
                      "--reference", idx_dir, "--seed", "3")
    assert again["fid"] == result["fid"]


def test_reference_features_are_cached_on_disk(idx_dir: Path, isolated_cache: Path,
                                               monkeypatch: pytest.MonkeyPatch):
    classifier = load_classifier()
    data = reference_data(str(idx_dir), classifier.info)
    first = reference_features(classifier, data, description="idx")
    assert len(list((isolated_cache / "reference").glob("*.pt"))) == 1

    def no_embedding(*args, **kwargs):
        raise AssertionError("the reference features should have come from the cache")

    monkeypatch.setattr(scoring, "embed", no_embedding)
    second = reference_features(classifier, data, description="idx")
    assert torch.equal(first.features, second.features)
    assert torch.equal(first.fit.cov, second.fit.cov)


def test_the_default_reference_is_the_mnist_test_set():
    data = reference_data("mnist", load_classifier().info)
    assert data.images.shape == (10_000, 1, 28, 28)


@pytest.fixture
def rgb_classifier(image_folder: Path, tmp_path: Path) -> Path:
    """A feature network for 3 x 32 x 32 images, trained for one short epoch."""
    train, test = train_test_data(str(image_folder), channels=3, image_size=32)
    settings = TrainSettings(epochs=1, batch_size=32)
    model, test_accuracy = train_classifier(train, test, settings)
    return save_classifier(model, tmp_path / "rgb.pt", classes=train.classes, data=str(image_folder),
                           test_accuracy=test_accuracy, settings=settings)


def bad_inputs(tmp_path: Path, real: np.ndarray) -> dict[str, tuple[list, str]]:
    """Name -> (evaluate arguments, expected part of the one-line error)."""
    wrong_size = save_npy(tmp_path / "big.npy", np.zeros((60, 32, 32), np.uint8))
    floats = save_npy(tmp_path / "float.npy", real.astype(np.float32) / 255)
    few = save_npy(tmp_path / "few.npy", real[:10])
    odd = save_npy(tmp_path / "odd.npy", np.zeros((60, 5), np.uint8))
    corrupt = tmp_path / "corrupt.npy"
    corrupt.write_bytes(b"\x93NUMPY garbage")
    text = tmp_path / "samples.txt"
    text.write_text("hello")
    empty = tmp_path / "empty"
    empty.mkdir()
    big_pngs = save_pngs(tmp_path / "bigpng", np.zeros((3, 32, 32), np.uint8))
    labels = save_npy(tmp_path / "labels.npy", np.zeros(7, np.int64))
    good = save_npy(tmp_path / "good.npy", real)
    return {
        "wrong shape": (["--samples", wrong_size],
                        "samples are 1x32x32 images, but the feature network mnist_classifier.pt takes 1x28x28"),
        "float pixels": (["--samples", floats], "expected uint8 pixels"),
        "too few": (["--samples", few], "10 samples are too few; at least 50 are needed"),
        "not images": (["--samples", odd], "expected an N x H x W or N x H x W x C array"),
        "corrupt npy": (["--samples", corrupt], "not a readable .npy array"),
        "missing": (["--samples", tmp_path / "nope"], "no such file or directory"),
        "other file": (["--samples", text], "expected a folder of PNG images or a .npy file"),
        "empty folder": (["--samples", empty], "no PNG images in this folder"),
        "png size": (["--samples", big_pngs], "0000.png is 32x32 pixels"),
        "missing checkpoint": (["--checkpoint", tmp_path / "nope.pt"], "checkpoint not found"),
        "too few drawn": (["--checkpoint", tmp_path / "nope.pt", "--num", "10"], "--num 10: too few samples"),
        "missing classifier": (["--samples", good, "--classifier", tmp_path / "c.pt"], "no such file"),
        "labels": (["--samples", good, "--labels", labels], "expected 200 integer class labels"),
        "k": (["--samples", good, "--k", "500"], "--k 500: must be smaller than the number of samples"),
        "json folder": (["--samples", good, "--json", tmp_path / "no" / "r.json"], "does not exist"),
    }


def test_bad_inputs_get_one_line_errors(run_cli, idx_dir: Path, tmp_path: Path, real: np.ndarray):
    for name, (args, message) in bad_inputs(tmp_path, real).items():
        code, out, err = run_cli("evaluate", *args, "--reference", idx_dir)
        assert code == 2, name
        assert err.startswith("dcgan: error: ") and err.count("\n") == 1, (name, err)
        assert message in err, (name, err)
        assert out == ""


def test_a_feature_network_for_other_images_is_refused(run_cli, idx_dir: Path, tmp_path: Path, real: np.ndarray,
                                                       rgb_classifier: Path):
    code, _, err = run_cli("evaluate", "--samples", save_npy(tmp_path / "real.npy", real), "--classifier",
                           rgb_classifier, "--reference", idx_dir)
    assert code == 2
    assert err == ("dcgan: error: --samples {}: samples are 1x28x28 images, but the feature network rgb.pt takes "
                   "3x32x32 images (train one for this data with `dcgan classifier train` and pass it with "
                   "--classifier)\n").format(tmp_path / "real.npy")


def test_too_small_a_reference_is_refused(tmp_path: Path, real: np.ndarray):
    classifier = load_classifier()
    folder = tmp_path / "tiny"
    save_pngs(folder / "0", real[:5])
    with pytest.raises(UserError, match="5 images are too few"):
        reference_data(str(folder), classifier.info)


# ---------------------------------------------------------------------------------------------
# train --eval-every
# ---------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_eval_every_logs_scores_plots_fid_and_keeps_the_best_checkpoint(run_cli, idx_dir: Path, tmp_path: Path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--steps", "6", "--batch-size", "16", "--quiet",
                           "--sample-every", "0", "--log-every", "5", "--eval-every", "3", "--eval-samples", "50",
                           "--out", run)
    assert code == 0, err
    rows = {int(row["step"]): row for row in read_metrics(run / "metrics.csv")}
    assert sorted(rows) == [3, 5, 6]
    for step in (3, 6):
        assert math.isfinite(rows[step]["d_loss"])
        assert rows[step]["fid"] > 0 and 0 <= rows[step]["precision"] <= 1 and 1 <= rows[step]["classes_covered"]
    assert math.isnan(rows[5]["fid"]) and math.isfinite(rows[5]["d_loss"])
    assert math.isnan(rows[3]["class_match"])  # no classes asked of an unconditional model
    assert (run / "fid.png").stat().st_size > 0
    best = load_checkpoint(run / "checkpoints" / "best.pt")
    best_step = min((3, 6), key=lambda s: rows[s]["fid"])
    assert best["step"] == best_step
    assert best["eval"]["fid"] == pytest.approx(rows[best_step]["fid"], rel=1e-5)
    assert set(best["generator"]) == set(load_checkpoint(run)["generator"])


@pytest.mark.slow
def test_a_run_scored_as_it_trains_resumes_bit_for_bit(run_cli, idx_dir: Path, tmp_path: Path):
    # Setting up the scorer draws random numbers (a network's initial weights): a resumed run must not draw them
    # again, or its steps after the resume follow another random stream than the straight run's.
    common = ("--data", idx_dir, "--batch-size", "16", "--quiet", "--sample-every", "0", "--seed", "3",
              "--checkpoint-every", "4", "--eval-every", "4", "--eval-samples", "50")
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli("train", *common, "--steps", "10", "--out", straight)[0] == 0
    assert run_cli("train", *common, "--steps", "6", "--out", split)[0] == 0
    code, _, err = run_cli("train", "--resume", split, "--quiet", "--steps", "10")
    assert code == 0, err
    assert_same_training_state(load_checkpoint(straight), load_checkpoint(split))
    columns = ("step", "d_loss", "g_loss", "fid")
    rows = [[tuple(row[c] for c in columns) for row in read_metrics(run / "metrics.csv")] for run in (straight, split)]
    assert rows[0][-1][0] == 10 and rows[0][-1] == rows[1][-1]


@pytest.mark.slow
def test_a_time_limited_run_is_scored_at_its_end_and_evaluations_do_not_use_up_its_time(
        run_cli, idx_dir: Path, tmp_path: Path, monkeypatch):
    score = during_training.TrainingEvaluator.__call__
    slept = []

    def slow_score(self, *args, **kwargs):  # the first evaluation takes longer than the whole time limit
        columns = score(self, *args, **kwargs)
        if columns and not slept:
            time.sleep(3.5)
            slept.append(True)
        return columns

    monkeypatch.setattr(during_training.TrainingEvaluator, "__call__", slow_score)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--steps", "100000", "--batch-size", "4", "--quiet",
                           "--sample-every", "0", "--eval-every", "10", "--eval-samples", "50",
                           "--time-limit", "0.05", "--out", run)  # 3 s
    assert code == 0, err
    rows = read_metrics(run / "metrics.csv")
    last_step = load_checkpoint(run)["step"]
    assert last_step > 10  # had the first evaluation counted, the run would have stopped at step 10
    assert rows[-1]["step"] == last_step and math.isfinite(rows[-1]["fid"])  # scored where it stopped
    assert 3.0 <= rows[-1]["wall_time"] < 4.5  # training time only, though a 3.5 s evaluation ran
    assert load_checkpoint(run)["train_seconds"] == pytest.approx(rows[-1]["wall_time"], abs=1e-3)


def test_eval_every_refuses_a_feature_network_of_another_shape_before_writing(run_cli, idx_dir: Path,
                                                                              tmp_path: Path):
    code, _, err = run_cli("train", "--data", idx_dir, "--steps", "2", "--image-size", "8", "--quiet",
                           "--eval-every", "1", "--out", tmp_path / "run")
    assert code == 2
    assert "--eval-every: the feature network mnist_classifier.pt takes 1x28x28 images, but this run makes " \
           "1x8x8" in err
    assert not (tmp_path / "run").exists()


def test_eval_samples_must_be_enough(run_cli, idx_dir: Path, tmp_path: Path):
    code, _, err = run_cli("train", "--data", idx_dir, "--steps", "2", "--quiet", "--eval-every", "1",
                           "--eval-samples", "10", "--out", tmp_path / "run")
    assert code == 2
    assert err == "dcgan: error: --eval-samples 10: at least 50 are needed\n"


@pytest.mark.slow
def test_eval_reference_scores_against_other_real_images_without_changing_the_training(run_cli, idx_dir: Path,
                                                                                    tmp_path: Path):
    common = ("--data", idx_dir, "--steps", "4", "--batch-size", "16", "--quiet", "--sample-every", "0",
              "--eval-every", "4", "--eval-samples", "50")
    assert run_cli("train", *common, "--out", tmp_path / "own")[0] == 0
    code, _, err = run_cli("train", *common, "--eval-reference", "mnist", "--out", tmp_path / "all")
    assert code == 0, err
    own, other = (read_metrics(tmp_path / name / "metrics.csv")[-1] for name in ("own", "all"))
    assert own["d_loss"] == other["d_loss"] and own["g_loss"] == other["g_loss"]  # the same training
    assert own["fid"] != other["fid"]  # 256 test digits of the data against MNIST's 10,000
    code, _, err = run_cli("train", *common, "--eval-reference", tmp_path / "missing", "--out", tmp_path / "bad")
    assert code == 2 and err.strip().splitlines() == [
        f"dcgan: error: --eval-reference {tmp_path / 'missing'}: no such file or directory"]
    assert not (tmp_path / "bad").exists()
