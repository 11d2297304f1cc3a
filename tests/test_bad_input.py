"""Bad input: every case ends with a one-line error, exit code 2, no traceback, and no file changed.

Cases cover data, config files, command-line values, checkpoints and output folders (existing,
read-only, full). Root ignores file permissions, so read-only and full folders are real tmpfs
mounts where the machine allows mounting, and simulated failures of the same system calls
(through the real code path) everywhere.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import TINY, snapshot, train_tiny_runs, write_idx
from dcgan.checkpoint import load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")


def assert_refused(result: tuple[int, str, str], expected: str, *, started: bool = False) -> str:
    """Exit code 2 and exactly one error line, which contains `expected`.

    A run that `started` has announced its run directory and how it executes on the lines before.
    """
    code, _, err = result
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if started:
        assert lines[0].startswith("run directory: ") and lines[1].startswith("execution: "), err
        lines = lines[2:]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("dcgan: error: "), err
    assert expected in lines[0], err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_subset) -> Path:
    """A finished 2-step run (module-wide: tests copy it before touching it)."""
    return train_tiny_runs(tmp_path_factory.mktemp("trained"), mnist_subset, {"run": ()})["run"]


@pytest.fixture
def run_copy(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained run, inside this test's folder (so `unchanged` covers it)."""
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def unchanged(tmp_path: Path) -> Iterator[None]:
    """Fail the test if any file or folder under tmp_path was created, changed or removed."""
    before = snapshot(tmp_path)
    yield
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------

