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


@pytest.mark.slow
def test_train_writes_every_documented_file(trained_run: Path) -> None:
    config = tomllib.loads((trained_run / "config.toml").read_text())
    assert config["steps"] == 40 and config["seed"] == 1 and config["preset"] == "default"  # no --preset
    rows = read_metrics(trained_run / "metrics.csv")
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    evaluated = {"fid", "kid", "precision", "recall", "classes_covered", "class_entropy", "confidence", "class_match"}
    assert set(rows[0]) == {"step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "images_per_s", "wall_time",
                            "ada_p", "ada_signal", *evaluated}
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


@pytest.mark.slow
def test_generate_png_files(trained_run: Path, tmp_path: Path, run_cli) -> None:
    code, out, _ = run_cli("generate", "--checkpoint", trained_run / "checkpoints" / "last.pt", "--num", "12",
                           "--out", tmp_path / "pngs", "--seed", "3")
    assert code == 0 and "12" in out
    files = sorted((tmp_path / "pngs").glob("*.png"))
    assert len(files) == 12
    with Image.open(files[0]) as image:
        assert image.mode == "L" and image.size == (28, 28)


@pytest.mark.slow
def test_generate_npy_is_deterministic_per_seed(trained_run: Path, tmp_path: Path, run_cli) -> None:
    for name, seed in (("a.npy", 5), ("b.npy", 5), ("c.npy", 6)):
        assert run_cli("generate", "--checkpoint", trained_run, "--num", "7", "--format", "npy",
                       "--out", tmp_path / name, "--seed", seed)[0] == 0
    a, b, c = (np.load(tmp_path / n) for n in ("a.npy", "b.npy", "c.npy"))
    assert a.shape == (7, 28, 28) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)


@pytest.mark.slow
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


@pytest.mark.slow
def test_a_time_limit_alone_trains_until_it_runs_out(run_cli, idx_dir: Path, tmp_path: Path, one_thread) -> None:
    from conftest import TINY

    run = tmp_path / "run"
    # 512 images in batches of 48: 11 steps an epoch (the default length), a fraction of the 1.8 s allowed
    code, out, err = run_cli("train", "--data", idx_dir, *TINY, "--batch-size", "48", "--time-limit", "0.03",
                             "--out", run)
    assert code == 0, err
    config = tomllib.loads((run / "config.toml").read_text())
    assert (config["epochs"], config["steps"], config["time_limit"]) == (0, 0, 0.03)
    step = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert out.startswith(f"time_limit: step={step} ") and step > 11
    assert read_metrics(run / "metrics.csv")[-1]["wall_time"] >= 1.8


def test_resume_accepts_the_runs_own_recipe_flags(run_cli, idx_dir: Path, tmp_path: Path, one_thread) -> None:
    from conftest import TINY

    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, *TINY, "--batch-size", "16", "--steps", "2", "--seed", "3",
                           "--out", run)
    assert code == 0, err
    code, out, err = run_cli("train", "--resume", run, "--data", idx_dir, "--preset", "tutorial", "--seed", "3",
                             "--image-size", "8", "--steps", "4", "--quiet")
    assert code == 0, err
    assert out.startswith("completed: step=4 ")
    code, _, err = run_cli("train", "--resume", run, "--seed", "4", "--steps", "6", "--quiet")
    assert code == 2 and err.strip().splitlines() == [
        f"dcgan: error: --resume {run}: a resumed run keeps its recipe; cannot change --seed 4 (the run has 3)"]


