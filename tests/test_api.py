"""The Python API: `dcgan.load(path)` and what the loaded generator gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import dcgan
from conftest import train_tiny_runs

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mnist_subset: dict) -> dict[str, Path]:
    """A tiny unconditional run, a conditional one (with EMA) and a colour one."""
    recipes = {"plain": (), "conditional": ("--conditional", "--ema-decay", "0.9"), "colour": ("--channels", "3")}
    return train_tiny_runs(tmp_path_factory.mktemp("api"), mnist_subset, recipes)


def test_load_a_run_and_sample_uint8_images(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["plain"])
    assert (g.latent_dim, g.num_classes, g.image_size, g.channels) == (4, None, 8, 1)
    images = g.sample(5, seed=3)
    assert images.shape == (5, 8, 8) and images.dtype == np.uint8
    assert np.array_equal(images, g.sample(5, seed=3)) and not np.array_equal(images, g.sample(5, seed=4))
    same_file = dcgan.load(runs["plain"] / "checkpoints" / "last.pt", device="cpu")
    assert np.array_equal(same_file.sample(5, seed=3), images)


def test_calling_the_generator_gives_floats_in_range(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["colour"])
    images = g(torch.randn(3, g.latent_dim))
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.float32 and images.abs().max() <= 1
    assert not images.requires_grad
    assert g.sample(2).shape == (2, 8, 8, 3)
    # sample() is the same generator, scaled to bytes: 0 for -1, 255 for 1
    z = torch.randn(2, g.latent_dim, generator=torch.Generator().manual_seed(0))
    expected = ((g(z) + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(g.sample(2, seed=0), expected)


def test_a_conditional_model_draws_the_classes_asked_for(runs: dict[str, Path]) -> None:
    g = dcgan.load(runs["conditional"])
    assert g.num_classes == 10
    sevens = g.sample(4, labels=7)
    assert np.array_equal(sevens, g.sample(4, labels=[7, 7, 7, 7]))
    assert not np.array_equal(sevens, g.sample(4, labels=[1, 2, 3, 4]))
    assert np.array_equal(g.sample(10), g.sample(10, labels=np.arange(10)))  # every class in turn by default
    assert g(torch.zeros(2, g.latent_dim), labels=[3, 3]).shape == (2, 1, 8, 8)


@pytest.mark.parametrize(("run", "call", "message"), [
    ("conditional", lambda g: g.sample(3, labels=10), "labels must be classes 0-9 of this model"),
    ("conditional", lambda g: g.sample(3, labels=[1, 2]), "labels must be one class or 3 integer classes"),
    ("conditional", lambda g: g.sample(2, labels=[0.5, 1.0]), "labels must be one class or 2 integer classes"),
    ("plain", lambda g: g.sample(3, labels=1), "labels need a conditional model; this one is an unconditional"),
    ("plain", lambda g: g(torch.zeros(2, 5)), r"z must have shape \(N, 4\), got \(2, 5\)"),
    ("plain", lambda g: g.sample(0), "num must be a positive number of images"),
])
def test_bad_labels_and_shapes_raise_one_clear_error(runs: dict[str, Path], run: str, call, message: str) -> None:
    with pytest.raises(dcgan.UserError, match=message):
        call(dcgan.load(runs[run]))


def test_a_bad_path_raises_the_message_the_command_line_prints(tmp_path: Path) -> None:
    with pytest.raises(dcgan.UserError, match=f"checkpoint not found: {tmp_path / 'nothing'}"):
        dcgan.load(tmp_path / "nothing")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(dcgan.UserError, match="is not a readable checkpoint"):
        dcgan.load(tmp_path / "junk.pt")