def idx_with(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    root = tmp_path / "idx-bad"
    root.mkdir()
    write_idx(root / "train-images-idx3-ubyte", images)
    write_idx(root / "train-labels-idx1-ubyte", labels)
    return root


def data_missing(tmp_path: Path, subset: dict) -> Path:
    return tmp_path / "nowhere"


def data_empty_folder(tmp_path: Path, subset: dict) -> Path:
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty"


def data_is_a_file(tmp_path: Path, subset: dict) -> Path:
    (tmp_path / "data.txt").write_text("1,2,3\n")
    return tmp_path / "data.txt"


def folder_without_images(tmp_path: Path, subset: dict) -> Path:
    (tmp_path / "folder" / "cats").mkdir(parents=True)
    (tmp_path / "folder" / "cats" / "notes.txt").write_text("no pictures here")
    return tmp_path / "folder"


def data_corrupt_zip(tmp_path: Path, subset: dict) -> Path:
    (tmp_path / "pictures.zip").write_bytes(b"PK\x03\x04 cut short")
    return tmp_path / "pictures.zip"


def folder_with_a_broken_image(tmp_path: Path, subset: dict) -> Path:
    from PIL import Image

    (tmp_path / "folder" / "0").mkdir(parents=True)
    Image.fromarray(subset["train_images"][0]).save(tmp_path / "folder" / "0" / "good.png")
    (tmp_path / "folder" / "0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return tmp_path / "folder"


def idx_truncated(tmp_path: Path, subset: dict) -> Path:
    root = idx_with(tmp_path, subset["train_images"], subset["train_labels"])
    images = root / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    return root


def idx_count_mismatch(tmp_path: Path, subset: dict) -> Path:
    return idx_with(tmp_path, subset["train_images"], subset["train_labels"][:500])


def idx_bad_magic(tmp_path: Path, subset: dict) -> Path:
    root = idx_with(tmp_path, subset["train_images"], subset["train_labels"])
    (root / "train-images-idx3-ubyte").write_bytes(b"GIF89a" + bytes(100))
    return root


DATA_CASES: dict[str, tuple[Callable[[Path, dict], Path], str]] = {
    "missing": (data_missing, "no such file or directory"),
    "empty-folder": (data_empty_folder, "the directory is empty"),
    "a-file": (data_is_a_file, "expected a directory"),
    "folder-without-images": (folder_without_images, "no images found"),
    "corrupt-zip": (data_corrupt_zip, "not a readable zip archive"),
    "broken-image": (folder_with_a_broken_image, "cannot read image"),
    "idx-truncated": (idx_truncated, "truncated"),
    "idx-count-mismatch": (idx_count_mismatch, "512 images but 500 labels"),
    "idx-bad-magic": (idx_bad_magic, "not an IDX file"),
}


@pytest.mark.parametrize("case", DATA_CASES)
def test_bad_data(run_cli, tmp_path, mnist_subset, case):
    make, expected = DATA_CASES[case]
    data = make(tmp_path, mnist_subset)
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", data, "--out", tmp_path / "out", *TINY, "--steps", "1"), expected)
    assert snapshot(tmp_path) == before  # in particular: no half-made run directory
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# Config files and command-line values
# ---------------------------------------------------------------------------------------------

CONFIG_CASES = {
    "syntax-error": ("batch_size = = 3\n", "is not valid TOML"),
    "unknown-key": ("batch_size = 32\nlearning_rate = 0.1\n", "unknown setting(s) learning_rate"),
    "wrong-type": ('batch_size = "32"\n', 'config.toml: batch_size = "32": must be an integer'),
    "out-of-range": ("batch_size = 0\n", "config.toml: batch_size = 0: must be positive"),
    "too-large": ("latent_dim = 1000000000\n", "config.toml: latent_dim = 1000000000: must be at most 4096"),
    "excluding-each-other": ("conditional = true\nclusters = 3\n",
                             "config.toml: clusters and conditional exclude each other"),
    "not-utf8": (b"data = \"\xff\xfe\"\n", "cannot read config file"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_bad_config_file(run_cli, tmp_path, case):
    text, expected = CONFIG_CASES[case]
    config = tmp_path / "config.toml"
    config.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--config", config, "--out", tmp_path / "out"), expected)
    assert snapshot(tmp_path) == before


def test_missing_config_file(run_cli, tmp_path, unchanged):
    assert_refused(run_cli("train", "--config", tmp_path / "nope.toml", "--out", tmp_path / "out"),
                   "config file not found")


FLAG_CASES = {
    "batch-size-0": (["--batch-size", "0"], "argument --batch-size: must be a positive integer"),
    "batch-size-1": (["--batch-size", "1"], "--batch-size must be at least 2"),
    "lr-d-negative": (["--lr-d", "-1"], "argument --lr-d: must be a positive number"),
    "lr-g-nan": (["--lr-g", "nan"], "argument --lr-g: must be a positive number"),
    "unknown-device": (["--device", "tpu"], "argument --device: invalid choice: 'tpu'"),
    "steps-not-a-number": (["--steps", "ten"], "argument --steps: expected an integer"),
    "beta1-too-large": (["--beta1", "1.5"], "--beta1 must be in [0, 1)"),
    "nothing-to-train": (["--epochs", "0"], "nothing to train"),
    "image-size": (["--image-size", "30"], "--image-size must be a multiple of 4"),
    "channels": (["--channels", "2"], "--channels must be 1 or 3"),
    "unknown-preset": (["--preset", "huge"], "argument --preset: invalid choice"),
    "unknown-flag": (["--learning-rate", "0.1"], "unrecognized arguments: --learning-rate 0.1"),
}


@pytest.mark.parametrize("case", FLAG_CASES)
def test_bad_flag(run_cli, tmp_path, case, unchanged):
    flags, expected = FLAG_CASES[case]
    assert_refused(run_cli("train", "--out", tmp_path / "out", *flags), expected)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(run_cli, tmp_path, idx_dir):
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", idx_dir, "--out", tmp_path / "out", "--device", "cuda"),
                   "--device cuda: not available on this machine")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------

def test_generate_from_a_missing_checkpoint(run_cli, tmp_path, unchanged):
    assert_refused(run_cli("generate", "--checkpoint", tmp_path / "nope.pt", "--out", tmp_path / "g.png", "--grid"),
                   "checkpoint not found")


def test_generate_from_a_file_that_is_not_ours(run_cli, tmp_path):
    (tmp_path / "model.pt").write_text("weights, honest\n")
    with_unchanged = snapshot(tmp_path)
    assert_refused(run_cli("generate", "--checkpoint", tmp_path / "model.pt", "--out", tmp_path / "g.png", "--grid"),
                   "is not a readable checkpoint")
    assert snapshot(tmp_path) == with_unchanged


def test_generate_from_a_pickle_carrying_code(run_cli, tmp_path):
    class Payload:
        def __reduce__(self):
            return os.mkdir, (str(tmp_path / "pwned"),)

    torch.save({"kind": "dcgan-checkpoint", "x": Payload()}, tmp_path / "evil.pt")
    before = snapshot(tmp_path)
    assert_refused(run_cli("generate", "--checkpoint", tmp_path / "evil.pt", "--out", tmp_path / "g.png", "--grid"),
                   "asks to run code")
    assert snapshot(tmp_path) == before and not (tmp_path / "pwned").exists()


def test_generate_from_a_truncated_checkpoint(run_cli, run_copy, tmp_path):
    last = run_copy / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:100_000])
    before = snapshot(tmp_path)
    assert_refused(run_cli("generate", "--checkpoint", run_copy, "--out", tmp_path / "g.png", "--grid"),
                   "is not a readable checkpoint")
    assert snapshot(tmp_path) == before


def test_generate_from_a_newer_format(run_cli, run_copy, tmp_path):
    last = run_copy / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    torch.save({**payload, "format_version": payload["format_version"] + 1}, last)
    before = snapshot(tmp_path)
    assert_refused(run_cli("generate", "--checkpoint", last, "--out", tmp_path / "g.png", "--grid"), "newer dcgan")
    assert snapshot(tmp_path) == before


def test_resume_a_folder_without_checkpoint(run_cli, tmp_path, unchanged):
    assert_refused(run_cli("train", "--resume", tmp_path), "not a run directory of dcgan")


def test_resume_a_run_killed_before_its_first_checkpoint(run_cli, run_copy, tmp_path):
    (run_copy / "checkpoints" / "last.pt").unlink()
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--resume", run_copy), "stopped before its first checkpoint")
    assert snapshot(tmp_path) == before


def test_resume_from_a_checkpoint_that_is_not_ours(run_cli, run_copy, tmp_path):
    torch.save(torch.nn.Linear(3, 3).state_dict(), run_copy / "checkpoints" / "last.pt")
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--resume", run_copy), "is not a dcgan checkpoint")
    assert snapshot(tmp_path) == before


def test_resume_from_a_generator_only_checkpoint(run_cli, run_copy, tmp_path):
    last = run_copy / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    torch.save({k: payload[k] for k in ("kind", "format_version", "generator", "config", "step")}, last)
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--resume", run_copy), "cannot be resumed")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flags, expected", [
    (["--steps", "1"], "already at step 2, past the 1 steps asked for"),
    (["--lr-d", "0.1"], "a resumed run keeps its recipe; cannot change --lr-d 0.1 (the run has 0.001)"),
    (["--out", "elsewhere"], "drop --out and --config"),
], ids=["steps-below-current", "fixed-option", "out"])
def test_resume_with_bad_options(run_cli, run_copy, tmp_path, flags, expected):
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--resume", run_copy, "--quiet", *flags), expected)
    assert snapshot(tmp_path) == before


