"""Bad input to `dcgan evaluate`, `dcgan classifier train/test`, `dcgan data export-png` and `train --resume`:
each case ends in one line naming the option or path at fault, exit code 2, no traceback, nothing written.

Paths that are not regular files (a named pipe, /dev/zero, a folder) are refused before they are
opened: reading a pipe would wait for a writer for ever, /dev/zero never ends.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import snapshot
from dcgan import limits
from dcgan.checkpoint import write_checkpoint
from dcgan.config import resolve_config
from dcgan.errors import UserError
from dcgan.evaluation.classifier import load_classifier
from dcgan.networks import build_generator
from dcgan.training.distributed import rank_seed
from dcgan.training.state import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread", "no_hang")


@pytest.fixture
def no_hang() -> Iterator[None]:
    """Fail a test that blocks (on a pipe, say) instead of hanging the suite."""

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("the command blocked for 60 s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture
def place(tmp_path: Path, mnist_subset: dict[str, np.ndarray]) -> Path:
    """Good samples and every kind of path that is not what an option reads."""
    np.save(tmp_path / "samples.npy", mnist_subset["test_images"][:100])
    (tmp_path / "hello.txt").write_text("hello\n")  # pickle reads `h` as "get from memo": a KeyError inside torch
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("not a run\n")
    os.mkfifo(tmp_path / "fifo.npy")
    os.mkfifo(tmp_path / "fifo")
    np.savez(tmp_path / "arrays.npz", labels=np.zeros(100, np.int64))
    return tmp_path


@pytest.fixture
def unchanged(place: Path, idx_dir: Path) -> Iterator[None]:
    """Fail the test if any file or folder under the test's folder (the data too) was created, changed or removed."""
    before = snapshot(place)
    yield
    assert snapshot(place) == before


def refused(result: tuple[int, str, str], *named: object) -> str:
    """Exit code 2 and exactly one `dcgan: error:` line, naming each of `named`; returns the line."""
    code, out, err = result
    assert "Traceback" not in err
    lines = err.splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("dcgan: error: "), err
    for text in named:
        assert str(text) in lines[0], lines[0]
    assert out == ""
    return lines[0]


# ---------------------------------------------------------------------------------------------
# Seeds
# ---------------------------------------------------------------------------------------------

def test_numpy_gets_the_low_32_bits_of_a_larger_seed_and_smaller_seeds_unchanged():
    seed_everything(2**40 + 5)  # np.random.seed alone refuses anything from 2**32
    assert torch.initial_seed() == 2**40 + 5
    drawn = np.random.random_sample(4)
    np.random.seed(5)
    assert np.array_equal(drawn, np.random.random_sample(4))
    for seed in (0, 1234, 2**32 - 1):
        seed_everything(seed)
        ours = np.random.get_state()[1].copy()
        np.random.seed(seed)
        assert np.array_equal(ours, np.random.get_state()[1])


def test_every_rank_of_a_run_with_the_largest_seed_can_be_seeded():
    for rank in range(4):
        seed = rank_seed(2**32 - 1, rank)
        assert seed >= 2**32
        seed_everything(seed)
        assert torch.initial_seed() == seed


# ---------------------------------------------------------------------------------------------
# Feature networks
# ---------------------------------------------------------------------------------------------

NOT_CLASSIFIERS = {  # path in the test's folder (or absolute) -> what the message says it is
    "hello.txt": "not a readable classifier file",
    "empty": "a folder, not a classifier file",
    "fifo": "a named pipe, not a classifier file",
    "/dev/zero": "a character device, not a classifier file",
    "missing.pt": "no such file",
    "hello.txt/x.pt": "no such file",
}


@pytest.mark.parametrize("name", NOT_CLASSIFIERS)
@pytest.mark.parametrize("command", ["evaluate", "classifier test", "train"])
def test_what_is_not_a_classifier_file_is_named_and_never_read(run_cli, place, unchanged, idx_dir, name, command):
    path = place / name
    context = {"evaluate": ["--samples", place / "samples.npy", "--reference", idx_dir, "--classifier", path],
               "classifier test": ["--data", idx_dir, "--classifier", path],
               "train": ["--data", idx_dir, "--out", place / "run", "--eval-every", "5", "--eval-classifier", path]}
    refused(run_cli(*command.split(), *context[command]), path, NOT_CLASSIFIERS[name])


