"""Projection of real pictures into a generator's latent space: the optimisation, the API, `dcgan project`,
and `dcgan interpolate --from-latent/--to-latent` between projected pictures."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dcgan
from conftest import snapshot, train_tiny_runs
from dcgan import projection as projection_module
from dcgan.checkpoint import load_checkpoint
from dcgan.data import load_data
from dcgan.networks.labelled import ConditionalGenerator
from dcgan.networks.tutorial import TutorialDiscriminator, TutorialGenerator
from dcgan.projection import PerceptualNetwork, distances, on_sphere, project, read_picture

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
STEPS = "25"  # enough for the tiny models, a second or so a projection


def image_of(generator: torch.nn.Module, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 (C, H, W): the generator's image of one latent, as a picture file would hold it."""
    with torch.no_grad():
        return ((generator(z, labels)[0] + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


@pytest.fixture
def random_networks() -> tuple[TutorialGenerator, PerceptualNetwork]:
    torch.manual_seed(0)
    generator = TutorialGenerator(latent_dim=4, channels=1, image_size=8).eval()
    discriminator = TutorialDiscriminator(channels=1, image_size=8).eval().requires_grad_(False)
    return generator, PerceptualNetwork("discriminator", discriminator.features)


@pytest.mark.parametrize("with_features", [False, True])
def test_projecting_a_generated_image_finds_a_latent_far_closer_than_random_ones(random_networks,
                                                                                  with_features: bool) -> None:
    generator, network = random_networks
    network = network if with_features else None
    z0 = on_sphere(torch.randn(1, 4, generator=torch.Generator().manual_seed(1)))
    picture = image_of(generator, z0)
    result = project(generator, picture, classes=None, steps=60, seed=0, network=network, device=CPU)
    with torch.no_grad():
        pixel, perceptual = distances(generator(on_sphere(torch.randn(200, 4))), picture.float()[None] / 127.5 - 1,
                                      network)
    random_distance = float((pixel + perceptual).mean())
    assert result.distance < random_distance / 20
    assert result.distance == pytest.approx(result.pixel_error + result.perceptual_error, rel=1e-5)
    assert (result.perceptual_error > 0) == with_features
    assert result.latent.dtype == np.float32 and result.latent.shape == (4,)
    assert np.linalg.norm(result.latent) == pytest.approx(2.0, rel=1e-5)  # on the sphere of radius sqrt(4)
    assert result.label is None and result.reconstruction.shape == (8, 8) and result.reconstruction.dtype == np.uint8


def test_a_labelled_model_finds_the_class_of_its_own_image() -> None:
    torch.manual_seed(0)
    generator = ConditionalGenerator(TutorialGenerator, latent_dim=4, num_classes=5, channels=1, image_size=8).eval()
    z0 = on_sphere(torch.randn(1, 4, generator=torch.Generator().manual_seed(1)))
    picture = image_of(generator, z0, torch.tensor([3]))
    every_class = project(generator, picture, classes=range(5), steps=60, seed=0, network=None, device=CPU)
    assert every_class.label == 3
    only_one = project(generator, picture, classes=[1], steps=60, seed=0, network=None, device=CPU)
    assert only_one.label == 1 and only_one.distance > 10 * every_class.distance


def test_taking_the_starts_in_parts_changes_nothing(random_networks, monkeypatch: pytest.MonkeyPatch) -> None:
    generator, network = random_networks
    picture = torch.randint(0, 256, (1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    whole = project(generator, picture, classes=None, steps=5, seed=0, network=network, device=CPU, starts=6)
    monkeypatch.setattr(projection_module, "CHUNK_VALUES", 2 * 64)  # two starts a pass
    parts = project(generator, picture, classes=None, steps=5, seed=0, network=network, device=CPU, starts=6)
    np.testing.assert_allclose(parts.latent, whole.latent, atol=1e-5)
    assert parts.distance == pytest.approx(whole.distance, rel=1e-4)


def test_a_picture_is_read_as_the_training_data_reads_it(image_folder: Path) -> None:
    data = load_data(str(image_folder), channels=1, image_size=8)  # RGB PNGs of 28 pixels, to grey at 8
    picture = read_picture(image_folder / "0" / "1.png", channels=1, image_size=8, option="--image")
    assert picture.dtype == torch.uint8 and torch.equal(picture, data.images[0])
    colour = read_picture(image_folder / "0" / "1.png", channels=3, image_size=8, option="--image")
    assert colour.shape == (3, 8, 8) and torch.equal(colour[0], colour[2])


# ---------------------------------------------------------------------------------------------
# Trained checkpoints: the API and the command line
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """Tiny runs: unconditional, class-conditional (with a moving average), k-means clusters, and dcgan in colour."""
    recipes = {"plain": (), "conditional": ("--conditional", "--ema-decay", "0.9"), "clusters": ("--clusters", "3"),
               "dcgan": ("--arch", "dcgan", "--image-size", "32", "--g-width", "8", "--d-width", "8", "--channels",
                         "3")}
    return train_tiny_runs(tmp_path_factory.mktemp("projection"), mnist_subset, recipes)


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> list[Path]:
    """Three test digits as 28x28 greyscale PNGs (the runs make 8x8 or 32x32 pictures)."""
    folder = tmp_path_factory.mktemp("digits")
    paths = [folder / f"digit{index}.png" for index in range(3)]
    for path, image in zip(paths, mnist_subset["test_images"]):
        Image.fromarray(image).save(path)
    return paths


def test_the_api_projects_a_file_or_an_array_alike(runs, digits) -> None:
    g = dcgan.load(runs["plain"])
    from_file = g.project(digits[0], steps=int(STEPS), seed=3)
    from_array = g.project(np.asarray(Image.open(digits[0])), steps=int(STEPS), seed=3)
    assert isinstance(from_file, projection_module.Projection)
    np.testing.assert_array_equal(from_file.latent, from_array.latent)
    assert from_file.distance == from_array.distance and from_file.label is None
    assert from_file.reconstruction.shape == (8, 8) and from_file.reconstruction.dtype == np.uint8
    assert from_file.perceptual_error > 0  # the checkpoint's discriminator measures it
    # the reconstruction is the generator's image of the latent
    regenerated = ((g(from_file.latent[None]) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    np.testing.assert_array_equal(regenerated[0, 0].numpy(), from_file.reconstruction)


def test_the_api_projects_with_the_moving_average_in_the_class_asked_for(runs, digits) -> None:
    g = dcgan.load(runs["conditional"])
    result = g.project(digits[1], label=7, steps=int(STEPS))
    assert result.label == 7
    regenerated = ((g(result.latent[None], labels=[7]) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)
    np.testing.assert_array_equal(regenerated[0, 0].numpy(), result.reconstruction)
    free = g.project(digits[1], steps=int(STEPS))
    assert 0 <= free.label < 10 and free.distance <= result.distance * 1.05


def test_the_dcgan_architecture_in_colour(runs, digits) -> None:
    g = dcgan.load(runs["dcgan"])
    result = g.project(digits[2], steps=10)
    assert result.reconstruction.shape == (32, 32, 3) and result.latent.shape == (4,)
    assert math.isfinite(result.distance)


@pytest.mark.parametrize(("run", "call", "message"), [
    ("plain", lambda g, pic: g.project(pic, steps=0), "steps: must be an integer from 1 to 100,000, got 0"),
    ("plain", lambda g, pic: g.project(pic, steps=2.5), "steps: must be an integer from 1 to 100,000, got 2.5"),
    ("plain", lambda g, pic: g.project(pic, steps=100_001),
     "steps: must be an integer from 1 to 100,000, got 100001"),
    ("plain", lambda g, pic: g.project(pic, seed=-1), "seed: must be an integer from 0 to 2**64 - 1, got -1"),
    ("plain", lambda g, pic: g.project(pic, label=1), "label: {ck} takes no class labels (an unconditional model); "
                                                      "train a class-conditional model with --conditional (or "
                                                      "--preset conditional)"),
    ("clusters", lambda g, pic: g.project(pic, label=1), "label: {ck} takes no class labels (trained on k-means "
                                                         "clusters, not classes); train a class-conditional model "
                                                         "with --conditional (or --preset conditional)"),
    ("conditional", lambda g, pic: g.project(pic, label=10),
     "label: class 10 is out of range; this model has classes 0-9"),
    ("conditional", lambda g, pic: g.project(pic, label="3"), "label: must be one integer class, got '3'"),
    ("plain", lambda g, pic: g.project(np.zeros((8, 8), np.float32)),
     "image: must be a picture file (str or Path) or a uint8 array (H, W) or (H, W, C) with C 1, 3 or 4, got a "
     "float32 array of shape (8, 8)"),
    ("plain", lambda g, pic: g.project(np.zeros((8, 8, 2), np.uint8)),
     "image: must be a picture file (str or Path) or a uint8 array (H, W) or (H, W, C) with C 1, 3 or 4, got a "
     "uint8 array of shape (8, 8, 2)"),
    ("plain", lambda g, pic: g.project(None),
     "image: must be a picture file (str or Path) or a uint8 array (H, W) or (H, W, C) with C 1, 3 or 4, got "
     "NoneType"),
    ("plain", lambda g, pic: g.project(pic.with_name("missing.png")), "image {missing}: no such file or directory"),
    ("plain", lambda g, pic: g.project(pic.parent), "image {folder}: a folder, not a picture file"),
])
def test_every_bad_argument_of_project_raises_one_line_naming_it(runs, digits, run: str, call, message: str) -> None:
    with pytest.raises(dcgan.UserError) as refused:
        call(dcgan.load(runs[run]), digits[0])
    assert str(refused.value) == message.format(ck=runs[run], missing=digits[0].with_name("missing.png"),
                                                folder=digits[0].parent)


def test_project_writes_every_file(run_cli, runs, digits, tmp_path: Path) -> None:
    out = tmp_path / "projected"
    code, stdout, err = run_cli("project", "--checkpoint", runs["plain"], "--image", digits[0], "--out", out,
                                "--steps", STEPS, "--seed", "5")
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["latent.npy", "progress.gif", "projection.json",
                                                     "reconstruction.png", "side_by_side.png"]
    record = json.loads((out / "projection.json").read_text())
    assert record["steps"] == int(STEPS) and record["seed"] == 5 and record["label"] is None
    assert record["checkpoint"] == str(runs["plain"]) and record["image"] == str(digits[0])
    assert record["perceptual_network"] == "discriminator" and record["latent_dim"] == 4
    assert stdout.strip() == (f"wrote the projection to {out}: distance {record['distance']:.4f} (pixels "
                              f"{record['pixel_error']:.4f}, features {record['perceptual_error']:.4f})")
    latent = np.load(out / "latent.npy")
    assert latent.shape == (4,) and latent.dtype == np.float32
    g = dcgan.load(runs["plain"])
    reconstruction = np.asarray(Image.open(out / "reconstruction.png"))
    assert reconstruction.shape == (8, 8)
    np.testing.assert_array_equal(g.project(digits[0], steps=int(STEPS), seed=5).reconstruction, reconstruction)
    # original | reconstruction, 8 pixels enlarged 16 times with the grid's 2-pixel padding
    pair = Image.open(out / "side_by_side.png")
    assert pair.mode == "L" and pair.size == (16 * (2 * 10 + 2), 16 * 12)
    picture = read_picture(digits[0], channels=1, image_size=8, option="--image")[0].numpy()
    halves = np.asarray(pair)[16 * 2::16, 16 * 2::16]  # one pixel of each enlarged cell
    np.testing.assert_array_equal(halves[:8, :8], picture)
    np.testing.assert_array_equal(halves[:8, 10:18], reconstruction)
    with Image.open(out / "progress.gif") as gif:
        assert gif.size == pair.size and gif.n_frames > 1
        shown = 0
        for frame in range(gif.n_frames):  # GIF merges a frame like the one before into it, adding the times
            gif.seek(frame)
            shown += gif.info["duration"]
        assert shown == int(STEPS) * 100 + 1500  # every step here, then the result, longer
        np.testing.assert_array_equal(np.asarray(gif.convert("L")), np.asarray(pair))


def test_project_of_a_labelled_model_writes_its_class(run_cli, runs, digits, tmp_path: Path) -> None:
    for run, extra in (("conditional", ("--label", "4")), ("clusters", ())):
        out = tmp_path / run
        out.mkdir()  # an empty folder is taken
        code, stdout, err = run_cli("project", "--checkpoint", runs[run], "--image", digits[1], "--out", out,
                                    "--steps", STEPS, *extra)
        assert code == 0, err
        label = int((out / "label.txt").read_text())
        assert json.loads((out / "projection.json").read_text())["label"] == label
        assert stdout.strip().endswith(f", class {label}")
        assert label == 4 if extra else 0 <= label < 3


def test_project_in_colour_with_the_dcgan_architecture(run_cli, runs, digits, tmp_path: Path) -> None:
    out = tmp_path / "colour"
    code, _, err = run_cli("project", "--checkpoint", runs["dcgan"], "--image", digits[0], "--out", out,
                           "--steps", "5")
    assert code == 0, err
    assert Image.open(out / "reconstruction.png").mode == "RGB"
    assert Image.open(out / "side_by_side.png").size == (4 * (2 * 34 + 2), 4 * 36)


def test_without_a_discriminator_the_feature_network_measures_or_the_pixels_alone(run_cli, runs, digits,
                                                                                  mnist_subset, tmp_path: Path) -> None:
    (tmp_path / "runs").mkdir()
    digit_run = train_tiny_runs(tmp_path / "runs", mnist_subset, {"digits": ("--image-size", "28")})["digits"]
    for run, name in ((digit_run, "classifier"), (runs["plain"], None)):  # 1x28x28 fits the bundled network
        payload = load_checkpoint(run)
        del payload["discriminator"]
        stripped = tmp_path / f"{run.name}-generator-only.pt"
        torch.save(payload, stripped)
        out = tmp_path / f"{run.name}-projected"
        code, stdout, err = run_cli("project", "--checkpoint", stripped, "--image", digits[0], "--out", out,
                                    "--steps", "3")
        assert code == 0, err
        record = json.loads((out / "projection.json").read_text())
        assert record["perceptual_network"] == name
        assert (record["perceptual_error"] > 0) == (name is not None)


def refused(result: tuple[int, str, str]) -> str:
    """The one error line of a refused command (exit code 2), without its `dcgan: error: ` prefix."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and lines[0].startswith("dcgan: error: "), err
    return lines[0].removeprefix("dcgan: error: ")


@pytest.mark.parametrize(("run", "args", "message"), [
    ("plain", ("--image", "{missing}"), "--image {missing}: no such file or directory"),
    ("plain", ("--image", "{text}"), "cannot read image {text}: cannot identify image file"),
    ("plain", ("--image", "{tmp}"), "--image {tmp}: a folder, not a picture file"),
    ("plain", ("--image", "/dev/zero"), "--image /dev/zero: a character device, not a picture file"),
    ("plain", ("--label", "3"), "--label: {ck} takes no class labels (an unconditional model)"),
    ("clusters", ("--label", "1"), "--label: {ck} takes no class labels (trained on k-means clusters, not classes)"),
    ("conditional", ("--label", "10"), "--label '10': class 10 is out of range; this model has classes 0-9"),
    ("conditional", ("--label", "1,2"), "--label 1,2: name one class"),
    ("plain", ("--steps", "0"), "argument --steps: must be an integer from 1 to 100,000, got '0'"),
    ("plain", ("--steps", "100001"), "argument --steps: must be an integer from 1 to 100,000, got '100001'"),
    ("plain", ("--seed", str(2**64)), "--seed: must be an integer from 0 to 2**64 - 1, got 18446744073709551616"),
    ("plain", ("--out", "{full}"), "--out {full}: already exists and is not an empty folder; choose another path"),
    ("plain", ("--out", "{text}"), "--out {text}: already exists and is not an empty folder; choose another path"),
    ("plain", ("--out", "{missing}/deeper"), "--out {missing}/deeper: folder {missing} does not exist"),
])
def test_project_refuses_bad_input_in_one_line_and_writes_nothing(run_cli, runs, digits, tmp_path: Path, run: str,
                                                                  args: tuple[str, ...], message: str) -> None:
    (tmp_path / "notes.txt").write_text("not a picture\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("kept\n")
    names = {"missing": tmp_path / "missing", "text": tmp_path / "notes.txt", "tmp": tmp_path,
             "full": tmp_path / "full", "ck": runs[run]}
    before = snapshot(tmp_path)
    command = ["project", "--checkpoint", runs[run], "--image", digits[0], "--out", tmp_path / "out",
               "--steps", "2"]
    line = refused(run_cli(*command, *[arg.format(**names) for arg in args]))
    assert line.startswith(message.format(**names))
    assert snapshot(tmp_path) == before


# ---------------------------------------------------------------------------------------------
# Walks between projected pictures
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("run", ["plain", "clusters"])
def test_interpolate_walks_from_one_projected_picture_to_another_and_back(run_cli, runs, digits, tmp_path: Path,
                                                                         run: str) -> None:
    ends = []
    for index in (0, 1):
        out = tmp_path / f"p{index}"
        assert run_cli("project", "--checkpoint", runs[run], "--image", digits[index], "--out", out,
                       "--steps", STEPS)[0] == 0
        ends.append(out)
    walk = tmp_path / "walk.png"
    code, stdout, err = run_cli("interpolate", "--checkpoint", runs[run], "--from-latent", ends[0] / "latent.npy",
                                "--to-latent", ends[1] / "latent.npy", "--frames", "3", "--out", walk)
    assert code == 0, err
    assert stdout.strip() == (f"wrote 6 frames of the walk from {ends[0] / 'latent.npy'} to "
                              f"{ends[1] / 'latent.npy'} and back to {walk}")
    grid = np.asarray(Image.open(walk))
    assert grid.shape == (8 + 4, 6 * 10 + 2)  # one walk of 6 frames
    cells = [grid[2:10, 2 + 10 * frame:10 + 10 * frame] for frame in range(6)]
    for frame, end in ((0, ends[0]), (3, ends[1])):  # it passes through both reconstructions
        reconstruction = np.asarray(Image.open(end / "reconstruction.png")).astype(int)
        assert np.abs(cells[frame] - reconstruction).max() <= 1
    assert not np.array_equal(cells[1], cells[0])
    gif = tmp_path / "walk.gif"
    assert run_cli("interpolate", "--checkpoint", runs[run], "--from-latent", ends[0] / "latent.npy",
                   "--to-latent", ends[1] / "latent.npy", "--frames", "2", "--out", gif)[0] == 0
    with Image.open(gif) as frames:
        assert frames.n_frames == 4


def write_latent(path: Path, array: np.ndarray, label: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    if label is not None:
        (path.parent / "label.txt").write_text(label)
    return path


def write_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(("run", "make", "message"), [
    ("plain", lambda d: write_latent(d / "a" / "z.npy", np.zeros((1, 4), np.float32)),
     "--from-latent {a}: must be one latent of shape (4,), got shape (1, 4)"),
    ("plain", lambda d: write_latent(d / "a" / "z.npy", np.zeros(4, np.int64)),
     "--from-latent {a}: must hold floating-point numbers (float32), got int64"),
    ("plain", lambda d: write_latent(d / "a" / "z.npy", np.array([0, np.nan, 0, 0], np.float32)),
     "--from-latent {a}: holds NaN or inf"),
    ("plain", lambda d: write_latent(d / "a" / "z.npy", np.zeros(16, np.float32)),
     "--from-latent {a}: a latent of 16 numbers, but the checkpoint's generator takes 4"),
    ("plain", lambda d: write_text(d / "z.npy", "0 0 0 0\n"),
     "--from-latent {a}: not a readable .npy array"),
    ("plain", lambda d: d / "nowhere.npy", "--from-latent {a}: no such file or directory"),
    ("plain", lambda d: d, "--from-latent {a}: a folder, not a .npy file"),
    ("conditional", lambda d: write_latent(d / "a" / "z.npy", np.zeros(4, np.float32)),
     "--from-latent {a}: the checkpoint's generator needs the latent's class, and there is no label.txt beside it"),
    ("conditional", lambda d: write_latent(d / "a" / "z.npy", np.zeros(4, np.float32), "10\n"),
     "{label}: must hold one class from 0 to 9, got '10\\n'"),
])
def test_a_bad_latent_file_is_one_line_naming_it(run_cli, runs, tmp_path: Path, run: str, make, message: str) -> None:
    good = write_latent(tmp_path / "b" / "z.npy", np.ones(4, np.float32), "2\n")
    bad = make(tmp_path)
    before = snapshot(tmp_path)
    line = refused(run_cli("interpolate", "--checkpoint", runs[run], "--from-latent", bad, "--to-latent", good,
                           "--out", tmp_path / "walk.gif"))
    assert line.startswith(message.format(a=bad, label=bad.parent / "label.txt")), line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("args", "message"), [
    (("--from-latent", "{b}"), "--from-latent: a walk between latents needs both --from-latent and --to-latent"),
    (("--to-latent", "{b}"), "--to-latent: a walk between latents needs both --from-latent and --to-latent"),
    (("--from-latent", "{b}", "--to-latent", "{b}", "--labels", "0-3"),
     "--labels: a walk between latents takes each one's class from the label.txt beside it"),
    (("--from-latent", "{b}", "--to-latent", "{b}", "--truncation", "0.5"),
     "--truncation: a walk between latents draws them as they are; leave out --truncation"),
])
def test_options_that_do_not_go_with_a_walk_between_latents_are_refused(run_cli, runs, tmp_path: Path,
                                                                       args: tuple[str, ...], message: str) -> None:
    good = write_latent(tmp_path / "b" / "z.npy", np.ones(4, np.float32), "2\n")
    line = refused(run_cli("interpolate", "--checkpoint", runs["conditional"], "--out", tmp_path / "walk.gif",
                           *[arg.format(b=good) for arg in args]))
    assert line == message
    assert not (tmp_path / "walk.gif").exists()