def test_resume_after_the_data_changed(run_cli, run_copy, tmp_path, mnist_subset):
    smaller = idx_with(tmp_path, mnist_subset["train_images"][:256], mnist_subset["train_labels"][:256])
    last = run_copy / "checkpoints" / "last.pt"
    payload = torch.load(last, weights_only=True)
    payload["config"]["data"] = str(smaller)  # as if the files at the run's data path had been replaced
    torch.save(payload, last)
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--resume", run_copy, "--quiet", "--steps", "4"),
                   "trained on 512 images but the data now has 256")
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Output folders: existing, read-only, full
# ---------------------------------------------------------------------------------------------

def test_train_into_a_non_empty_folder(run_cli, run_copy, tmp_path, idx_dir):
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", idx_dir, "--out", run_copy, *TINY, "--steps", "1"),
                   "already exists and is not empty")
    assert snapshot(tmp_path) == before


def test_train_into_a_file(run_cli, tmp_path, idx_dir):
    (tmp_path / "out").write_text("keep me")
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", idx_dir, "--out", tmp_path / "out", *TINY, "--steps", "1"),
                   "already exists and is not empty")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flags", [["--grid"], ["--format", "npy"], []], ids=["grid", "npy", "folder"])
def test_generate_onto_an_existing_output(run_cli, trained, tmp_path, flags):
    out = tmp_path / "out.png"
    if flags:
        out.write_bytes(b"precious")
    else:
        out.mkdir()
        (out / "000000.png").write_bytes(b"precious")
    before = snapshot(tmp_path)
    assert_refused(run_cli("generate", "--checkpoint", trained, "--out", out, *flags), "already exists")
    assert snapshot(tmp_path) == before


def test_generate_into_a_missing_folder(run_cli, trained, tmp_path, unchanged):
    assert_refused(run_cli("generate", "--checkpoint", trained, "--out", tmp_path / "no" / "g.png", "--grid"),
                   "does not exist")


