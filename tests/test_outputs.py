"""What `generate` and `export` write: exactly the file named, never one that exists, never a name in the
wrong format, and never a size that cannot fit (refused in one line before anything is computed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import dcgan.export
import dcgan.sampling
from conftest import snapshot, train_tiny_runs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """A tiny unconditional run and a tiny conditional one (8x8 digits)."""
    return train_tiny_runs(tmp_path_factory.mktemp("outputs"), mnist_subset, {"plain": (), "conditional":
                                                                              ("--conditional",)})


def refused(result: tuple[int, str, str]) -> str:
    """The one error line of a refused command (exit code 2), without its `dcgan: error: ` prefix."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("dcgan: error: "), err
    return lines[0].removeprefix("dcgan: error: ")


@pytest.fixture
def no_sampling(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command loads a generator: its output was to be refused before that."""
    def unexpected(*args: object, **kwargs: object) -> None:
        raise AssertionError("the generator was loaded before the output was checked")

    monkeypatch.setattr(dcgan.sampling, "load_generator", unexpected)
    monkeypatch.setattr(dcgan.export, "load_generator", unexpected)


def test_npy_samples_are_written_under_exactly_the_name_given(run_cli, runs, tmp_path: Path) -> None:
    code, stdout, err = run_cli("generate", "--checkpoint", runs["conditional"], "--format", "npy", "--num", "2",
                                "--labels", "3,5", "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert stdout.strip() == f"wrote 4 samples to {tmp_path / 's.npy'}"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == ["s.labels.npy", "s.npy"]
    assert np.load(tmp_path / "s.npy").shape == (4, 8, 8)
    assert np.load(tmp_path / "s.labels.npy").tolist() == [3, 3, 5, 5]


@pytest.mark.parametrize("name", ["s", "arr.png", "s.np"])
@pytest.mark.usefixtures("no_sampling")
def test_npy_to_a_name_without_the_npy_suffix_is_refused(run_cli, runs, tmp_path: Path, name: str) -> None:
    before = snapshot(tmp_path)
    message = refused(run_cli("generate", "--checkpoint", runs["plain"], "--format", "npy", "--out", tmp_path / name))
    assert message == f"--out {tmp_path / name}: --format npy writes a .npy file: name one ending in .npy"
    assert snapshot(tmp_path) == before


def test_npy_twice_to_the_same_name_keeps_the_first(run_cli, runs, tmp_path: Path) -> None:
    out = tmp_path / "s.npy"
    assert run_cli("generate", "--checkpoint", runs["plain"], "--format", "npy", "--num", "3", "--out", out)[0] == 0
    before = snapshot(tmp_path)
    message = refused(run_cli("generate", "--checkpoint", runs["plain"], "--format", "npy", "--num", "5",
                              "--seed", "1", "--out", out))
    assert message == f"--out {out}: already exists; choose another path"
    assert snapshot(tmp_path) == before


def test_an_existing_labels_file_is_never_overwritten(run_cli, runs, tmp_path: Path) -> None:
    (tmp_path / "s.labels.npy").write_bytes(b"mine")
    before = snapshot(tmp_path)
    message = refused(run_cli("generate", "--checkpoint", runs["conditional"], "--format", "npy", "--num", "1",
                              "--out", tmp_path / "s.npy"))
    assert message == (f"--out {tmp_path / 's.npy'}: its labels file {tmp_path / 's.labels.npy'} already exists; "
                       "choose another path")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("name", "flags", "message"), [
    ("grid.xyz", ("--grid",), "--out {out}: --grid writes a PNG image: name a .png file"),
    ("grid", ("--grid",), "--out {out}: --grid writes a PNG image: name a .png file"),
    ("grid.jpg", ("--grid",), "--out {out}: --grid writes a PNG image: name a .png file"),
    ("grid.png", ("--grid", "--format", "npy"), "--grid writes one PNG image; it does not go with --format npy"),
])
@pytest.mark.usefixtures("no_sampling")
def test_a_grid_to_a_name_that_is_not_png_is_refused_before_sampling(run_cli, runs, tmp_path: Path, name: str,
                                                                     flags: tuple[str, ...], message: str) -> None:
    before = snapshot(tmp_path)
    out = tmp_path / name
    assert refused(run_cli("generate", "--checkpoint", runs["plain"], *flags, "--out", out)) == message.format(out=out)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("run", "name", "flags", "start"), [
    ("plain", "samples", ("--num", "1000000000000"), "--num 1,000,000,000,000: needs about "),
    ("plain", "g.png", ("--num", "1000000000000", "--grid"), "--num 1,000,000,000,000: needs about "),
    ("conditional", "s.npy", ("--num", "100000000000", "--format", "npy"),
     "--num 100,000,000,000 x 10 classes: needs about "),
    ("conditional", "samples", ("--num", "1000000000000", "--label", "7"), "--num 1,000,000,000,000: needs about "),
])
def test_a_number_of_samples_that_cannot_fit_is_refused_before_sampling(run_cli, runs, tmp_path: Path, run: str,
                                                                        name: str, flags: tuple[str, ...],
                                                                        start: str) -> None:
    before = snapshot(tmp_path)
    message = refused(run_cli("generate", "--checkpoint", runs[run], *flags, "--out", tmp_path / name))
    assert message.startswith(start) and "more than this machine can spare" in message and "at most" in message
    assert snapshot(tmp_path) == before


def test_a_class_range_beyond_the_model_is_refused_before_it_is_expanded(run_cli, runs, tmp_path: Path) -> None:
    message = refused(run_cli("generate", "--checkpoint", runs["conditional"], "--labels", "0-99999999999",
                              "--out", tmp_path / "s"))
    assert message == "--labels '0-99999999999': class 99999999999 is out of range; this model has classes 0-9"
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(("seed", "accepted"), [("18446744073709551615", True), ("18446744073709551616", False)])
def test_the_seed_is_one_torch_generator_takes(run_cli, runs, tmp_path: Path, seed: str, accepted: bool) -> None:
    result = run_cli("generate", "--checkpoint", runs["plain"], "--num", "2", "--seed", seed, "--format", "npy",
                     "--out", tmp_path / "s.npy")
    if accepted:
        assert result[0] == 0, result[2]
        assert np.load(tmp_path / "s.npy").shape == (2, 8, 8)
    else:
        assert refused(result) == f"--seed: must be an integer from 0 to 2**64 - 1, got {seed}"
        assert not (tmp_path / "s.npy").exists()


def test_labels_of_a_model_without_classes_are_refused_in_the_same_words_everywhere(run_cli, runs,
                                                                                     tmp_path: Path) -> None:
    message = refused(run_cli("generate", "--checkpoint", runs["plain"], "--labels", "0-2", "--out", tmp_path / "s"))
    reason = ("takes no class labels (an unconditional model); train a class-conditional model with --conditional "
              "(or --preset conditional)")
    assert message == f"--labels: {runs['plain']} {reason}"
    with pytest.raises(dcgan.UserError) as from_python:
        dcgan.load(runs["plain"]).sample(2, labels=0)
    assert str(from_python.value) == f"labels: this generator {reason}"


def test_a_checkpoint_that_is_a_device_is_not_called_missing(run_cli, tmp_path: Path) -> None:
    message = refused(run_cli("generate", "--checkpoint", "/dev/zero", "--out", tmp_path / "s"))
    assert message == "/dev/zero: not a checkpoint file or a run directory (a device, pipe or socket)"


@pytest.mark.parametrize(("fmt", "name", "message"), [
    ("onnx", "g.pt", "--format onnx writes a .onnx file: name one ending in .onnx"),
    ("onnx", "g", "--format onnx writes a .onnx file: name one ending in .onnx"),
    ("torchscript", "g.onnx", "--format torchscript writes a .pt file: name one ending in .pt or .pth"),
])
@pytest.mark.usefixtures("no_sampling")
def test_an_export_to_a_name_of_another_format_is_refused(run_cli, runs, tmp_path: Path, fmt: str, name: str,
                                                         message: str) -> None:
    before = snapshot(tmp_path)
    out = tmp_path / name
    assert refused(run_cli("export", "--checkpoint", runs["plain"], "--format", fmt, "--out", out)) == \
        f"--out {out}: {message}"
    assert snapshot(tmp_path) == before