def test_a_classifier_file_asking_for_absurd_sizes_is_refused_before_building_it(tmp_path):
    from dcgan.evaluation.classifier import bundled_path

    payload = torch.load(bundled_path(), weights_only=True)
    for key, value in (("image_size", 2**40), ("channels", 2), ("num_classes", 0), ("feature_dim", 10**9)):
        damaged = tmp_path / f"{key}.pt"
        torch.save({**payload, key: value}, damaged)
        with pytest.raises(UserError, match=f"--eval-classifier {damaged}: damaged classifier file"):
            load_classifier(damaged, option="--eval-classifier")


# ---------------------------------------------------------------------------------------------
# dcgan evaluate
# ---------------------------------------------------------------------------------------------

def evaluate(run_cli, place: Path, idx_dir: Path, *args: object) -> tuple[int, str, str]:
    return run_cli("evaluate", "--reference", idx_dir, *args)


@pytest.mark.parametrize(("option", "name", "expected"), [
    ("--samples", "fifo.npy", "a named pipe; expected a folder of PNG images or a .npy file"),
    ("--samples", "/dev/zero", "a character device; expected a folder of PNG images or a .npy file"),
    ("--samples", "arrays.npz", "expected a folder of PNG images or a .npy file"),
    ("--labels", "fifo", "a named pipe, not a .npy file"),
    ("--labels", "empty", "a folder, not a .npy file"),
    ("--labels", "/dev/zero", "a character device, not a .npy file"),
    ("--labels", "arrays.npz", "a .npz archive, not a .npy array"),
    ("--labels", "missing.npy", "no such file or directory"),
])
def test_samples_and_labels_that_are_not_npy_files_are_never_read(run_cli, place, unchanged, idx_dir, option, name,
                                                                   expected):
    samples = [] if option == "--samples" else ["--samples", place / "samples.npy"]
    refused(evaluate(run_cli, place, idx_dir, *samples, option, place / name), f"{option} {place / name}", expected)


def test_an_existing_json_file_is_never_overwritten(run_cli, place, idx_dir):
    scores = place / "scores.json"
    scores.write_text('{"fid": 1.0}\n')
    before = snapshot(place)
    refused(evaluate(run_cli, place, idx_dir, "--samples", place / "samples.npy", "--json", scores),
            f"--json {scores}: already exists")
    assert snapshot(place) == before


@pytest.mark.parametrize(("name", "expected"), [
    ("scores.txt", "name a .json file"),
    ("empty", "already exists"),
    ("hello.txt/scores.json", "hello.txt is not a folder"),
    ("nowhere/scores.json", "does not exist"),
])
def test_a_json_path_that_cannot_be_a_new_json_file_is_refused_before_scoring(run_cli, place, unchanged, idx_dir,
                                                                               name, expected):
    refused(evaluate(run_cli, place, idx_dir, "--samples", place / "samples.npy", "--json", place / name),
            f"--json {place / name}", expected)


@pytest.mark.parametrize(("flags", "expected"), [
    (["--seed", str(2**70)], "--seed: must be an integer from 0 to 2**64 - 1"),
    (["--kid-subsets", "1000000000"], "argument --kid-subsets: must be an integer from 1 to 10,000"),
    (["--kid-subsets", "0"], "argument --kid-subsets: must be an integer from 1 to 10,000"),
    (["--kid-subset-size", "1"], "argument --kid-subset-size: must be an integer from 2 to 5,000"),
    (["--kid-subset-size", str(2**70)], "argument --kid-subset-size: must be an integer from 2 to 5,000"),
])
def test_evaluate_numbers_out_of_range_are_refused(run_cli, place, unchanged, idx_dir, flags, expected):
    refused(evaluate(run_cli, place, idx_dir, "--samples", place / "samples.npy", *flags), expected)


