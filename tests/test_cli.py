"""The command line end to end in a temporary folder: every file a run writes, and `generate`."""

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcgan.images import to_uint8
from dcgan.plots import read_metrics


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> Path:
    """One short CLI training run on a small IDX folder, shared by the tests below."""
    from conftest import write_idx
    from dcgan.cli import main

    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte", mnist_subset["train_images"])
    write_idx(data / "train-labels-idx1-ubyte", mnist_subset["train_labels"])
    run = root / "run"
    code = main(["train", "--data", str(data), "--steps", "40", "--batch-size", "16", "--log-every", "10",
                 "--sample-every", "10", "--out", str(run), "--quiet", "--seed", "1"])
    assert code == 0
    return run


def test_train_writes_every_documented_file(trained_run: Path) -> None:
    config = tomllib.loads((trained_run / "config.toml").read_text())
    assert config["steps"] == 40 and config["seed"] == 1 and config["preset"] == "default"  # no --preset
    rows = read_metrics(trained_run / "metrics.csv")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    evaluated = {"fid", "kid", "precision", "recall", "classes_covered", "class_entropy", "confidence", "class_match"}
    assert set(rows[0]) == {"step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s", "wall_time",
                            *evaluated}
    assert all(r[name] != r[name] for r in rows for name in evaluated)  # NaN: no --eval-every in this run
    grids = sorted((trained_run / "samples").glob("step_*.png"))
    assert [g.name for g in grids] == [f"step_{s:07d}.png" for s in (0, 10, 20, 30, 40)]
    for grid in grids:
        with Image.open(grid) as image:
            assert image.mode == "L" and image.width > 8 * 28
    with Image.open(trained_run / "progress.gif") as gif:
        assert gif.n_frames == 5
    with Image.open(trained_run / "losses.png") as plot:
        assert plot.width > 100
    payload = torch.load(trained_run / "checkpoints" / "last.pt", weights_only=True)
    assert {"generator", "discriminator", "opt_g", "opt_d", "config", "step", "epoch"} <= set(payload)
    assert payload["step"] == 40


def test_generate_png_files(trained_run: Path, tmp_path: Path, run_cli) -> None:
    code, out, _ = run_cli("generate", "--checkpoint", trained_run / "checkpoints" / "last.pt", "--num", "12",
                           "--out", tmp_path / "pngs", "--seed", "3")
    assert code == 0 and "12" in out
    files = sorted((tmp_path / "pngs").glob("*.png"))
    assert len(files) == 12
    with Image.open(files[0]) as image:
        assert image.mode == "L" and image.size == (28, 28)


def test_generate_npy_is_deterministic_per_seed(trained_run: Path, tmp_path: Path, run_cli) -> None:
    for name, seed in (("a.npy", 5), ("b.npy", 5), ("c.npy", 6)):
        assert run_cli("generate", "--checkpoint", trained_run, "--num", "7", "--format", "npy",
                       "--out", tmp_path / name, "--seed", seed)[0] == 0
    a, b, c = (np.load(tmp_path / n) for n in ("a.npy", "b.npy", "c.npy"))
    assert a.shape == (7, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_generate_grid(trained_run: Path, tmp_path: Path, run_cli) -> None:
    assert run_cli("generate", "--checkpoint", trained_run, "--num", "16", "--grid",
                   "--out", tmp_path / "grid.png")[0] == 0
    with Image.open(tmp_path / "grid.png") as image:
        assert image.size == (4 * 30 + 2, 4 * 30 + 2)  # 4 x 4 digits of 28 px with 2 px gaps


def test_samples_use_mnist_polarity() -> None:
    # Generator output -1 is the training data's 0 (black background), +1 its 255 (white ink).
    pixels = to_uint8(torch.tensor([-1.0, -0.5, 0.0, 1.0]).view(1, 1, 2, 2))
    assert pixels.ravel().tolist() == [0, 64, 128, 255]


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run([sys.executable, "-m", "dcgan", "--help"], capture_output=True, text=True, check=True)
    assert "train" in done.stdout and "generate" in done.stdout


def test_export_png_command(tmp_path: Path, idx_dir: Path, run_cli) -> None:
    code, out, _ = run_cli("data", "export-png", "--data", idx_dir, "--out", tmp_path / "png")
    assert code == 0 and "768" in out
    assert len(list((tmp_path / "png" / "training").rglob("*.png"))) == 512
