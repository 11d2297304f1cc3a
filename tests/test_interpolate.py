"""Latent walks: spherical interpolation, closed loops, and `dcgan interpolate` writing GIFs and grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import snapshot, train_tiny_runs
from dcgan.interpolation import class_morph, latent_walk, slerp

pytestmark = pytest.mark.usefixtures("one_thread")


def test_slerp_known_answers() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(slerp(a, b, 0.0), a)
    torch.testing.assert_close(slerp(a, b, 1.0), b)
    torch.testing.assert_close(slerp(a, b, 0.5), torch.tensor([1.0, 1.0]) / math.sqrt(2))  # on the circle
    assert slerp(a * 3, b * 3, 1 / 3).norm().item() == pytest.approx(3.0)
    torch.testing.assert_close(slerp(a, 2 * a, 0.5), 1.5 * a)  # parallel: a straight line


def test_a_walk_passes_every_anchor_and_closes_the_loop() -> None:
    anchors = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))
    walk = latent_walk(anchors, 4)
    assert walk.shape == (12, 2, 5)
    for index in range(3):
        torch.testing.assert_close(walk[4 * index], anchors[index])
    torch.testing.assert_close(slerp(anchors[2], anchors[0], 1.0), walk[0])  # the step after the last is the first
    assert (walk[-1] - walk[0]).norm() < (anchors[2] - anchors[0]).norm()
    starts, ends, t = class_morph(3, 2)
    assert starts.tolist() == [0, 0, 1, 1, 2, 2] and ends.tolist() == [1, 1, 2, 2, 0, 0]
    assert t.tolist() == [0.0, 0.5] * 3


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("walks"), mnist_subset, {"plain": (), "conditional": ("--conditional",)})


def test_interpolate_writes_a_looping_gif_of_walks_side_by_side(run_cli, tiny_runs, tmp_path: Path) -> None:
    out = tmp_path / "walk.gif"
    code, stdout, err = run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", out, "--frames", "5",
                                "--anchors", "3", "--num", "2", "--fps", "10")
    assert code == 0, err
    assert stdout.strip() == f"wrote 15 frames of 2 walks to {out}"
    with Image.open(out) as gif:
        assert gif.n_frames == 15 and gif.info["loop"] == 0 and gif.info["duration"] == 100
        assert gif.size == (2 * (2 * (8 + 2) + 2), 2 * (8 + 2 + 2))  # 2 walks of 8x8 with padding, doubled
        frames = []
        for index in (0, 1):
            gif.seek(index)
            frames.append(np.asarray(gif.convert("L")))
    assert not np.array_equal(*frames)  # it moves


def test_interpolate_png_is_one_walk_per_row(run_cli, tiny_runs, tmp_path: Path) -> None:
    code, _, err = run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", tmp_path / "walk.png",
                           "--frames", "4", "--anchors", "2", "--num", "3")
    assert code == 0, err
    assert Image.open(tmp_path / "walk.png").size == (8 * 10 + 2, 3 * 10 + 2)  # 8 frames across, 3 walks down


def test_interpolate_within_a_class_and_from_class_to_class(run_cli, tiny_runs, tmp_path: Path) -> None:
    code, _, err = run_cli("interpolate", "--checkpoint", tiny_runs["conditional"], "--out", tmp_path / "seven.png",
                           "--label", "7", "--frames", "3", "--anchors", "2", "--num", "1")
    assert code == 0, err
    code, stdout, err = run_cli("interpolate", "--checkpoint", tiny_runs["conditional"], "--out",
                                tmp_path / "morph.gif", "--labels", "0-3", "--frames", "2", "--num", "2")
    assert code == 0, err
    assert "wrote 8 frames of 2 walks" in stdout
    with Image.open(tmp_path / "morph.gif") as gif:
        assert gif.n_frames == 8


@pytest.mark.parametrize(("run", "extra", "message"), [
    ("plain", ("--label", "3"), "--label: {ck} takes no class labels (an unconditional model)"),
    ("conditional", ("--labels", "4"), "--labels 4: a morph needs at least 2 classes"),
    ("conditional", ("--label", "1,2"), "--label 1,2: name one class (use --labels to morph from class to class)"),
    ("plain", ("--anchors", "1"), "--anchors 1: a walk needs at least 2 anchor points"),
])
def test_interpolate_refuses_bad_options_in_one_line(run_cli, tiny_runs, tmp_path: Path, run: str,
                                                     extra: tuple[str, ...], message: str) -> None:
    code, _, err = run_cli("interpolate", "--checkpoint", tiny_runs[run], "--out", tmp_path / "w.gif", *extra)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"dcgan: error: {message.format(ck=tiny_runs[run])}")
    code, _, err = run_cli("interpolate", "--checkpoint", tiny_runs[run], "--out", tmp_path / "w.mp4")
    assert code == 2 and "name a .gif" in err
    assert not (tmp_path / "w.gif").exists()


def refused(result: tuple[int, str, str]) -> str:
    """The one error line of a refused command (exit code 2), without its `dcgan: error: ` prefix."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("dcgan: error: "), err
    return lines[0].removeprefix("dcgan: error: ")