def fail_with(number: int) -> Callable[..., None]:
    def fail(*args: object, **kwargs: object) -> None:
        raise OSError(number, os.strerror(number))

    return fail


def test_train_into_a_read_only_place_simulated(run_cli, tmp_path, idx_dir, monkeypatch):
    monkeypatch.setattr(Path, "mkdir", fail_with(errno.EROFS))
    before = snapshot(tmp_path)
    assert_refused(run_cli("train", "--data", idx_dir, "--out", tmp_path / "out", *TINY, "--steps", "1"),
                   "cannot create the run directory (Read-only file system)")
    assert snapshot(tmp_path) == before


def test_generate_into_a_read_only_place_simulated(run_cli, trained, tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setattr(Image.Image, "save", fail_with(errno.EACCES))
    before = snapshot(tmp_path)
    assert_refused(run_cli("generate", "--checkpoint", trained, "--out", tmp_path / "g.png", "--grid"),
                   "cannot write (Permission denied)")
    assert snapshot(tmp_path) == before


def test_disk_full_during_a_checkpoint_save_simulated(run_cli, tmp_path, idx_dir, monkeypatch):
    """The disk fills up at the step-4 save (reported at fsync, as delayed allocation does)."""
    run = tmp_path / "run"
    real_fsync, saves = os.fsync, []

    def fsync(fd: int) -> None:
        if ".last.pt.tmp" in os.readlink(f"/proc/self/fd/{fd}"):  # a checkpoint's staged file
            saves.append(fd)
            if len(saves) == 3:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    code, out, err = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "6", "--batch-size", "16",
                             "--checkpoint-every", "2")
    last = run / "checkpoints" / "last.pt"
    assert_refused((code, out, err), f"cannot write checkpoint {last}: No space left on device", started=True)
    assert load_checkpoint(last)["step"] == 2  # the previous checkpoint, whole
    assert [p.name for p in last.parent.iterdir()] == ["last.pt"]


# Real mounts: a full or read-only tmpfs, where this machine lets the tests mount one (root, CI).

