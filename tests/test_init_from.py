"""A run started from another run's weights (`--init-from`), and D's first blocks kept as they start (`--freeze-d`)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import TINY, assert_same_training_state, snapshot, write_idx
from dcgan.checkpoint import load_checkpoint
from dcgan.config import TrainConfig, discriminator_block_count
from dcgan.networks import build_discriminator, discriminator_blocks
from dcgan.plots import read_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = ("--batch-size", "16", "--seed", "5")
# 4 checkpoints kept, one every step: the run's step-0 checkpoint (its starting weights) is still there after 3 steps.
EVERY_STEP = ("--checkpoint-every", "1", "--keep-checkpoints", "4")
DCGAN = ("--arch", "dcgan", "--image-size", "32", "--g-width", "4", "--d-width", "4")


def train(run_cli, idx_dir: Path, out: Path, *extra: object) -> Path:
    code, _, err = run_cli("train", "--data", idx_dir, "--out", out, *TINY, *SMALL, *extra)
    assert code == 0, err
    return out


def checkpoint(run: Path, step: int | None = None) -> dict:
    name = "last.pt" if step is None else f"step_{step:08d}.pt"
    return load_checkpoint(run / "checkpoints" / name)


def losses(run: Path) -> list[tuple[float, ...]]:
    """The metrics rows without their timing columns (which differ from run to run)."""
    return [(row["step"], row["d_loss"], row["g_loss"], row["d_real"], row["d_fake"])
            for row in read_metrics(run / "metrics.csv")]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def assert_refused(result: tuple[int, str, str], expected: str) -> None:
    """Exit code 2 and one line, `dcgan: error: ` and then a message that contains `expected`."""
    code, _, err = result
    assert code == 2, err
    (line,) = err.strip().splitlines()
    assert line.startswith("dcgan: error: ") and expected in line, line


@pytest.fixture
def source(run_cli, idx_dir: Path, tmp_path: Path) -> Path:
    """A finished 4-step run with a moving average."""
    return train(run_cli, idx_dir, tmp_path / "source", "--steps", "4", "--ema-decay", "0.9")


@pytest.mark.parametrize(("source_flags", "flags", "average_from"), [
    (("--ema-decay", "0.9"), ("--ema-decay", "0.9"), "ema"),  # both keep an average: the source's
    ((), ("--ema-decay", "0.9"), "generator"),  # only the new run: it starts as the source's G
    (("--ema-decay", "0.9"), (), None),  # only the source: the new run has none
], ids=["both-average", "new-run-averages", "source-averages"])
def test_a_run_starts_from_another_runs_weights_with_fresh_optimisers_and_position(
        run_cli, idx_dir, tmp_path, source_flags, flags, average_from):
    source = train(run_cli, idx_dir, tmp_path / "source", "--steps", "4", *source_flags)
    run = train(run_cli, idx_dir, tmp_path / "run", "--steps", "3", "--init-from", source, *EVERY_STEP, *flags)

    before, start, end = checkpoint(source), checkpoint(run, 0), checkpoint(run)
    assert same_tensors(start["generator"], before["generator"])
    assert same_tensors(start["discriminator"], before["discriminator"])
    if average_from is None:
        assert "ema" not in start
    else:
        expected = before["ema"]["module"] if average_from == "ema" else before["generator"]
        assert same_tensors(start["ema"]["module"], expected)
        assert start["ema"]["updates"] == 0 and end["ema"]["updates"] == 3
    assert start["opt_g"]["state"] == {} and start["opt_d"]["state"] == {}
    assert (start["step"], start["epoch"], start["batch"]) == (0, 0, 0)
    assert end["step"] == 3 and [row["step"] for row in read_metrics(run / "metrics.csv")] == [1, 2, 3]
    assert not same_tensors(end["generator"], before["generator"])
    assert not same_tensors(end["discriminator"], before["discriminator"])
    assert end["config"]["init_from"] == str(source)
    assert f'init_from = "{source}"' in (run / "config.toml").read_text()


def test_half_then_resume_of_a_started_run_is_bit_identical_and_does_not_read_the_source_again(
        run_cli, idx_dir, tmp_path, source):
    # Rows every 5 steps and checkpoints every 6, as in test_resume.py; D's first block frozen too.
    schedule = ("--batch-size", "48", "--log-every", "5", "--checkpoint-every", "6", "--init-from", source,
                "--freeze-d", "1")
    straight = train(run_cli, idx_dir, tmp_path / "straight", "--steps", "12", *schedule)
    split = train(run_cli, idx_dir, tmp_path / "split", "--steps", "6", *schedule)
    shutil.rmtree(source)  # a resume continues from the run's own checkpoint: the source is not needed
    code, _, err = run_cli("train", "--resume", split, "--quiet", "--steps", "12")
    assert code == 0, err

    a, b = checkpoint(straight), checkpoint(split)
    assert_same_training_state(a, b)
    assert a["step"] == b["step"] == 12
    assert losses(split) == losses(straight) and [row[0] for row in losses(split)] == [5, 6, 10, 12]


# D's parameters, input first, and those in its first `freeze` blocks.
FREEZE_CASES = {
    "tutorial": ((), 1, ["features.0.weight", "features.0.bias"],
                 ["features.3.weight", "features.3.bias", "classify.weight", "classify.bias"]),
    "dcgan": (DCGAN, 2, ["features.0.weight", "features.2.weight", "features.3.weight", "features.3.bias"],
              ["features.5.weight", "features.6.weight", "features.6.bias", "classify.1.weight"]),
}


@pytest.mark.parametrize("arch", FREEZE_CASES)
def test_frozen_blocks_keep_their_weights_and_the_others_train(run_cli, idx_dir, tmp_path, arch):
    flags, freeze, frozen, trained = FREEZE_CASES[arch]
    run = train(run_cli, idx_dir, tmp_path / "run", "--steps", "3", *flags, "--freeze-d", freeze, *EVERY_STEP)

    start, end = checkpoint(run, 0)["discriminator"], checkpoint(run)["discriminator"]
    assert all(torch.equal(start[name], end[name]) for name in frozen)
    assert not any(torch.equal(start[name], end[name]) for name in trained)
    assert len(checkpoint(run)["opt_d"]["param_groups"][0]["params"]) == len(trained)  # the optimiser's only


def test_frozen_blocks_keep_the_weights_of_the_run_started_from(run_cli, idx_dir, tmp_path, source):
    run = train(run_cli, idx_dir, tmp_path / "run", "--steps", "3", "--init-from", source, "--freeze-d", "2")
    before, after = checkpoint(source)["discriminator"], checkpoint(run)["discriminator"]
    assert all(torch.equal(before[name], after[name]) for name in before if name.startswith("features."))
    assert not any(torch.equal(before[name], after[name]) for name in before if name.startswith("classify."))


@pytest.mark.parametrize(("arch", "sizes"), [("tutorial", (8, 28, 64)), ("dcgan", (32, 64, 128))])
def test_the_block_count_the_config_checks_is_the_discriminators(arch, sizes):
    for size in sizes:
        config = TrainConfig(arch=arch, image_size=size, **({"d_width": 2, "g_width": 2} if arch == "dcgan" else {}))
        blocks = discriminator_blocks(build_discriminator(config))
        assert len(blocks) == discriminator_block_count(arch, size)
        assert all(isinstance(block[0], nn.Conv2d) for block in blocks)


def test_freezing_keeps_the_state_dict_and_takes_the_blocks_out_of_training():
    config = TrainConfig(arch="dcgan", image_size=32, d_width=2, g_width=2, conditional=True, num_classes=3,
                         spectral_norm=True)
    free, frozen = build_discriminator(config), build_discriminator(config.replace(freeze_d=2))
    assert list(free.state_dict()) != [] and sorted(free.state_dict()) == sorted(frozen.state_dict())
    frozen.load_state_dict(free.state_dict())  # a checkpoint of either loads into the other
    frozen.requires_grad_(True)  # as the G step does after skipping D's gradients
    frozen.logits(torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 0])).sum().backward()
    trainable = {name for name, parameter in frozen.named_parameters() if parameter.grad is not None}
    assert trainable == {name for name, _ in frozen.named_parameters()}
    assert not any(name.startswith(("features.0.", "features.2.", "features.3.")) for name in trainable)
    assert any(name.startswith("features.5.") for name in trainable)


# ---------------------------------------------------------------------------------------------
# Refused: one line naming the option, exit code 2, nothing written
# ---------------------------------------------------------------------------------------------

def few_classes(tmp_path: Path, subset: dict) -> Path:
    """IDX files of the digits 0 to 4 only."""
    keep = subset["train_labels"] < 5
    root = tmp_path / "five-digits"
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte", subset["train_images"][keep])
    write_idx(root / "train-labels-idx1-ubyte", subset["train_labels"][keep])
    return root


@pytest.mark.parametrize(("flags", "expected"), [
    (("--latent-dim", "5"), "its networks differ from this run's: --latent-dim 5 (it has 4)"),
    (DCGAN, "its networks differ from this run's: --arch dcgan (it has tutorial), --image-size 32 (it has 8), "
            "--g-width 4 (it has 64), --d-width 4 (it has 64)"),
    (("--spectral-norm",), "its networks differ from this run's: --spectral-norm on (it has off)"),
    (("--channels", "3"), "its networks differ from this run's: --channels 3 (it has 1)"),  # found after the data
], ids=["latent-dim", "arch", "spectral-norm", "channels"])
def test_other_networks_are_refused(run_cli, idx_dir, tmp_path, source, flags, expected):
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", idx_dir, "--out", tmp_path / "out", *TINY, "--steps", "1",
                           "--init-from", source, *flags), f"--init-from {source}: {expected}")
    assert snapshot(tmp_path) == before


def test_other_classes_are_refused_once_the_data_has_loaded(run_cli, idx_dir, tmp_path, mnist_subset):
    source = train(run_cli, idx_dir, tmp_path / "source", "--steps", "1", "--conditional")
    data = few_classes(tmp_path, mnist_subset)
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", data, "--out", tmp_path / "out", *TINY, "--steps", "1",
                           "--conditional", "--init-from", source),
                   f"--init-from {source}: its networks differ from this run's: 5 classes in the data (it has 10)")
    assert snapshot(tmp_path) == before


def generator_only(source: Path) -> Path:
    payload = torch.load(source / "checkpoints" / "last.pt", weights_only=True)
    torch.save({key: payload[key] for key in ("kind", "format_version", "generator", "config", "step")},
               source / "generator.pt")
    return source / "generator.pt"


def killed_before_its_first_checkpoint(source: Path) -> Path:
    (source / "checkpoints" / "last.pt").unlink()
    return source


@pytest.mark.parametrize(("make", "expected"), [
    (lambda source: source / "nothing", "no such run directory or checkpoint"),
    (generator_only, "the checkpoint holds a generator only"),
    (killed_before_its_first_checkpoint, "checkpoint not found"),
    (lambda source: source / "config.toml", "is not a readable checkpoint"),
], ids=["missing", "generator-only", "no-checkpoint", "not-a-checkpoint"])
def test_a_source_that_cannot_start_a_run_is_refused(run_cli, idx_dir, tmp_path, source, make, expected):
    path = make(source)
    before = snapshot(tmp_path)
    result = run_cli("train", "--data", idx_dir, "--out", tmp_path / "out", *TINY, "--steps", "1", "--init-from", path)
    assert_refused(result, f"--init-from {path}: ")
    assert expected in result[2]
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("flags", "expected"), [
    (("--resume", "RUN", "--init-from", "RUN"), "--init-from starts a new run from another run's weights; --resume "
                                                "continues a run from its own checkpoint: use one or the other"),
    (("--init-from", ""), "--init-from: an empty path; name a run directory or a checkpoint file"),
    (("--freeze-d", "3"), "--freeze-d must be at most 2 (the blocks of the tutorial discriminator at 8x8 pixels), "
                          "got 3"),
    (("--freeze-d", "4", *DCGAN), "--freeze-d must be at most 3 (the blocks of the dcgan discriminator at 32x32 "
                                  "pixels), got 4"),
], ids=["with-resume", "empty", "freeze-tutorial", "freeze-dcgan"])
def test_bad_options_are_refused(run_cli, idx_dir, tmp_path, source, flags, expected):
    flags = [source if flag == "RUN" else flag for flag in flags]
    before = snapshot(tmp_path)
    if "--resume" in flags:
        result = run_cli("train", *flags)
    else:
        result = run_cli("train", "--data", idx_dir, "--out", tmp_path / "out", *TINY, "--steps", "1", *flags)
    assert_refused(result, expected)
    assert snapshot(tmp_path) == before


def test_a_started_run_keeps_the_clusters_of_the_run_it_starts_from(run_cli, idx_dir, tmp_path, mnist_subset):
    few = tmp_path / "few"  # 20 images: a new run gets no clusters (50 images each), a started one keeps 5
    few.mkdir()
    for split, count in (("train", 20), ("t10k", 20)):
        write_idx(few / f"{split}-images-idx3-ubyte", mnist_subset[f"{split.replace('t10k', 'test')}_images"][:count])
        write_idx(few / f"{split}-labels-idx1-ubyte", mnist_subset[f"{split.replace('t10k', 'test')}_labels"][:count])
    source = train(run_cli, idx_dir, tmp_path / "source", "--steps", "2", "--clusters", "5")
    started = train(run_cli, few, tmp_path / "started", "--steps", "2", "--clusters", "5", "--init-from", source)
    scratch = train(run_cli, few, tmp_path / "scratch", "--steps", "2", "--clusters", "5")

    assert checkpoint(source)["config"]["clusters"] == 5
    assert checkpoint(started)["config"]["clusters"] == 5
    assert checkpoint(scratch)["config"]["clusters"] == 0


def test_a_started_folder_run_keeps_the_discriminator_width_and_clusters_of_its_source(run_cli, tmp_path):
    folder = tmp_path / "pictures"  # 16 pictures: a new run of the folder preset would get a D of 32
    folder.mkdir()
    for index in range(16):
        colour = np.array([15 * index, 255 - 15 * index, 100], dtype=np.uint8)
        Image.fromarray(np.broadcast_to(colour, (16, 16, 3)).copy()).save(folder / f"{index}.png")
    flags = ("--data", folder, "--image-size", "32", "--g-width", "4", "--latent-dim", "4", "--batch-size", "8",
             "--steps", "1", "--sample-every", "0", "--quiet")
    code, _, err = run_cli("train", *flags, "--d-width", "8", "--out", tmp_path / "source")
    assert code == 0, err
    code, _, err = run_cli("train", *flags, "--init-from", tmp_path / "source", "--out", tmp_path / "started")
    assert code == 0, err
    assert checkpoint(tmp_path / "started")["config"]["d_width"] == 8
    assert f"--d-width 8: the width of {tmp_path / 'source'}'s discriminator" in err
    # the source had no clusters (16 pictures, 50 per cluster): the started run keeps none, though 16 pictures
    # would give a started run's clusters 8 (2 per cluster)
    assert checkpoint(tmp_path / "started")["config"]["clusters"] == 0
    assert f"--clusters 0: the number of {tmp_path / 'source'}'s clusters" in err
