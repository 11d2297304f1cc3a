"""The dcgan architecture (Radford et al.), every recipe option with both architectures, colour data,
channel inference and the memory-mapped image-folder cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from conftest import TINY
from dcgan import data as data_module
from dcgan.config import DCGAN_SIZES, TrainConfig, resolve_config
from dcgan.data import load_data
from dcgan.errors import UserError
from dcgan.networks import build_discriminator
from dcgan.networks.dcgan import DCGANDiscriminator, DCGANGenerator, MinibatchStd
from dcgan.training.step import Logits, TrainingStep, build_gan

CPU = torch.device("cpu")
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("size", DCGAN_SIZES)
@pytest.mark.parametrize("channels", [1, 3])
def test_dcgan_shapes_at_every_allowed_size(size: int, channels: int) -> None:
    generator = DCGANGenerator(latent_dim=10, channels=channels, image_size=size, width=4)
    discriminator = DCGANDiscriminator(channels=channels, image_size=size, width=4)
    images = generator(torch.randn(2, 10))
    assert images.shape == (2, channels, size, size) and images.abs().max() <= 1
    assert discriminator.logits(images).shape == (2, 1)
    assert discriminator.features(images).shape == (2, discriminator.feature_dim)
    upsamplings = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert len(upsamplings) == int(math.log2(size)) - 1  # 1x1 -> 4x4, then doubling to the size


def test_dcgan_has_the_papers_layers_and_initialisation() -> None:
    torch.manual_seed(0)
    generator, discriminator = DCGANGenerator(), DCGANDiscriminator()  # 64x64, width 64, latent 100, RGB
    transposed = [m for m in generator.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in transposed] == [
        (100, 512, (4, 4), (1, 1)), (512, 256, (4, 4), (2, 2)), (256, 128, (4, 4), (2, 2)),
        (128, 64, (4, 4), (2, 2)), (64, 3, (4, 4), (2, 2))]
    assert sum(isinstance(m, nn.BatchNorm2d) for m in generator.modules()) == 4
    assert sum(isinstance(m, nn.ReLU) for m in generator.modules()) == 4
    assert isinstance(list(generator.modules())[-1], nn.Tanh)
    convs = [m for m in discriminator.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.in_channels, m.out_channels, m.kernel_size, m.stride) for m in convs] == [
        (3, 64, (4, 4), (2, 2)), (64, 128, (4, 4), (2, 2)), (128, 256, (4, 4), (2, 2)),
        (256, 512, (4, 4), (2, 2)), (512, 1, (4, 4), (1, 1))]
    layers = list(discriminator.features)
    assert isinstance(layers[1], nn.LeakyReLU) and layers[1].negative_slope == 0.2
    assert not isinstance(layers[1], nn.BatchNorm2d)  # none after the first convolution
    assert sum(isinstance(m, nn.BatchNorm2d) for m in discriminator.modules()) == 3
    weights = torch.cat([m.weight.flatten() for m in (*transposed, *convs)])
    assert abs(weights.mean().item()) < 1e-3 and weights.std().item() == pytest.approx(0.02, rel=0.02)
    scales = torch.cat([m.weight for m in generator.modules() if isinstance(m, nn.BatchNorm2d)])
    assert scales.mean().item() == pytest.approx(1.0, abs=0.01) and scales.std().item() == pytest.approx(0.02, rel=0.2)


def test_dcgan_preset_is_the_papers_recipe() -> None:
    config = resolve_config({}, {"preset": "dcgan"})
    assert (config.arch, config.image_size, config.latent_dim, config.batch_size) == ("dcgan", 64, 100, 128)
    assert (config.lr_d, config.lr_g, config.beta1, config.beta2) == (2e-4, 2e-4, 0.5, 0.999)
    assert (config.g_width, config.d_width, config.loss, config.ema_decay) == (64, 64, "bce", 0.0)
    assert config.reuse_fake  # the reference example's G step trains on the D step's generated batch
    assert not resolve_config({}, {"preset": "dcgan", "mode_seeking": 1.0}).reuse_fake
    assert resolve_config({}, {"arch": "dcgan"}).image_size == 64  # its own size when none is named


@pytest.mark.parametrize("size", [28, 48, 512])
def test_dcgan_refuses_other_sizes_naming_the_allowed_ones(size: int) -> None:
    with pytest.raises(UserError, match=rf"--image-size {size}: the dcgan architecture makes images of "
                                        r"32, 64, 128, 256 pixels"):
        TrainConfig(arch="dcgan", image_size=size)
    with pytest.raises(UserError, match="--g-width and --d-width set the dcgan architecture's widths"):
        TrainConfig(g_width=32)


def test_a_discriminator_with_batch_norm_sees_real_and_generated_images_in_separate_passes() -> None:
    torch.manual_seed(0)
    discriminator = DCGANDiscriminator(channels=1, image_size=32, width=4)
    real, fake = torch.randn(4, 1, 32, 32), torch.randn(4, 1, 32, 32)
    logits = Logits(discriminator)
    assert logits.separate
    expected = torch.cat([discriminator.logits(real), discriminator.logits(fake)])  # each with its own statistics
    torch.testing.assert_close(logits(torch.cat([real, fake])), expected)
    assert not torch.allclose(discriminator.logits(torch.cat([real, fake])), expected)  # a mixed batch differs
    assert not Logits(build_discriminator(TrainConfig(channels=1))).separate  # the tutorial's D: one pass


def test_minibatch_std_adds_the_spread_of_each_group_of_four_as_a_channel() -> None:
    maps = torch.zeros(8, 2, 3, 3)
    maps[0] = 1.0  # image 0's group is images 0, 2, 4, 6 (image i in group i mod 2): one of four at 1
    spread = MinibatchStd()(maps)
    assert spread.shape == (8, 3, 3, 3)
    torch.testing.assert_close(spread[:, :2], maps)  # the maps pass unchanged
    expected = torch.tensor([math.sqrt(3 / 16 + 1e-8), math.sqrt(1e-8)]).repeat(4)  # var of (1, 0, 0, 0): 3/16
    torch.testing.assert_close(spread[:, 2], expected.view(8, 1, 1).expand(8, 3, 3))
    assert MinibatchStd()(torch.ones(3, 2, 3, 3))[:, 2].max() < 1e-3  # 3 images: groups of one, no spread


def test_a_discriminator_with_minibatch_std_judges_a_batch_of_alike_images_differently() -> None:
    torch.manual_seed(0)
    discriminator = DCGANDiscriminator(channels=3, image_size=32, width=4, minibatch_std=True).eval()
    assert discriminator.feature_dim == (4 * 4 + 1) * 16 and isinstance(discriminator.features[-2], MinibatchStd)
    image = torch.randn(1, 3, 32, 32)
    varied = torch.cat([image, torch.randn(3, 3, 32, 32)])
    alike = image.repeat(4, 1, 1, 1)
    assert not torch.allclose(discriminator.logits(varied)[0], discriminator.logits(alike)[0])  # the same image
    plain = DCGANDiscriminator(channels=3, image_size=32, width=4).eval()
    torch.testing.assert_close(plain.logits(varied)[0], plain.logits(alike)[0])  # without: the image alone counts
    assert Logits(nn.Sequential(MinibatchStd())).separate  # real and generated images never share a group
    with pytest.raises(UserError, match="--minibatch-std is an option of the dcgan architecture"):
        TrainConfig(minibatch_std=True)


RECIPES = {
    "plain": {}, "conditional": {"conditional": True, "num_classes": 10}, "clusters": {"clusters": 3},
    "mode-seeking": {"mode_seeking": 1.0}, "ema": {"ema_decay": 0.9}, "hinge": {"loss": "hinge"},
    "lsgan": {"loss": "lsgan"}, "spectral-norm": {"spectral_norm": True}, "augment": {"augment": True},
    "d-steps": {"d_steps": 2}, "reuse-fake": {"reuse_fake": True}, "r1": {"r1": 1.0},
    "minibatch-std": {"minibatch_std": True, "clusters": 3},
}
ARCHES = {"tutorial": dict(image_size=8, latent_dim=4),
          "dcgan": dict(arch="dcgan", image_size=32, latent_dim=8, g_width=4, d_width=4)}


@pytest.mark.parametrize(("arch", "recipe"), [(arch, recipe) for recipe in RECIPES for arch in ARCHES
                                               if (arch, recipe) != ("tutorial", "minibatch-std")])  # dcgan's only
def test_every_recipe_option_trains_with_both_architectures(arch: str, recipe: str) -> None:
    torch.manual_seed(0)
    config = TrainConfig(channels=3, precision="fp32", **ARCHES[arch], **RECIPES[recipe])
    gan = build_gan(config, CPU)
    step = TrainingStep.from_config(gan, config, CPU)
    real = torch.rand(8, 3, config.image_size, config.image_size) * 2 - 1
    labels = torch.arange(8) % 3
    g_before = [p.clone() for p in gan.generator.parameters()]
    d_before = [p.clone() for p in gan.discriminator.parameters()]
    for _ in range(2):
        losses = step(real, labels)
    assert all(math.isfinite(v.item()) for v in losses)
    assert any(not torch.equal(a, b) for a, b in zip(g_before, gan.generator.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, gan.discriminator.parameters()))
    sampler = gan.sampler().eval()
    drawn = sampler.sample_labels(5, seed=0)
    assert sampler(torch.randn(5, config.latent_dim), drawn).shape == (5, 3, config.image_size, config.image_size)


# ---------------------------------------------------------------------------------------------
# Colour folders, channel inference and the mapped cache
# ---------------------------------------------------------------------------------------------

def colour_folder(root: Path, count: int = 40, size: tuple[int, int] = (40, 30)) -> Path:
    """`count` colour photographs-to-be of a non-square size: red, green and blue rectangles on grey."""
    rng = np.random.default_rng(0)
    for index in range(count):
        folder = root / ("warm" if index % 2 else "cool")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.full((size[1], size[0], 3), 128, np.uint8)
        top, left = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
        pixels[top:top + 10, left:left + 12] = (255, 40, 0) if index % 2 else (0, 60, 255)
        Image.fromarray(pixels).save(folder / f"{index}.{'png' if index % 3 else 'jpg'}")
    return root


def test_channels_follow_the_data_and_an_explicit_value_converts(image_folder: Path, tmp_path: Path) -> None:
    colour = colour_folder(tmp_path / "colour")
    assert data_module.folder_channels(data_module._list_image_folder(colour)[1]) == 3
    assert data_module.folder_channels(data_module._list_image_folder(image_folder)[1]) == 1  # grey RGB PNGs
    assert load_data(str(colour), channels=0, image_size=32).images.shape == (40, 3, 32, 32)
    assert load_data(str(image_folder), channels=0, image_size=28).images.shape == (100, 1, 28, 28)
    assert load_data(str(image_folder), channels=3, image_size=28).images.shape == (100, 3, 28, 28)
    assert load_data("mnist", channels=0).images.shape[1] == 1


def test_other_sizes_are_resized_and_centre_cropped(tmp_path: Path) -> None:
    folder = tmp_path / "wide" / "a"
    folder.mkdir(parents=True)
    pixels = np.zeros((20, 60, 3), np.uint8)
    pixels[:, :20] = (255, 0, 0)  # left third red, middle third green, right third blue
    pixels[:, 20:40] = (0, 255, 0)
    pixels[:, 40:] = (0, 0, 255)
    Image.fromarray(pixels).save(folder / "1.png")
    image = load_data(str(tmp_path / "wide"), channels=3, image_size=8).images[0]
    assert image.shape == (3, 8, 8)
    assert image[1, :, 1:7].min() > 200 and image[0].max() < 60 and image[2].max() < 60  # the green centre only


def test_transparent_pictures_are_laid_on_white(tmp_path: Path) -> None:
    folder = tmp_path / "icons" / "a"
    folder.mkdir(parents=True)
    icon = np.zeros((8, 8, 4), np.uint8)  # transparent black, with an opaque red square in the middle
    icon[2:6, 2:6] = (255, 0, 0, 255)
    Image.fromarray(icon, "RGBA").save(folder / "1.png")
    image = load_data(str(tmp_path / "icons"), channels=0, image_size=8).images[0]
    assert image.shape == (3, 8, 8)
    assert image[:, 0, 0].tolist() == [255, 255, 255] and image[:, 3, 3].tolist() == [255, 0, 0]


def test_training_a_dcgan_on_a_colour_folder_end_to_end(run_cli, tmp_path: Path) -> None:
    colour = colour_folder(tmp_path / "photos")
    run = tmp_path / "run"
    code, out, err = run_cli("train", "--data", colour, "--preset", "dcgan", "--image-size", "32", "--g-width", "8",
                             "--d-width", "8", "--batch-size", "8", "--steps", "4", "--sample-every", "2",
                             "--quiet", "--out", run)
    assert code == 0, err
    assert f"channels: 3 ({colour} is in colour; --channels converts)" in err
    config = (run / "config.toml").read_text()
    assert 'arch = "dcgan"' in config and "channels = 3" in config and "image_size = 32" in config
    with Image.open(run / "progress.gif") as gif:
        assert gif.n_frames == 3 and np.asarray(gif.convert("RGB")).std(axis=2).max() > 0
    code, _, err = run_cli("generate", "--checkpoint", run, "--num", "6", "--format", "npy", "--out",
                           tmp_path / "s.npy")
    assert code == 0, err
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (6, 32, 32, 3) and samples.dtype == np.uint8
    code, out, err = run_cli("train", "--resume", run, "--steps", "6", "--quiet")
    assert code == 0 and out.startswith("completed: step=6 "), err


@pytest.mark.slow
def test_a_feature_network_for_a_64x64_colour_folder(run_cli, tmp_path: Path) -> None:
    colour = colour_folder(tmp_path / "photos", count=120)
    classifier = tmp_path / "features.pt"
    code, out, err = run_cli("classifier", "train", "--data", colour, "--image-size", "64", "--epochs", "2",
                             "--batch-size", "32", "--out", classifier, "--quiet")
    assert code == 0, err
    accuracy = float(out.split("test_accuracy=")[1].split("%")[0])
    assert accuracy > 90  # warm and cool pictures are easy to tell apart
    code, out, err = run_cli("evaluate", "--samples", _npy_of(colour, tmp_path), "--classifier", classifier,
                             "--reference", colour, "--reference-split", "train", "--kid-subsets", "5")
    assert code == 0, err
    assert "FID" in out


def _npy_of(folder: Path, tmp_path: Path) -> Path:
    """The folder's own images as an N x 64 x 64 x 3 sample file (a perfect generator)."""
    images = load_data(str(folder), channels=3, image_size=64).images.permute(0, 2, 3, 1).numpy()
    np.save(tmp_path / "real.npy", images)
    return tmp_path / "real.npy"