@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """mount(name, options) -> a fresh tmpfs in tmp_path; skips the test where mounting is not allowed."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        if os.geteuid() != 0 or not shutil.which("mount"):
            pytest.skip("mounting a tmpfs needs root")
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_disk_full_during_a_checkpoint_save_on_a_real_tmpfs(run_cli, tmp_path, idx_dir, tmpfs):
    # 8 MB holds the tutorial's first checkpoint (4.7 MB, no optimiser state yet), not a later one (14 MB).
    disk = tmpfs("small", "size=8m")
    run = disk / "run"
    result = run_cli("train", "--data", idx_dir, "--out", run, *TINY, "--steps", "4", "--batch-size", "16",
                     "--checkpoint-every", "2", "--preset", "tutorial")
    last = run / "checkpoints" / "last.pt"
    assert_refused(result, f"cannot write checkpoint {last}: No space left on device", started=True)
    assert load_checkpoint(last)["step"] == 0
    assert [p.name for p in last.parent.iterdir()] == ["last.pt"]


def test_train_and_generate_into_a_real_read_only_tmpfs(run_cli, trained, tmp_path, idx_dir, tmpfs):
    read_only = tmpfs("ro", "ro,size=1m")
    assert_refused(run_cli("train", "--data", idx_dir, "--out", read_only / "run", *TINY, "--steps", "1"),
                   "cannot create the run directory (Read-only file system)")
    assert_refused(run_cli("generate", "--checkpoint", trained, "--out", read_only / "g.png", "--grid"),
                   "cannot write (Read-only file system)")
    assert_refused(run_cli("generate", "--checkpoint", trained, "--out", read_only / "pngs"),
                   "cannot write (Read-only file system)")
    assert list(read_only.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# A table of hostile values for every numeric and path option
# ---------------------------------------------------------------------------------------------

NUMBERS = {"negative": "-1", "zero": "0", "nan": "nan", "inf": "inf", "-inf": "-inf", "overflow": "1e309",
           "huge": str(2**70), "big": "1000000000", "empty": "", "word": "ten", "fraction": "0.5"}
# Each option's table is every value above but those it accepts, which are left out: they would
# start a run (or a whole evaluation, or a classifier's training).
TRAIN_ACCEPTS = {
    "--image-size": (), "--channels": ("zero",), "--g-width": (), "--d-width": ("zero",), "--latent-dim": (),
    "--batch-size": (), "--lr-d": ("fraction", "big", "huge"), "--lr-g": ("fraction", "big", "huge"),
    "--beta1": ("zero", "fraction"), "--beta2": ("zero", "fraction"), "--ema-decay": ("zero", "fraction"),
    "--mode-seeking": ("zero", "fraction", "big", "huge"), "--d-steps": (), "--r1": ("zero", "fraction", "big", "huge"),
    "--clusters": ("zero",), "--seed": ("zero", "big"), "--epochs": ("big", "huge"),
    "--steps": ("zero", "big", "huge"), "--time-limit": ("fraction", "big", "huge"), "--log-every": ("big", "huge"),
    "--sample-every": ("zero", "big", "huge"), "--checkpoint-every": ("zero", "big", "huge"),
    "--keep-checkpoints": ("big", "huge"), "--eval-every": ("zero", "big", "huge"), "--eval-samples": (),
    "--freeze-d": ("zero",),
}
EVALUATE_ACCEPTS = {"--num": ("big", "huge"), "--seed": ("zero", "big"), "--k": ("big", "huge"),
                    "--kid-subsets": (), "--kid-subset-size": ()}
CLASSIFIER_ACCEPTS = {"--channels": ("zero",), "--image-size": (), "--epochs": (), "--batch-size": (),
                      "--lr": ("fraction", "big", "huge"), "--seed": ("zero", "big")}
GENERATE_ACCEPTS = {"--num": (), "--seed": ("zero", "big"), "--truncation": ("fraction",)}
INTERPOLATE_ACCEPTS = {"--frames": (), "--anchors": (), "--num": (), "--seed": ("zero", "big"), "--fps": ("fraction",),
                       "--truncation": ("fraction",)}
NUMBER_COMMANDS = {"train": TRAIN_ACCEPTS, "evaluate": EVALUATE_ACCEPTS, "classifier train": CLASSIFIER_ACCEPTS,
                   "generate": GENERATE_ACCEPTS, "interpolate": INTERPOLATE_ACCEPTS,
                   "project": {"--steps": (), "--seed": ("zero", "big")},
                   "export": {"--truncation": ("fraction",)}, "demo": {"--truncation": ("fraction",)}}

# Paths: `odd` is a missing path whose name has a line break, quotes, spaces and non-ASCII letters.
PATHS = ("missing", "odd", "file", "full-folder", "empty-folder", "dev-zero", "fifo", "under-a-file")
PATH_ROWS = {  # (command, option): the kinds of path in its table; the others would be accepted
    ("train", "--config"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("train", "--resume"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("train", "--data"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("train", "--out"): ("file", "full-folder", "dev-zero", "under-a-file"),
    ("train", "--eval-classifier"): ("missing", "odd", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("train", "--init-from"): PATHS,  # a folder of data is no run either
    ("evaluate", "--samples"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("evaluate", "--checkpoint"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("evaluate", "--reference"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("evaluate", "--classifier"): ("missing", "odd", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("evaluate", "--labels"): ("missing", "odd", "file", "empty-folder", "dev-zero", "under-a-file"),
    ("evaluate", "--json"): ("empty-folder", "under-a-file"),
    ("data export-png", "--data"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("data export-png", "--out"): ("full-folder",),
    ("classifier train", "--data"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("classifier train", "--out"): ("file", "full-folder", "dev-zero", "under-a-file"),
    ("classifier test", "--classifier"): ("missing", "odd", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("classifier test", "--data"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("generate", "--checkpoint"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("generate", "--out"): ("file", "full-folder", "dev-zero", "under-a-file"),
    ("interpolate", "--checkpoint"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("interpolate", "--out"): PATHS,  # none of them names a .gif or a .png
    ("export", "--checkpoint"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("export", "--out"): PATHS,  # none of them names a .onnx file
    ("demo", "--checkpoint"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("project", "--checkpoint"): ("missing", "odd", "file", "empty-folder", "dev-zero", "fifo", "under-a-file"),
    ("project", "--image"): PATHS,  # none of them is a picture file
    ("project", "--out"): ("file", "full-folder", "dev-zero", "fifo", "under-a-file"),
    ("interpolate", "--from-latent"): PATHS,  # none of them is a .npy file
    ("interpolate", "--to-latent"): PATHS,
}


@pytest.fixture(scope="module")
def place(tmp_path_factory, mnist_subset, trained) -> Path:
    """What the table's commands read (shared, never written): IDX data, samples, a checkpoint, and hostile paths."""
    root = tmp_path_factory.mktemp("hostile")
    shutil.copy(trained / "checkpoints" / "last.pt", root / "model.pt")
    (root / "idx").mkdir()
    write_idx(root / "idx" / "train-images-idx3-ubyte", mnist_subset["train_images"])
    write_idx(root / "idx" / "train-labels-idx1-ubyte", mnist_subset["train_labels"])
    write_idx(root / "idx" / "t10k-images-idx3-ubyte", mnist_subset["test_images"])
    write_idx(root / "idx" / "t10k-labels-idx1-ubyte", mnist_subset["test_labels"])
    np.save(root / "samples.npy", mnist_subset["test_images"][:100])
    from PIL import Image

    Image.fromarray(mnist_subset["test_images"][0]).save(root / "digit.png")  # the picture `project` reads
    np.save(root / "latent.npy", np.zeros(4, np.float32))  # a latent of model.pt (TINY: 4 numbers)
    (root / "file.txt").write_text("not what any option reads\n")
    (root / "empty").mkdir()
    os.mkfifo(root / "fifo")  # opening it to read would wait for a writer for ever
    return root