def test_more_samples_than_memory_holds_are_refused_before_sampling(run_cli, place, idx_dir):
    config = resolve_config({}, {"preset": "tutorial", "image_size": 28, "latent_dim": 4})
    checkpoint = write_checkpoint({"config": config.to_dict(), "generator": build_generator(config).state_dict(),
                                   "step": 0}, place / "g.pt")
    before = snapshot(place)
    line = refused(evaluate(run_cli, place, idx_dir, "--checkpoint", checkpoint, "--num", str(2**70)),
                   f"--num {2**70:,}: needs about")
    assert "more than this machine can spare" in line
    assert snapshot(place) == before


# ---------------------------------------------------------------------------------------------
# dcgan data export-png
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("hello.txt", "already exists and is not an empty folder"),
    ("/dev/zero", "already exists and is not an empty folder"),
    ("notes", "already exists and is not an empty folder"),
    ("hello.txt/pngs", "cannot write (Not a directory)"),
])
def test_export_png_writes_only_into_a_new_or_empty_folder(run_cli, place, unchanged, idx_dir, name, expected):
    out = place / name
    refused(run_cli("data", "export-png", "--data", idx_dir, "--out", out), f"--out {out}", expected)


def test_export_png_fills_an_empty_folder(run_cli, place, idx_dir):
    code, out, err = run_cli("data", "export-png", "--data", idx_dir, "--out", place / "empty")
    assert code == 0, err
    assert "wrote 768 PNG files" in out
    assert len(list((place / "empty" / "testing").rglob("*.png"))) == 256


# ---------------------------------------------------------------------------------------------
# dcgan classifier train
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "expected"), [
    (["--channels", "2"], "argument --channels: invalid choice: 2 (choose from 0, 1, 3)"),
    (["--channels", str(2**70)], "argument --channels: invalid choice"),
    (["--image-size", str(2**70)], "argument --image-size: must be an integer from 8 to 256"),
    (["--image-size", "4"], "argument --image-size: must be an integer from 8 to 256"),
    (["--seed", str(2**32)], "argument --seed: must be an integer from 0 to 4,294,967,295"),
    (["--epochs", "1000000000"], "argument --epochs: must be an integer from 1 to 10,000"),
    (["--batch-size", "1"], "argument --batch-size: must be an integer from 2 to 1,048,576"),
    (["--batch-size", str(2**21)], "argument --batch-size: must be an integer from 2 to 1,048,576"),
])
def test_classifier_numbers_out_of_range_are_refused(run_cli, place, unchanged, idx_dir, flags, expected):
    refused(run_cli("classifier", "train", "--data", idx_dir, "--out", place / "c.pt", *flags), expected)


def test_a_classifier_batch_that_cannot_fit_is_refused_before_training(run_cli, place, unchanged, idx_dir,
                                                                       monkeypatch):
    monkeypatch.setattr(limits, "available_memory", lambda device=None: 100 * 2**20)  # 100 MiB
    line = refused(run_cli("classifier", "train", "--data", idx_dir, "--out", place / "c.pt", "--batch-size", "512"),
                   "--batch-size 512: needs about")
    assert "at most 65 fit" in line  # half of 100 MiB / (1024 bytes x 28 x 28 pixels)


# ---------------------------------------------------------------------------------------------
# dcgan train --resume
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("hello.txt", "not a run directory (a regular file)"),
    ("/dev/zero", "not a run directory (a character device)"),
    ("fifo", "not a run directory (a named pipe)"),
    ("missing", "no such run directory"),
    ("hello.txt/run", "no such run directory"),
    ("empty", "not a run directory of dcgan (neither config.toml nor checkpoints/ in it)"),
    ("notes", "not a run directory of dcgan (neither config.toml nor checkpoints/ in it)"),
])
def test_resume_names_what_the_path_is_when_it_is_no_run(run_cli, place, unchanged, name, expected):
    refused(run_cli("train", "--resume", place / name), f"--resume {place / name}: {expected}")