@pytest.mark.parametrize("fps", ["0.001", "0.0015", "101", "1000"])
def test_an_fps_a_gif_cannot_hold_is_refused_naming_the_range(run_cli, tiny_runs, tmp_path: Path, fps: str) -> None:
    before = snapshot(tmp_path)
    message = refused(run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", tmp_path / "w.gif",
                              "--fps", fps))
    assert message == (f"--fps {float(fps):g}: a GIF frame shows for 0.01 s to 655.35 s, so --fps must be from "
                       "0.00153 to 100")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("fps", "duration"), [("100", 10), ("0.00153", 653590)])
def test_the_fps_at_either_end_of_the_range_is_the_delay_written(run_cli, tiny_runs, tmp_path: Path, fps: str,
                                                                 duration: int) -> None:
    out = tmp_path / "w.gif"
    code, _, err = run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", out, "--fps", fps,
                           "--frames", "2", "--anchors", "2", "--num", "1")
    assert code == 0, err
    with Image.open(out) as gif:
        assert gif.n_frames == 4 and gif.info["duration"] == duration  # PIL reads whole centiseconds back


@pytest.mark.parametrize(("name", "extra", "start"), [
    ("w.gif", ("--frames", "1000000000"), "--frames 1,000,000,000 x --anchors 4 x --num 4: needs about "),
    ("w.gif", ("--anchors", "1000000000"), "--frames 12 x --anchors 1,000,000,000 x --num 4: needs about "),
    ("w.png", ("--num", "1000000000"), "--frames 12 x --anchors 4 x --num 1,000,000,000: needs about "),
    ("m.png", ("--num", "1000000000", "--labels", "0-9"), "--frames 12 x 10 classes x --num 1,000,000,000: needs "),
])
def test_a_walk_that_cannot_fit_in_memory_is_refused_before_it_is_drawn(run_cli, tiny_runs, tmp_path: Path, name: str,
                                                                        extra: tuple[str, ...], start: str) -> None:
    before = snapshot(tmp_path)
    message = refused(run_cli("interpolate", "--checkpoint", tiny_runs["conditional"], "--out", tmp_path / name,
                              *extra))
    assert message.startswith(start) and "more than this machine can spare" in message and "at most" in message
    assert snapshot(tmp_path) == before


def test_walks_side_by_side_wider_than_a_gif_are_refused(run_cli, tiny_runs, tmp_path: Path) -> None:
    before = snapshot(tmp_path)
    message = refused(run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", tmp_path / "w.gif",
                              "--num", "3300"))
    assert message == ("--num 3300: walks side by side would make a GIF 66,004 pixels wide, more than the 65,535 it "
                       "holds; draw fewer, or a .png grid")
    assert snapshot(tmp_path) == before


def test_a_morph_through_more_classes_than_the_model_has_is_refused_before_the_list_is_built(
        run_cli, tiny_runs, tmp_path: Path) -> None:
    message = refused(run_cli("interpolate", "--checkpoint", tiny_runs["conditional"], "--out", tmp_path / "m.gif",
                              "--labels", "0-99999999999"))
    assert message == "--labels '0-99999999999': class 99999999999 is out of range; this model has classes 0-9"


@pytest.mark.parametrize("name", ["w.mp4", "w", "w.gif.txt"])
def test_a_walk_to_a_name_that_is_neither_gif_nor_png_is_refused(run_cli, tiny_runs, tmp_path: Path,
                                                                 name: str) -> None:
    before = snapshot(tmp_path)
    message = refused(run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", tmp_path / name))
    assert message == f"--out {tmp_path / name}: name a .gif (an animation) or a .png (a grid, a walk per row)"
    assert snapshot(tmp_path) == before


def test_an_existing_walk_is_never_overwritten(run_cli, tiny_runs, tmp_path: Path) -> None:
    (tmp_path / "w.gif").write_bytes(b"mine")
    message = refused(run_cli("interpolate", "--checkpoint", tiny_runs["plain"], "--out", tmp_path / "w.gif"))
    assert message == f"--out {tmp_path / 'w.gif'}: already exists; choose another path"
    assert (tmp_path / "w.gif").read_bytes() == b"mine"