def hostile_path(kind: str, place: Path) -> Path:
    return {"missing": place / "missing", "odd": place / "odd\nname \u2603 'q' \"dq\" $HOME *",
            "file": place / "file.txt", "full-folder": place / "idx", "empty-folder": place / "empty",
            "dev-zero": Path("/dev/zero"), "fifo": place / "fifo", "under-a-file": place / "file.txt" / "x"}[kind]


def command_line(command: str, option: str, value: object, place: Path, out: Path) -> list[object]:
    """`dcgan COMMAND` with what it needs to get as far as `option`, then `option value` (the last one counts)."""
    tiny = ("--data", place / "idx", *TINY, "--out", out)
    context = {
        ("train", "--resume"): [], ("train", "--eval-classifier"): [*tiny, "--eval-every", "5"],
        ("evaluate", "--checkpoint"): ["--reference", place / "idx"],
        ("generate", "--checkpoint"): ["--out", out], ("interpolate", "--checkpoint"): ["--out", out.with_suffix(".gif")],
        ("export", "--checkpoint"): ["--out", out.with_suffix(".onnx")],
        ("project", "--checkpoint"): ["--image", place / "digit.png", "--out", out],
        ("interpolate", "--from-latent"): ["--checkpoint", place / "model.pt", "--out", out.with_suffix(".gif"),
                                           "--to-latent", place / "latent.npy"],
        ("interpolate", "--to-latent"): ["--checkpoint", place / "model.pt", "--out", out.with_suffix(".gif"),
                                         "--from-latent", place / "latent.npy"],
    }.get((command, option))
    if context is None:
        context = {"train": tiny, "evaluate": ["--samples", place / "samples.npy", "--reference", place / "idx"],
                   "data export-png": ["--out", out], "classifier train": ["--data", place / "idx", "--out", out],
                   "classifier test": [], "generate": ["--checkpoint", place / "model.pt", "--out", out],
                   "interpolate": ["--checkpoint", place / "model.pt", "--out", out.with_suffix(".gif")],
                   "export": ["--checkpoint", place / "model.pt"], "demo": [],
                   "project": ["--checkpoint", place / "model.pt", "--image", place / "digit.png",
                               "--out", out]}[command]
    return [*command.split(), *context, option, value]


TABLE = [pytest.param(command, option, NUMBERS[name], id=f"{command}{option}={name}")
         for command, accepts in NUMBER_COMMANDS.items() for option in accepts for name in NUMBERS
         if name not in accepts[option]]
TABLE += [pytest.param(command, option, kind, id=f"{command}{option}={kind}")
          for (command, option), kinds in PATH_ROWS.items() for kind in kinds]


@pytest.mark.parametrize(("command", "option", "value"), TABLE)
def test_hostile_values_are_one_line_errors_that_write_nothing(run_cli, place, tmp_path, command, option, value):
    value = hostile_path(value, place) if value in PATHS else value
    out = tmp_path / "out"
    before = snapshot(place)
    code, stdout, err = run_cli(*command_line(command, option, value, place, out))
    line = assert_refused((code, stdout, err), "")
    assert option in line or " ".join(str(value).split()) in line, line  # names the option or the path
    assert not any(tmp_path.glob("out*"))
    assert snapshot(place) == before