def resident_kib() -> dict[str, int]:
    """This process's anonymous and file-backed resident memory (KiB)."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("RssAnon", "RssFile"))}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the resident memory")
def test_the_decoded_folder_is_mapped_not_loaded(tmp_path: Path, isolated_cache: Path) -> None:
    colour = colour_folder(tmp_path / "photos", count=400, size=(64, 64))
    load_data(str(colour), channels=3, image_size=128)  # decode once: 400 x 3 x 128 x 128 = 18.75 MiB
    decoded_kib = 400 * 3 * 128 * 128 // 1024
    in_memory = data_module.ImageData(torch.zeros(8, 3, 128, 128, dtype=torch.uint8), torch.zeros(8), ("x",), "zeros")
    next(data_module.ShuffledBatches(in_memory, batch_size=4, seed=0, device=CPU).epoch(0))  # the code paths, paged in
    before = resident_kib()
    data = load_data(str(colour), channels=3, image_size=128)
    batches = data_module.ShuffledBatches(data, batch_size=4, seed=0, device=CPU)
    first = next(batches.epoch(0))[0]
    after = resident_kib()
    assert data.mapped and first.shape == (4, 3, 128, 128)
    for kind in ("RssAnon", "RssFile"):  # neither a copy in memory nor the whole file paged in
        grown = after[kind] - before[kind]
        assert grown < decoded_kib / 4, f"{kind} grew by {grown} KiB for a {decoded_kib} KiB set"


def test_bad_folders_and_an_unwritable_cache_are_one_line_errors(run_cli, tmp_path: Path, isolated_cache: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty"
    (empty / "a").mkdir(parents=True)
    (empty / "a" / "notes.txt").write_text("no pictures here")
    code, _, err = run_cli("train", "--data", empty, *TINY, "--steps", "1", "--out", tmp_path / "r1")
    assert code == 2 and err.strip().splitlines() == [
        f"dcgan: error: {empty}: no images found (files ending in {', '.join(data_module.IMAGE_EXTENSIONS)}, "
        f"directly in it or in its subfolders)"]
    broken = colour_folder(tmp_path / "broken", count=4)
    (broken / "cool" / "bad.png").write_bytes(b"\x89PNG not really")
    code, _, err = run_cli("train", "--data", broken, *TINY, "--steps", "1", "--out", tmp_path / "r2")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"cannot read image {broken}/cool/bad.png" in err
    colour = colour_folder(tmp_path / "ok", count=4)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setenv("DCGAN_CACHE_DIR", str(blocked))
    code, _, err = run_cli("train", "--data", colour, *TINY, "--steps", "1", "--out", tmp_path / "r3")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "cannot write the decoded-image cache" in err and "DCGAN_CACHE_DIR" in err
    assert not (tmp_path / "r1").exists() and not (tmp_path / "r3").exists()
