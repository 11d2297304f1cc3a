"""Data that cannot train is refused in one line: too few images for a batch, a batch beyond memory,
images PIL would decode wrongly (16-bit, float) or at an enormous size (decompression bombs)."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import TINY
from dcgan import data as data_module
from dcgan.config import resolve_config
from dcgan.data import ShuffledBatches, load_data
from dcgan.errors import UserError
from dcgan.training.memory import require_batch_fits, step_bytes_per_image
from dcgan.training.step import build_gan

CPU = torch.device("cpu")


def grey_folder(root: Path, count: int) -> Path:
    """An image folder of `count` 8x8 greyscale PNGs in one class."""
    (root / "a").mkdir(parents=True)
    for index in range(count):
        Image.fromarray(np.full((8, 8), 40 * index, np.uint8)).save(root / "a" / f"{index}.png")
    return root


# ---------------------------------------------------------------------------------------------
# Too few images for a batch
# ---------------------------------------------------------------------------------------------

def test_training_on_a_single_image_is_refused_before_anything_is_written(run_cli, tmp_path: Path) -> None:
    data = grey_folder(tmp_path / "one", 1)
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", data, *TINY, "--steps", "2", "--out", out)
    assert code == 2
    assert err.strip().splitlines() == [f"dcgan: error: --data {data}: 1 image, too few for one batch (batch norm "
                                        f"needs at least 2 images in a batch); add images"]
    assert not out.exists()


def test_a_single_image_is_refused_before_clustering(run_cli, tmp_path: Path) -> None:
    data = grey_folder(tmp_path / "one", 1)
    code, _, err = run_cli("train", "--data", data, *TINY, "--clusters", "10", "--steps", "2",
                           "--out", tmp_path / "run")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "clusters" not in err


def test_a_folder_smaller_than_the_batch_trains_on_all_of_it_at_every_step(run_cli, tmp_path: Path) -> None:
    data = grey_folder(tmp_path / "three", 3)
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", data, *TINY, "--batch-size", "32", "--steps", "1", "--out", out)
    assert code == 0, err
    batches = ShuffledBatches(load_data(str(data), image_size=8), batch_size=32, seed=0, device=CPU)
    assert [len(images) for images, _ in batches.epoch(0)] == [3]


@pytest.mark.parametrize(("images", "batch_size", "world_size", "per_epoch"), [
    (2, 32, 1, 1),  # one batch of both
    (33, 32, 1, 1),  # a trailing single image is dropped
    (34, 32, 1, 2),
    (4, 32, 2, 1),  # two images for each process
    (5, 4, 2, 1),  # the trailing image would leave one process one image: dropped
])
def test_batches_per_epoch_keep_a_batch_whenever_each_process_gets_two_images(
        images: int, batch_size: int, world_size: int, per_epoch: int) -> None:
    assert data_module.batches_per_epoch(images, batch_size, world_size) == per_epoch


@pytest.mark.parametrize(("images", "world_size", "advice"), [
    (1, 1, "add images"),
    (3, 2, "run at most 1 process, or add images"),
    (5, 4, "run at most 2 processes, or add images"),
    (1, 4, "; add images"),
])
def test_shuffled_batches_refuse_an_epoch_without_a_batch(images: int, world_size: int, advice: str) -> None:
    data = data_module.ImageData(torch.zeros(images, 1, 8, 8, dtype=torch.uint8),
                                 torch.zeros(images, dtype=torch.int64), ("a",), "tiny")
    with pytest.raises(UserError, match=f"--data tiny: {images} image") as info:
        ShuffledBatches(data, batch_size=32, seed=0, device=CPU, world_size=world_size)
    assert str(info.value).endswith(advice)
    if world_size > 1:
        assert f"over {world_size} processes" in str(info.value)


# ---------------------------------------------------------------------------------------------
# A batch beyond memory
# ---------------------------------------------------------------------------------------------

def test_a_batch_beyond_memory_is_refused_naming_how_many_fit(run_cli, idx_dir: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dcgan.limits.available_memory", lambda device=None: 2**20)  # 1 MiB free
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", idx_dir, *TINY, "--batch-size", "500", "--steps", "1", "--out", out)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith("dcgan: error: --batch-size 500: needs about ") and "at most " in line
    assert not out.exists()


def test_the_limit_counts_the_batch_the_data_can_fill(monkeypatch: pytest.MonkeyPatch) -> None:
    config = resolve_config({}, {"preset": "tutorial", "image_size": 8, "latent_dim": 4, "batch_size": 50000})
    gan = build_gan(config, CPU)
    per_image = step_bytes_per_image(config, gan.generator, gan.discriminator, CPU)
    monkeypatch.setattr("dcgan.limits.available_memory", lambda device=None: int(2 * 600.5 * per_image))
    require_batch_fits(config, gan.generator, gan.discriminator, CPU, data_size=512)  # 512 images a batch: fits
    with pytest.raises(UserError, match=r"--batch-size 50000: needs about .* at most 600 fit"):
        require_batch_fits(config, gan.generator, gan.discriminator, CPU, data_size=60000)


@pytest.mark.parametrize(("preset", "flags", "batch_size"), [
    ("tutorial", {}, 512),
    ("conditional", {"num_classes": 10}, 512),
    ("default", {"clusters": 10, "num_classes": 10}, 512),
    ("dcgan", {"channels": 3}, 128),
    ("conditional", {"num_classes": 10, "spectral_norm": True, "augment": True}, 256),
])
def test_normal_batches_need_well_under_two_gib(preset: str, flags: dict, batch_size: int) -> None:
    config = resolve_config({}, {"preset": preset, "batch_size": batch_size, **flags})
    gan = build_gan(config, CPU)
    needed = step_bytes_per_image(config, gan.generator, gan.discriminator, CPU) * batch_size
    # half the free memory of a machine with 2 GiB to spare, so such runs are never refused there
    assert 10 * 2**20 < needed < 2**30


def test_the_estimate_changes_neither_the_networks_nor_the_random_state() -> None:
    config = resolve_config({}, {"preset": "tutorial", "image_size": 8, "latent_dim": 4, "spectral_norm": True})
    gan = build_gan(config, CPU)
    before = {name: tensor.clone() for network in (gan.generator, gan.discriminator)
              for name, tensor in network.state_dict().items()}
    rng = torch.get_rng_state()
    step_bytes_per_image(config, gan.generator, gan.discriminator, CPU)
    after = {name: tensor for network in (gan.generator, gan.discriminator)
             for name, tensor in network.state_dict().items()}
    assert all(torch.equal(before[name], after[name]) for name in before)
    assert torch.equal(torch.get_rng_state(), rng)
    assert gan.generator.training and gan.discriminator.training
    assert not any(module._forward_hooks for module in gan.discriminator.modules())


# ---------------------------------------------------------------------------------------------
# 16-bit and float pixels
# ---------------------------------------------------------------------------------------------

def test_a_16_bit_grey_png_is_scaled_to_8_bits(tmp_path: Path) -> None:
    gradient = np.linspace(0, 65535, 64).round().astype(np.uint16).reshape(8, 8)
    (tmp_path / "a").mkdir()
    path = tmp_path / "a" / "gradient.png"
    Image.fromarray(gradient).save(path)
    with Image.open(path) as image:
        assert image.mode == "I;16"
    expected = np.round(gradient / 257).astype(np.uint8)
    np.testing.assert_array_equal(data_module.decode_picture(path, 1, 8)[0], expected)
    assert data_module.folder_channels([(path, 0)]) == 1
    data = load_data(str(tmp_path), channels=0, image_size=8)
    assert data.images.shape == (1, 1, 8, 8)
    np.testing.assert_array_equal(data.images[0, 0].numpy(), expected)
    assert expected.min() == 0 and expected.max() == 255


def test_32_bit_integer_pixels_are_read_as_16_bit_samples(tmp_path: Path) -> None:
    path = tmp_path / "wide.tif"
    Image.fromarray(np.array([[0, 257 * 100], [65535, 70000]], dtype=np.int32)).save(path)
    with Image.open(path) as image:
        assert image.mode == "I"
    assert data_module.decode_picture(path, 1, 2)[0].tolist() == [[0, 100], [255, 255]]


def test_float_pixels_are_refused_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "a" / "float.tif"
    path.parent.mkdir()
    Image.fromarray(np.full((8, 8), 0.5, np.float32)).save(path)
    for read in (lambda: data_module.decode_picture(path, 1, 8), lambda: data_module.folder_channels([(path, 0)])):
        with pytest.raises(UserError, match=f"cannot read image {path}: .*mode F"):
            read()


# ---------------------------------------------------------------------------------------------
# Decompression bombs
# ---------------------------------------------------------------------------------------------

def png_claiming(path: Path, width: int, height: int) -> Path:
    """A 1x1 PNG whose header (IHDR, with its CRC) says it is `width` x `height`."""
    Image.new("L", (1, 1)).save(path)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"IHDR")
    raw[start + 4:start + 12] = struct.pack(">II", width, height)
    raw[start + 17:start + 21] = struct.pack(">I", zlib.crc32(bytes(raw[start:start + 17])))
    path.write_bytes(bytes(raw))
    return path


def test_a_header_claiming_an_enormous_image_is_refused_naming_the_file_and_limit(tmp_path: Path) -> None:
    path = png_claiming(tmp_path / "bomb.png", 30000, 30000)
    filters = list(warnings.filters)
    for read in (lambda: data_module.decode_picture(path, 1, 8), lambda: data_module.folder_channels([(path, 0)])):
        with pytest.raises(UserError, match=f"cannot read image {path}: .*{Image.MAX_IMAGE_PIXELS:,} pixels"):
            read()
    assert warnings.filters == filters


@pytest.mark.parametrize("side", [11, 15])  # 121 pixels: PIL would only warn; 225: PIL raises (over 2 x 100)
def test_an_image_over_the_pixel_limit_is_refused_where_pil_only_warns(tmp_path: Path, side: int,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = tmp_path / "big.png"
    Image.new("L", (side, side)).save(path)
    with pytest.raises(UserError, match="more than 100 pixels"):
        data_module.decode_picture(path, 1, 8)
    Image.new("L", (10, 10)).save(path)  # at the limit: read
    assert data_module.decode_picture(path, 1, 8).shape == (1, 8, 8)


def test_training_on_a_folder_with_a_bomb_ends_in_one_line(run_cli, tmp_path: Path) -> None:
    data = grey_folder(tmp_path / "folder", 3)
    bomb = png_claiming(data / "a" / "z.png", 30000, 30000)
    out = tmp_path / "run"
    code, _, err = run_cli("train", "--data", data, *TINY, "--channels", "1", "--steps", "1", "--out", out)
    assert code == 2
    [line] = err.strip().splitlines()
    assert line.startswith(f"dcgan: error: cannot read image {bomb}: ")
    assert not out.exists()