def test_channels_last_is_recorded_as_the_runs_memory_format(run_cli, idx_dir: Path, tmp_path: Path,
                                                              one_thread) -> None:
    from conftest import TINY

    run = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, *TINY, "--batch-size", "16", "--steps", "2", "--channels-last",
                           "--out", run)
    assert code == 0, err
    assert tomllib.loads((run / "config.toml").read_text())["memory_format"] == "channels-last"
    # the log says how the run executes; the tutorial's networks have no convolutions that run otherwise
    assert "execution: cpu, 1 thread, precision " in err and ", memory channels-last\n" in err
    code, _, err = run_cli("train", "--resume", run, "--memory-format", "contiguous", "--steps", "4", "--quiet")
    assert code == 2 and err.strip().splitlines() == [
        f"dcgan: error: --resume {run}: a resumed run keeps its recipe; cannot change --memory-format 'contiguous' "
        f"(the run has 'channels-last')"]
    code, out, err = run_cli("train", "--resume", run, "--memory-format", "channels-last", "--steps", "4", "--quiet")
    assert code == 0 and out.startswith("completed: step=4 "), err


def test_the_way_of_running_convolutions_is_recorded_and_kept_on_resume(run_cli, tmp_path: Path,
                                                                        one_thread) -> None:
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    generator = np.random.default_rng(0)
    for index in range(8):
        Image.fromarray(generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(pictures / f"{index}.png")
    run = tmp_path / "run"
    tiny = ("--preset", "dcgan", "--image-size", "32", "--g-width", "4", "--d-width", "4", "--latent-dim", "4",
            "--batch-size", "4", "--quiet", "--sample-every", "0", "--precision", "fp32")
    code, _, err = run_cli("train", "--data", pictures, *tiny, "--steps", "2", "--convolutions", "matmul",
                           "--out", run)
    assert code == 0, err
    assert tomllib.loads((run / "config.toml").read_text())["convolutions"] == "matmul"
    code, _, err = run_cli("train", "--resume", run, "--convolutions", "native", "--steps", "4", "--quiet")
    assert code == 2 and err.strip().splitlines() == [
        f"dcgan: error: --resume {run}: a resumed run keeps its recipe; cannot change --convolutions 'native' "
        f"(the run has 'matmul')"]
    code, out, err = run_cli("train", "--resume", run, "--steps", "4", "--quiet")
    assert code == 0 and out.startswith("completed: step=4 "), err


def test_progress_gif_keeps_the_colours_of_the_grids(tmp_path: Path) -> None:
    from dcgan.images import save_progress_gif

    samples = tmp_path / "samples"
    samples.mkdir()
    Image.new("RGB", (6, 4), (255, 0, 0)).save(samples / "step_0000000.png")
    Image.new("RGB", (6, 4), (0, 0, 255)).save(samples / "step_0000010.png")
    assert save_progress_gif(samples, tmp_path / "colour.gif") == 2
    Image.new("L", (6, 4), 200).save(samples / "step_0000000.png")
    Image.new("L", (6, 4), 30).save(samples / "step_0000010.png")
    save_progress_gif(samples, tmp_path / "grey.gif")
    colours, greys = [], []
    for name, found in (("colour.gif", colours), ("grey.gif", greys)):
        with Image.open(tmp_path / name) as gif:
            for index in range(gif.n_frames):
                gif.seek(index)
                found.append(gif.convert("RGB").getpixel((0, 0)))
    assert colours == [(255, 0, 0), (0, 0, 255)]
    assert greys == [(200, 200, 200), (30, 30, 30)]


def test_an_rgb_run_writes_colour_grids_and_a_colour_gif(run_cli, image_folder: Path, tmp_path: Path,
                                                         one_thread) -> None:
    from conftest import TINY

    run = tmp_path / "rgb"
    code, _, err = run_cli("train", "--data", image_folder, *TINY, "--channels", "3", "--batch-size", "16",
                           "--steps", "4", "--sample-every", "2", "--out", run)
    assert code == 0, err
    with Image.open(run / "samples" / "step_0000004.png") as grid:
        assert grid.mode == "RGB"
        last_grid = np.asarray(grid)
    with Image.open(run / "progress.gif") as gif:
        assert gif.n_frames == 3
        gif.seek(2)
        frame = np.asarray(gif.convert("RGB")).astype(int)
    assert (frame[..., 0] != frame[..., 2]).mean() > 0.5  # colour, not grey
    assert np.abs(frame - last_grid).mean() < 8  # the grid itself, up to the GIF's 256-colour palette
