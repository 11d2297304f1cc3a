"""`--tensorboard`: the events in RUN/tensorboard/ copy metrics.csv and the grids, across resumes and roll-backs."""

from __future__ import annotations

import importlib.util
import io
import math
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY, snapshot
from dcgan.images import step_of
from dcgan.plots import read_metrics
from dcgan.training.step import TrainingStep
from dcgan.training.tensorboard import SAMPLES_TAG, SCALAR_TAGS

pytestmark = pytest.mark.usefixtures("one_thread")
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="the tensorboard extra (pip install 'dcgan[tensorboard]') is not "
                                              "installed")

TRAIN_TAGS = {"train/d_loss", "train/g_loss", "train/d_real", "train/d_fake", "train/images_per_s"}
COLUMN_OF_TAG = {tag: column for column, tag in SCALAR_TAGS.items()}


def events(run: Path) -> Any:
    """Every event of the run, as TensorBoard reads the folder (all of them kept, restarts applied)."""
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={SCALARS: 0, IMAGES: 0})
    accumulator.Reload()
    return accumulator


def assert_mirrors_metrics(run: Path, accumulator: Any) -> None:
    """Each scalar holds its metrics.csv column's filled cells: the same steps, the same values."""
    rows = read_metrics(run / "metrics.csv")
    for tag in accumulator.Tags()["scalars"]:
        name = COLUMN_OF_TAG[tag]
        expected = [(int(row["step"]), row[name]) for row in rows if math.isfinite(row[name])]
        logged = [(event.step, event.value) for event in accumulator.Scalars(tag)]
        assert [step for step, _ in logged] == [step for step, _ in expected], tag
        assert [value for _, value in logged] == pytest.approx([value for _, value in expected], rel=1e-5), tag


def assert_mirrors_grids(run: Path, accumulator: Any) -> None:
    """The images are the grids in samples/, pixel for pixel, at their steps."""
    grids = {step_of(path): np.asarray(Image.open(path)) for path in (run / "samples").glob("step_*.png")}
    images = accumulator.Images(SAMPLES_TAG)
    assert [image.step for image in images] == sorted(grids)
    for image in images:
        pixels = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)))
        grid = grids[image.step]
        assert np.array_equal(pixels, grid if grid.ndim == 3 else np.repeat(grid[..., None], 3, axis=2))


@needs_tensorboard
def test_the_events_copy_the_losses_augmentation_and_grids(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "5", "--log-every", "2",
                           "--sample-every", "2", "--ada-target", "0.6", "--tensorboard")
    assert code == 0, err
    accumulator = events(run)
    assert set(accumulator.Tags()["scalars"]) == TRAIN_TAGS | {"ada/ada_p", "ada/ada_signal"}
    assert [event.step for event in accumulator.Scalars("train/d_loss")] == [2, 4, 5]
    assert_mirrors_metrics(run, accumulator)
    assert [image.step for image in accumulator.Images(SAMPLES_TAG)] == [0, 2, 4, 5]
    assert_mirrors_grids(run, accumulator)


@needs_tensorboard
@pytest.mark.slow
def test_the_events_copy_the_scores_of_eval_every(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, "--preset", "tutorial", "--quiet",
                           "--batch-size", "16", "--steps", "4", "--log-every", "3", "--sample-every", "0",
                           "--eval-every", "2", "--eval-samples", "50", "--tensorboard")
    assert code == 0, err
    accumulator = events(run)
    assert set(accumulator.Tags()["scalars"]) == TRAIN_TAGS | {
        "eval/fid", "eval/kid", "eval/precision", "eval/recall", "eval/classes_covered", "eval/class_entropy",
        "eval/confidence"}  # no class_match: no class was asked of an unconditional generator
    assert [event.step for event in accumulator.Scalars("train/d_loss")] == [2, 3, 4]
    assert [event.step for event in accumulator.Scalars("eval/fid")] == [2, 4]
    assert_mirrors_metrics(run, accumulator)


@needs_tensorboard
def test_a_resume_from_an_earlier_checkpoint_replaces_the_events_after_it(run_cli, idx_dir, tmp_path):
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "8", "--log-every", "2",
                           "--sample-every", "3", "--checkpoint-every", "4", "--keep-checkpoints", "2", "--tensorboard")
    assert code == 0, err
    first = {path.name for path in (run / "tensorboard").iterdir()}
    # As a run killed after step 8's row but before its checkpoint: it resumes from step 4.
    shutil.copy(run / "checkpoints" / "step_00000004.pt", run / "checkpoints" / "last.pt")
    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", "10")
    assert code == 0, err
    assert first < {path.name for path in (run / "tensorboard").iterdir()}  # a file added, none replaced
    accumulator = events(run)
    assert set(accumulator.Tags()["scalars"]) == TRAIN_TAGS
    assert [event.step for event in accumulator.Scalars("train/g_loss")] == [2, 4, 6, 8, 10]
    assert_mirrors_metrics(run, accumulator)
    assert [image.step for image in accumulator.Images(SAMPLES_TAG)] == [0, 3, 6, 9, 10]
    assert_mirrors_grids(run, accumulator)


@needs_tensorboard
def test_a_roll_back_replaces_the_events_after_its_checkpoint(run_cli, idx_dir, tmp_path, monkeypatch):
    real_step, calls = TrainingStep.generator_step, [0]

    def breaking_step(self, *args, **kwargs):  # G's 8th update leaves a NaN weight, found before step 8's row
        loss = real_step(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == 8:
            with torch.no_grad():
                weight = next(self.gan.generator.parameters())
                weight[(0,) * weight.dim()] = math.nan
        return loss

    monkeypatch.setattr(TrainingStep, "generator_step", breaking_step)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--batch-size", "16", "--steps", "12",
                           "--log-every", "2", "--checkpoint-every", "4", "--tensorboard")
    assert code == 0, err
    assert "rolled back to step 4" in err
    accumulator = events(run)
    assert [event.step for event in accumulator.Scalars("train/d_loss")] == [2, 4, 6, 8, 10, 12]
    assert_mirrors_metrics(run, accumulator)  # step 6 holds the retry's losses, at the halved rates


def test_a_run_without_the_flag_writes_no_events_and_does_not_import_tensorboard(run_cli, idx_dir, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "2")
    assert code == 0, err
    assert not (run / "tensorboard").exists()
    assert "torch.utils.tensorboard" not in sys.modules


def test_without_the_package_the_flag_is_refused_before_anything_is_written(run_cli, idx_dir, tmp_path,
                                                                            monkeypatch):
    run = tmp_path / "run"
    assert run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "2")[0] == 0
    before = snapshot(run)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import now fails
    expected = "dcgan: error: --tensorboard needs the tensorboard package: pip install 'dcgan[tensorboard]'\n"
    code, _, err = run_cli("train", "--data", idx_dir, "--out", tmp_path / "new", *TINY, "--steps", "2",
                           "--tensorboard")
    assert (code, err) == (2, expected)
    assert not (tmp_path / "new").exists()
    code, _, err = run_cli("train", "--resume", run, "--quiet", "--steps", "4", "--tensorboard")
    assert (code, err) == (2, expected)
    assert snapshot(run) == before
